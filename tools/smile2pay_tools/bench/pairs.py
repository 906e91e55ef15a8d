"""``smile2pay bench pairs``: verification on a list of pairs (LFW ``pairs.txt`` or CSV ``path_a,path_b,same``).

Every image is detected and embedded once (centre face, LFW's protocol face; cached). A pair with no
face on either side gets score -1, a reject: detection failures are counted, never dropped. Reports
ROC AUC, EER, TAR at each FAR target with the impostor count behind it (and says when the count
cannot support that FAR: with N impostor pairs and no false accept the 95% upper bound on the FAR is
about 3/N), k-fold accuracy when the pairs carry folds (LFW: 10), FAR per group when pairs carry
groups, and writes JSON, ROC / DET / histogram PNGs and an HTML + Markdown report.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from smile2pay.vision.detect import DEFAULT_DETECTOR, DETECTORS

from smile2pay.errors import RequestError

from . import common as C

log = logging.getLogger("smile2pay_tools.bench.pairs")
DEFAULT_FARS = (1e-2, 1e-3, 1e-4, 1e-5)


def dataset_name(pairs_file) -> str:
    """The dataset a pairs file belongs to, for file names: its stem, or its folder's name when the
    stem only says "pairs" (``lfw/pairs.csv`` -> ``lfw``, not ``pairs_pairs``)."""
    p = Path(pairs_file)
    stem = p.stem
    rest = stem.lower().removeprefix("pairs").strip("_-. ")
    if rest in ("", "txt", "csv", "list", "test", "dev", "view2", "view1"):
        parent = p.resolve().parent.name
        return parent + (f"_{rest}" if rest not in ("", "txt", "csv", "list") else "") if parent else stem
    return rest if stem.lower().startswith("pairs") else stem


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", required=True, help="LFW pairs.txt or CSV path_a,path_b,same[,fold][,group]")
    p.add_argument("--root", help="image folder (pairs.txt: the <name>/ folders; CSV: base of relative paths)")
    p.add_argument("--out", default="bench_out/pairs", help="folder for JSON and reports (default bench_out/pairs)")
    p.add_argument("--plots-dir", help="folder for the PNG plots (default: --out)")
    p.add_argument("--name", help="file name stem (default: pairs_<dataset>: the pairs file's stem, or its "
                                  "folder when the stem is just 'pairs')")
    p.add_argument("--far", type=float, action="append", help="FAR target (repeatable; default 1e-2 1e-3 1e-4 1e-5)")
    p.add_argument("--group-col", help="CSV: column (or X for X_a/X_b) naming each pair's group")
    p.add_argument("--groups", help="manifest CSV path,<column>: label each image's group (joined on path)")
    p.add_argument("--groups-col", default="group", help="the manifest column for --groups (default group)")
    p.add_argument("--limit", type=int, default=0, help="use N pairs spread over folds and classes (quick run)")
    p.add_argument("--detector", choices=list(DETECTORS))
    p.add_argument("--threads", type=int)
    p.add_argument("--cache", help="cache folder (default SMILE2PAY_CACHE or ./results/cache)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def select(pairs: list, limit: int) -> list:
    """``limit`` pairs taken round-robin over (fold, same) cells, in file order within a cell."""
    if not limit or limit >= len(pairs):
        return pairs
    cells: dict = {}
    for q in pairs:
        cells.setdefault((q.fold, q.same), []).append(q)
    keys = sorted(cells, key=lambda k: (k[0] is None, k[0] or 0, not k[1]))
    out, i = [], 0
    while len(out) < limit:
        added = False
        for k in keys:
            if i < len(cells[k]) and len(out) < limit:
                out.append(cells[k][i])
                added = True
        if not added:
            break
        i += 1
    return out


def far_note(op: dict) -> str:
    n = op["n_impostors"]
    if op["supported"]:
        return f"{n:,} impostor pairs support FAR {op['far_target']:g} (>= {op['min_impostors']:,} needed)"
    return (f"NOT SUPPORTED: {n:,} impostor pairs; FAR {op['far_target']:g} needs >= {op['min_impostors']:,}. "
            f"With no false accept the 95% upper bound is ~3/N = {3 / n:.1e}; observed bound here "
            f"{op['far_upper95']:.1e}")


def score_pairs(pairs, emb_of: dict, found_of: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.full(len(pairs), -1.0)
    ok = np.zeros(len(pairs), bool)
    for i, q in enumerate(pairs):
        if found_of[q.path_a] and found_of[q.path_b]:
            s[i] = float(np.dot(emb_of[q.path_a], emb_of[q.path_b]))
            ok[i] = True
    y = np.array([q.same for q in pairs], bool)
    return s, y, ok


def run(args) -> dict:
    from smile2pay.config import data_dir
    from smile2pay_tools.datasets_id import attach_groups, load_pairs
    from smile2pay.metrics import verification_report

    from .stats import far_by_group

    t0 = time.perf_counter()
    fars = tuple(args.far or DEFAULT_FARS)
    for f in fars:
        if not 0 < f < 1:
            raise RequestError(f"--far must be in (0, 1), got {f}", code="REQUEST_INVALID")
    pairs = select(load_pairs(args.pairs, args.root, group_col=getattr(args, "group_col", None)), args.limit)
    groups_missing = None
    if getattr(args, "groups", None):
        pairs, groups_missing = attach_groups(pairs, args.groups, args.groups_col)
    n_gen = sum(q.same for q in pairs)
    if n_gen == 0 or n_gen == len(pairs):
        raise RequestError(f"need genuine and impostor pairs, got {n_gen} genuine of {len(pairs)}",
                           code="DATASET_INVALID")
    images = list(dict.fromkeys([q.path_a for q in pairs] + [q.path_b for q in pairs]))
    missing = [p for p in images if not Path(p).is_file()]
    if missing:
        raise RequestError(f"{len(missing)} image(s) of the pairs not found, e.g. {missing[0]}; check --root",
                           code="IMAGE_NOT_FOUND", missing=len(missing), example=missing[0])
    pipe = C.make_pipeline(getattr(args, "models", None), detector=args.detector or DEFAULT_DETECTOR, threads=args.threads)
    show = not args.no_progress
    e = C.embed_paths(pipe, images, data_dir(), use_cache=not args.no_cache,
                      cache_dir=Path(args.cache) if args.cache else None, show_progress=show, desc="pairs")
    emb_of = dict(zip(images, e["emb"]))
    found_of = dict(zip(images, e["found"]))
    s, y, ok = score_pairs(pairs, emb_of, found_of)
    folds = np.array([q.fold if q.fold is not None else -1 for q in pairs])
    use_folds = len(set(folds.tolist()) - {-1}) >= 2 and (folds >= 0).all()
    rep = verification_report(s, y, folds=folds if use_folds else None, fars=fars)
    for op in rep["tar_at_far"]:
        op["note"] = far_note(op)
    thr = {f"FAR {op['far_target']:g}": op["threshold"] for op in rep["tar_at_far"] if op["supported"]}
    thr_all = {f"FAR {op['far_target']:g}": op["threshold"] for op in rep["tar_at_far"]}
    grp = [q.group for q in pairs]
    has_groups = any(grp)
    name = args.name or f"pairs_{dataset_name(args.pairs)}"
    out = Path(args.out)
    res: dict = {
        "benchmark": "bench pairs", "date": time.strftime("%Y-%m-%d"), "pairs_file": str(args.pairs),
        "settings": C.settings_summary(pipe), "machine": C.machine(),
        "protocol": ("centre face per image; no face on either side = score -1 (a reject, counted); "
                     + ("threshold of each fold chosen on the other folds" if use_folds else "no folds")),
        "pairs": len(pairs), "genuine": int(y.sum()), "impostors": int((~y).sum()),
        "images": len(images), "images_no_face": len(e["no_face"]), "no_face": e["no_face"][:200],
        "images_unreadable": len(e["errors"]),
        "pairs_unscored": int((~ok).sum()), "pairs_unscored_genuine": int((~ok & y).sum()),
        "pairs_unscored_impostor": int((~ok & ~y).sum()),
        "auc": rep["auc"], "eer": rep["eer"], "eer_threshold": rep["eer_threshold"],
        "kfold_accuracy": rep["kfold"]["mean"] if use_folds else None,
        "kfold_std": rep["kfold"]["std"] if use_folds else None,
        "tar_at_far": rep["tar_at_far"], "report": rep,
    }
    if has_groups:
        res["far_by_group"] = far_by_group(s, y, grp, thr_all)
        res["groups_note"] = ("FAR per group at the global thresholds; a pair's group is the shared group of its "
                              "two images, 'a|b' across groups" + (f"; {groups_missing} image sides unlabelled"
                                                                    if groups_missing else ""))
    else:
        res["far_by_group"] = None
        res["groups_note"] = "the pairs carry no group labels (no per-group FAR); add a group column or --groups"
    res["timing"] = {"detect_s": round(e["detect_s"], 1), "embed_s": round(e["embed_s"], 1),
                     "wall_s": round(time.perf_counter() - t0, 1)}
    plots = []
    if not args.no_plots:
        from . import plots as P

        pdir = Path(args.plots_dir or out)
        pdir.mkdir(parents=True, exist_ok=True)
        title = f"{dataset_name(args.pairs)}: {Path(args.pairs).name} ({len(pairs):,} pairs, {res['settings']['pack']} pack)"
        curves = {f"{res['settings']['recognizer']} (AUC {rep['auc']:.4f})": (s, y)}
        marks = {f"TAR@FAR {op['far_target']:g}": (op["far_observed"] or None, op["tar"])
                 for op in rep["tar_at_far"] if op["supported"]}
        plots = [P.roc_plot(pdir / f"{name}_roc.png", curves, title, marks),
                 P.det_plot(pdir / f"{name}_det.png", curves, title),
                 P.hist_plot(pdir / f"{name}_hist.png", s, y, title, thr)]
        res["plots"] = plots
    res["reports"] = _report(out, name, res, plots)
    C.write_json(out / f"{name}.json", res)
    res["json"] = str(out / f"{name}.json")
    log.info("bench pairs: AUC %.5f EER %.4f -> %s", rep["auc"], rep["eer"], res["json"])
    return res


def _report(out: Path, name: str, res: dict, plots: list[str]) -> dict:
    from .report import write_reports

    facts = {"date": res["date"], "pairs file": res["pairs_file"], "pairs": res["pairs"],
             "genuine / impostor": f"{res['genuine']} / {res['impostors']}",
             "images / no face": f"{res['images']} / {res['images_no_face']}",
             "pairs unscored (score -1, counted as rejects)": res["pairs_unscored"],
             "ROC AUC": res["auc"], "EER": res["eer"], "EER threshold": res["eer_threshold"],
             "k-fold accuracy": (f"{100 * res['kfold_accuracy']:.2f}% ± {100 * res['kfold_std']:.2f}%"
                                 if res["kfold_accuracy"] is not None else "no folds"),
             "model": res["settings"]["model_fingerprint"]}
    rows = [[f"{op['far_target']:g}", op["tar"], op["threshold"], op["false_accepts"], op["n_impostors"],
             op["far_upper95"], "yes" if op["supported"] else "NO (too few impostors)"] for op in res["tar_at_far"]]
    tables = [("TAR at FAR", ["FAR target", "TAR", "threshold", "false accepts", "impostors", "FAR 95% upper",
                              "supported"], rows)]
    if res["far_by_group"]:
        g_rows = []
        for gname, g in res["far_by_group"].items():
            for k, a in g["at"].items():
                g_rows.append([gname, k, g["impostors"], a["false_accepts"], a["far"], a["far_upper95"],
                               g["genuine"], a["frr"]])
        tables.append(("FAR per group (global thresholds)", ["group", "threshold at", "impostors",
                                                             "false accepts", "FAR", "FAR 95% upper", "genuine",
                                                             "FRR"], g_rows))
    notes = [op["note"] for op in res["tar_at_far"] if not op["supported"]] + [res["groups_note"]]
    return write_reports(out, name, f"Verification on pairs: {dataset_name(res['pairs_file'])} ({Path(res['pairs_file']).name})", facts, tables,
                         plots, notes)
