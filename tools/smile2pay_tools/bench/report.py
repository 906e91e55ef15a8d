"""Reports of the benches: one self-contained HTML file (plots inlined as base64 PNG) and a Markdown
twin that links the PNG files. A report is a title, key/value facts, tables and plots."""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4f}"
    return str(v)


def write_reports(out_dir: str | Path, name: str, title: str, facts: dict, tables: list[tuple[str, list[str], list[list]]],
                  plots: list[str], notes: list[str] = ()) -> dict:
    """Write ``<out_dir>/<name>.html`` and ``<name>.md``. ``tables``: (caption, header, rows)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Markdown
    md = [f"# {title}", ""]
    md += [f"- **{k}**: {_fmt(v)}" for k, v in facts.items()]
    md.append("")
    for cap, head, rows in tables:
        md += [f"## {cap}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(_fmt(c).replace("|", "\\|") for c in r) + " |" for r in rows]
        md.append("")
    for n in notes:
        md.append(f"> {n}")
        md.append("")
    for p in plots:
        rel = os.path.relpath(p, out)
        md.append(f"![{Path(p).stem}]({rel})")
    (out / f"{name}.md").write_text("\n".join(md) + "\n")
    # HTML, self-contained
    h = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
         "th{background:#eee}img{max-width:100%;margin:0.5em 0}.note{color:#555}</style></head><body>",
         f"<h1>{html.escape(title)}</h1><ul>"]
    h += [f"<li><b>{html.escape(str(k))}</b>: {html.escape(_fmt(v))}</li>" for k, v in facts.items()]
    h.append("</ul>")
    for cap, head, rows in tables:
        h.append(f"<h2>{html.escape(cap)}</h2><table><tr>" + "".join(f"<th>{html.escape(x)}</th>" for x in head)
                 + "</tr>")
        h += ["<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows]
        h.append("</table>")
    h += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for p in plots:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        h.append(f"<div><img alt='{html.escape(Path(p).stem)}' src='data:image/png;base64,{data}'></div>")
    h.append("</body></html>")
    (out / f"{name}.html").write_text("\n".join(h))
    return {"html": str(out / f"{name}.html"), "markdown": str(out / f"{name}.md")}
