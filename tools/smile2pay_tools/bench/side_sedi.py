"""``smile2pay bench side-sedi``: SIDE (same identity, different expression) and SEDI (same expression,
different identity) cosine distributions for the identity and the AU embedding.

An identity embedding should score SIDE pairs high and SEDI pairs low (expression-invariant: AUC of
SIDE over SEDI near 1); an AU (expression) embedding the reverse (identity-invariant: AUC near 0,
i.e. ``auc_sedi_over_side`` near 1). Expression = the emotion label (neutral frames 'neutral') or,
with ``--expression au``, the AU combination. Images without a face join no pair (counted).

``--oof DIR`` adds the AU embedding from the out-of-fold files of ``smile2pay train-au --cv``
(``cv/fold*/oof.npz`` + ``cache/gt.npz``): each image embedded by a model that never saw its subject,
which the shipped AU model (trained on every CK+ subject) cannot give on CK+.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from . import common as C
from .stats import separability, side_sedi_scores, summary as stat_summary

log = logging.getLogger("smile2pay_tools.bench.side_sedi")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", action="append", metavar="SPEC",
                   help="ckplus (ckplus48 + ckplus_neutral_peak48, default) | ckplus48 | ckplus_neutral_peak48 | lfw "
                        "| CSV path,subject,expression,au_codes[,group] (repeatable)")
    p.add_argument("--expression", choices=["emotion", "au"], default="emotion",
                   help="expression label: emotion (default) or the AU combination")
    p.add_argument("--embedding", choices=["identity", "au", "both"], default="both")
    p.add_argument("--oof", metavar="DIR", help="train-au output folder: also the out-of-fold AU embedding")
    p.add_argument("--out", default="bench_out/side_sedi", help="folder for JSON and reports")
    p.add_argument("--plots-dir", help="folder for the PNG plots (default: --out)")
    p.add_argument("--name", help="file name stem (default side_sedi_<dataset>_<expression>)")
    p.add_argument("--threads", type=int)
    p.add_argument("--cache", help="cache folder (default SMILE2PAY_CACHE or ./results/cache)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def analyse(emb: np.ndarray, subjects, expressions) -> tuple[dict, dict]:
    """(JSON block, raw cells) of one embedding."""
    cells = side_sedi_scores(emb, subjects, expressions)
    auc = separability(cells["side"], cells["sedi"])
    block = {k: stat_summary(v) for k, v in cells.items()}
    block["auc_side_over_sedi"] = auc
    block["auc_sedi_over_side"] = None if auc is None else 1.0 - auc
    block["mean_side_minus_sedi"] = (float(cells["side"].mean() - cells["sedi"].mean())
                                     if cells["side"].size and cells["sedi"].size else None)
    return block, cells


def _oof(folder: str, expression: str) -> tuple[np.ndarray, list[str], list[str]]:
    from smile2pay_tools.datasets import parse_au_codes
    from smile2pay_tools.datasets_id import au_combination

    from .common import load_oof

    gt, emb = load_oof(folder, "embs")
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    if expression == "au":
        expr = [au_combination(frozenset() if neu else parse_au_codes(str(a)))
                for a, neu in zip(gt["aus"], gt["neutral"])]
    else:
        expr = ["neutral" if neu else str(lab) for lab, neu in zip(gt["label"], gt["neutral"])]
    return emb, [str(s) for s in gt["subject"]], expr


def run(args) -> dict:
    from smile2pay.config import data_dir
    from smile2pay_tools.datasets_id import load_dataset

    t0 = time.perf_counter()
    specs = args.dataset or ["ckplus"]
    samples = [s for spec in specs for s in load_dataset(spec, data_dir(), expression=args.expression)]
    paths = [s.path for s in samples]
    subjects = [s.subject for s in samples]
    expressions = [s.expression for s in samples]
    pipe = C.make_pipeline(getattr(args, "models", None), threads=args.threads)
    kinds = ["identity", "au"] if args.embedding == "both" else [args.embedding]
    name = args.name or f"side_sedi_{'_'.join(Path(s).stem for s in specs)}_{args.expression}"
    res: dict = {"benchmark": "bench side-sedi", "date": time.strftime("%Y-%m-%d"), "datasets": specs,
                 "expression_label": args.expression, "images": len(samples),
                 "subjects": len(set(subjects)), "expressions": dict(sorted(
                     {e: expressions.count(e) for e in set(expressions)}.items(), key=lambda x: -x[1])[:30]),
                 "settings": C.settings_summary(pipe), "machine": C.machine(), "embeddings": {}}
    panels = {}
    for kind in kinds:
        e = C.embed_paths(pipe, paths, data_dir(), au=(kind == "au"), use_cache=not args.no_cache,
                          cache_dir=Path(args.cache) if args.cache else None, show_progress=not args.no_progress,
                          desc="+".join(specs))
        emb = e["emb"]
        if kind == "au":
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        block, cells = analyse(emb, subjects, expressions)
        block["images_no_face"] = int((~e["found"]).sum())
        block["note"] = ("identity embedding (ArcFace): want SIDE high, SEDI low" if kind == "identity" else
                         "AU embedding of the shipped AU model, which was trained on every CK+ subject "
                         "(in-sample on CK+): want SEDI high, SIDE low")
        res["embeddings"][kind] = block
        panels[f"{'identity (' + pipe.recognizer_spec.name + ')' if kind == 'identity' else 'AU embedding, shipped model'}"] = \
            {**cells, "auc": block["auc_side_over_sedi"]}
    if args.oof:
        emb, subj, expr = _oof(args.oof, args.expression)
        block, cells = analyse(emb, subj, expr)
        block["images"] = int((~np.isnan(emb).any(axis=1)).sum())
        block["note"] = ("AU embedding out of fold: each image embedded by the cross-validation model that never "
                         "saw its subject (subject-held-out)")
        res["embeddings"]["au_out_of_fold"] = block
        panels["AU embedding, out of fold"] = {**cells, "auc": block["auc_side_over_sedi"]}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    plots = []
    if not args.no_plots:
        from .plots import side_sedi_plot

        pdir = Path(args.plots_dir or out)
        pdir.mkdir(parents=True, exist_ok=True)
        plots = [side_sedi_plot(pdir / f"{name}.png", panels,
                                f"SIDE / SEDI on {'+'.join(specs)} (expression = {args.expression})")]
        res["plots"] = plots
    from .report import write_reports

    head = ["embedding", "SIDE n", "SIDE mean", "SEDI n", "SEDI mean", "SISE mean", "DIDE mean",
            "AUC SIDE>SEDI"]
    rows = [[k, b["side"]["n"], b["side"].get("mean"), b["sedi"]["n"], b["sedi"].get("mean"),
             b["sise"].get("mean"), b["dide"].get("mean"), b["auc_side_over_sedi"]] for k, b in res["embeddings"].items()]
    res["reports"] = write_reports(out, name, f"SIDE / SEDI: {'+'.join(specs)}", {
        "date": res["date"], "images": res["images"], "subjects": res["subjects"],
        "expression label": args.expression}, [("Cosine by pair cell", head, rows)], plots,
        [b["note"] for b in res["embeddings"].values()])
    C.write_json(out / f"{name}.json", res)
    res["json"] = str(out / f"{name}.json")
    return res


def summary(res: dict) -> str:
    lines = [f"SIDE/SEDI on {'+'.join(res['datasets'])} ({res['images']} images, expression={res['expression_label']})"]
    for k, b in res["embeddings"].items():
        lines.append(f"  {k:16s} SIDE mean {b['side'].get('mean', float('nan')):.3f} (n={b['side']['n']:,})  "
                     f"SEDI mean {b['sedi'].get('mean', float('nan')):.3f} (n={b['sedi']['n']:,})  "
                     f"AUC SIDE>SEDI {b['auc_side_over_sedi']:.3f}")
    lines.append(f"wrote {res['json']}")
    return "\n".join(lines)
