"""Every ``smile2pay ...`` command the README and docs show names a command and options the CLI has.

Docs go stale when an option is renamed; this reads each invocation in a shell code block or an inline code span
and checks it against the real parser (``smile2pay.cli.main.build_parser``), subcommands of subcommands
included (``smile2pay bench pairs``). It does not run them: the runnable examples have their own tests."""
import argparse
import re
import shlex
from pathlib import Path

import pytest

from smile2pay.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _subcommands(p: argparse.ArgumentParser):
    return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)


def _resolve(parser, toks):
    """(the parser of the deepest subcommand named, the tokens after it, the subcommand path); parser None when a
    name is not a subcommand."""
    p, path = parser, []
    while toks and not toks[0].startswith("-"):
        ch = _subcommands(p)
        if ch is None:
            break
        if toks[0] not in ch:
            return None, toks, path
        p, path, toks = ch[toks[0]], path + [toks[0]], toks[1:]
    return p, toks, path


def invocations(text: str) -> list[str]:
    """The command lines of ``text`` that run ``smile2pay``: shell code blocks (continuations joined) and inline
    code spans outside them; comments and placeholders (``<name>``) left out."""
    lines = []
    for block in re.findall(r"```(?:bash|sh|console|shell)\n(.*?)```", text, re.S):
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()
    lines += re.findall(r"`([^`\n]*smile2pay [^`\n]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("#"):
            continue
        line = line.split(" #")[0]
        for m in re.finditer(r"(?:^|[;&|(]\s*|\s)smile2pay\s+([a-z][a-z0-9-]*[^;&|>]*)", line):
            if "<" not in m.group(1).split("--")[0]:
                out.append(" ".join(m.group(1).split()))
    return out


def problems(parser, cmd: str) -> list[str]:
    try:
        toks = shlex.split(cmd)
    except ValueError:
        toks = cmd.split()
    if not toks or not re.fullmatch(r"[a-z][a-z0-9-]*", toks[0]):
        return []                        # "the smile2pay wheel)": prose, not a command
    p, rest, path = _resolve(parser, toks)
    if p is None:
        return [f"unknown command: smile2pay {' '.join(path + rest[:1])}"]
    known = {o for a in p._actions for o in a.option_strings}
    return [f"smile2pay {' '.join(path)}: unknown option {t.split('=')[0]}" for t in rest
            if t.startswith("--") and len(t) > 2 and t.split("=")[0] not in known]


def test_the_checker_catches_what_it_is_for():
    parser = build_parser()
    assert problems(parser, "verify alice a.jpg b.jpg --json") == []
    assert problems(parser, "verify alice a.jpg --jsn") == ["smile2pay verify: unknown option --jsn"]
    assert problems(parser, "calibrate-padd --bona-fide x") == ["unknown command: smile2pay calibrate-padd"]
    assert problems(parser, "bench pairs --nope 1") == ["smile2pay bench pairs: unknown option --nope"]
    assert invocations("run `smile2pay verify u a.jpg --json` then\n```bash\n# smile2pay nope\nsmile2pay enroll u \\\n"
                       "  a.jpg --json  # comment\n```\n") == ["enroll u a.jpg --json", "verify u a.jpg --json"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_commands_exist(doc):
    parser = build_parser()
    bad = [f"{c!r}: {p}" for c in invocations(doc.read_text()) for p in problems(parser, c)]
    assert not bad, "\n".join(bad)


def test_the_docs_show_many_commands():
    """The check above reads something: the README and docs show dozens of invocations."""
    assert sum(len(invocations(d.read_text())) for d in DOCS) > 60


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_documented_python_names_exist():
    """The Python examples (runnable or sketches) import names that exist and call methods ``Smile2Pay`` has:
    ``from X import Y`` resolves, and every ``s2p.<name>`` is an attribute of the class."""
    import ast
    import importlib

    from smile2pay import Smile2Pay

    bad, seen = [], 0
    for doc in DOCS:
        for block in python_blocks(doc.read_text()):
            tree = ast.parse(block)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "smile2pay":
                    mod = importlib.import_module(node.module)
                    bad += [f"{doc.name}: from {node.module} import {a.name}" for a in node.names
                            if not hasattr(mod, a.name)]
                    seen += 1
                elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id == "s2p"):
                    seen += 1
                    if not hasattr(Smile2Pay, node.attr):
                        bad.append(f"{doc.name}: s2p.{node.attr}")
    assert seen > 20 and not bad, bad
