"""LFW verification benchmark: official View-2 pairs (10 folds x 600) through FacePipeline.

Every image is detected once and embedded once (centre face: LFW's protocol face), cached in
results/cache/ (git-ignored) by settings. A pair with no face on either side gets score -1 (a
reject) and is counted, never dropped. Reports 10-fold accuracy (threshold chosen on 9 folds),
ROC AUC, EER, TAR at FAR 1e-2/1e-3/1e-4 with thresholds, impostor counts and whether the count
supports that FAR; an all-pairs protocol over the same 7,701 images (~29.6 M cross-identity
impostor pairs) for the low-FAR points; and genuine neutral-vs-happiness against
neutral-vs-neutral similarity.

    SMILE2PAY_THREADS=1 nice python benchmarks/lfw_verify.py                       # mobile pack
    SMILE2PAY_THREADS=1 nice python benchmarks/lfw_verify.py --flip --compare-flip # flip TTA vs none
    python benchmarks/lfw_verify.py --limit 600                                    # quick run
    python benchmarks/lfw_verify.py --detector yunet

Writes benchmarks/results/lfw_verify[_flip][_yunet].json and PNG plots (ROC, DET, histograms) in docs/plots/.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import _common as C  # noqa: E402

FARS = (1e-2, 1e-3, 1e-4)
ALL_PAIRS_FARS = (1e-3, 1e-4, 1e-5)
#: InsightFace FaceAnalysis (det_500m at 640 + w600k_mbf) on this data, from shared/MEASURING.md
REFERENCE = {"source": "shared/MEASURING.md: InsightFace FaceAnalysis det_500m@640 + w600k_mbf, centre face",
             "kfold_accuracy": 0.9923, "kfold_std": 0.0040, "missed_images": 19,
             "kfold_accuracy_after_pad_retry": 0.9955, "kfold_std_after_pad_retry": 0.0025, "auc": 0.9989,
             "tar_at_far_1e-3": 0.9933, "threshold_at_far_1e-3": 0.232}


def select_pairs(rows: list[dict], limit: int) -> list[dict]:
    """All pairs, or ``limit`` pairs spread over the 10 folds (half genuine, half impostor)."""
    if not limit:
        return rows
    k = max(1, limit // 20)
    out, seen = [], {}
    for r in rows:
        key = (r["fold"], r["same"])
        if seen.get(key, 0) < k:
            seen[key] = seen.get(key, 0) + 1
            out.append(r)
    return out


def pair_scores(rows, index, emb, found) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a = np.array([index[r["path_a"]] for r in rows])
    b = np.array([index[r["path_b"]] for r in rows])
    ok = found[a] & found[b]
    s = np.full(len(rows), -1.0)
    s[ok] = np.einsum("ij,ij->i", emb[a[ok]], emb[b[ok]])
    y = np.array([int(r["same"]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    return s, y, folds, ok


def expression_block(rows, s, y, ok, thr_1e3: float | None) -> dict:
    """Genuine pairs by expression pair: mean cosine, and the share accepted at the FAR=1e-3
    threshold of the official pairs."""
    groups = {"neutral-neutral": {"neutral"}, "neutral-happiness": {"neutral", "happiness"},
              "happiness-happiness": {"happiness"}}
    out = {}
    for name, want in groups.items():
        sel = []
        for i, r in enumerate(rows):
            if not y[i]:
                continue
            pair = {r["expression_a"], r["expression_b"]}
            if name == "neutral-happiness":
                hit = pair == want
            else:
                hit = r["expression_a"] == r["expression_b"] and pair == want
            if hit:
                sel.append(i)
        sel = np.array(sel, int)
        scored = sel[ok[sel]] if sel.size else sel
        v = s[scored]
        out[name] = {"pairs": int(sel.size), "scored": int(scored.size),
                     "mean_cos": round(float(v.mean()), 4) if v.size else None,
                     "std_cos": round(float(v.std()), 4) if v.size else None,
                     "accepted_at_far_1e-3": (round(float(np.mean(s[sel] >= thr_1e3)), 4)
                                              if sel.size and thr_1e3 is not None else None)}
    nn, nh = out["neutral-neutral"]["mean_cos"], out["neutral-happiness"]["mean_cos"]
    out["neutral-happiness_minus_neutral-neutral"] = round(nh - nn, 4) if nn is not None and nh is not None else None
    return out


def all_pairs_block(paths, subjects, emb, found, fars=ALL_PAIRS_FARS, block=512) -> dict:
    """Every pair of distinct images (i < j): same subject = genuine, else impostor.
    Images with no face give -1 against everything (a reject)."""
    from smile2pay.metrics import eer, roc_auc, tar_at_far

    n = len(paths)
    subj = np.unique(np.asarray(subjects), return_inverse=True)[1]
    e = np.where(found[:, None], emb, 0.0).astype(np.float32)
    gen_chunks, imp_chunks = [], []
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        sims = e[i0:i1] @ e.T                       # (b, n)
        sims[~found[i0:i1]] = -1.0
        sims[:, ~found] = -1.0
        rows = np.arange(i0, i1)[:, None]
        upper = np.arange(n)[None, :] > rows
        same = subj[i0:i1, None] == subj[None, :]
        gen_chunks.append(sims[upper & same])
        imp_chunks.append(sims[upper & ~same])
    gen = np.concatenate(gen_chunks)
    imp = np.concatenate(imp_chunks)
    s = np.concatenate([gen, imp]).astype(np.float64)
    y = np.r_[np.ones(gen.size, bool), np.zeros(imp.size, bool)]
    del gen_chunks, imp_chunks
    e_val, e_thr = eer(s, y)
    from smile2pay.metrics import roc_curve

    far, tar, _ = roc_curve(s, y)
    keep = np.unique(np.r_[np.searchsorted(far, np.logspace(-8, 0, 1500)), far.size - 1].clip(0, far.size - 1))
    curve = (far[keep], tar[keep])
    ops = []
    for far in fars:
        op = tar_at_far(s, y, far)
        op["threshold"] = None if not np.isfinite(op["threshold"]) else op["threshold"]
        ops.append(op)
    return {"protocol": "all pairs of distinct images among the 7,701 of the official pairs; same subject = genuine",
            "n_genuine": int(gen.size), "n_impostors": int(imp.size), "auc": roc_auc(s, y), "eer": e_val,
            "eer_threshold": e_thr, "tar_at_far": ops,
            "impostor": {"mean": float(imp.mean()), "std": float(imp.std()), "max": float(imp.max())},
            "_curve": curve}


def plots(out_prefix: Path, curves: dict, s, y, thr_1e3, title: str) -> list[str]:
    """ROC, DET and score histograms: the plots of ``smile2pay bench pairs`` (smile2pay_tools.bench.plots)."""
    from smile2pay_tools.bench import plots as P

    xmin = 1e-6 if any("all pairs" in k for k in curves) else 1e-4
    return [P.roc_plot(str(out_prefix) + "_roc.png", curves, title, xmin=xmin),
            P.det_plot(str(out_prefix) + "_det.png", curves, title),
            P.hist_plot(str(out_prefix) + "_hist.png", s, y, title, {"FAR=1e-3": thr_1e3})]


def run_setting(args, flip: bool, rows, images, data, verbose=True) -> dict:
    from smile2pay.metrics import verification_report

    t0 = time.perf_counter()
    pipe = C.make_pipeline(args.models, detector=args.detector, flip=flip)
    dets, det_s = C.detect_all(pipe, images, data, dataset="lfw", desc="detect lfw")
    det_key = C.detection_key(pipe, "lfw")
    emb, found, emb_s = C.embed_all(pipe, images, dets, data, det_key, desc=f"embed flip={flip}")
    # the cached vectors are those of FacePipeline.single(path, pick="center")
    check = C.check_against_single(pipe, images[:3], {p: emb[i] for i, p in enumerate(images)}, data)
    index = {p: i for i, p in enumerate(images)}
    s, y, folds, ok = pair_scores(rows, index, emb, found)
    rep = verification_report(s, y, folds=folds, fars=FARS)
    thr_1e3 = next(op["threshold"] for op in rep["tar_at_far"] if op["far_target"] == 1e-3)
    missed = [p for p, f in zip(images, found) if not f]
    passes: dict[str, int] = {}
    for p in images:
        passes[dets[p]["attempt"]] = passes.get(dets[p]["attempt"], 0) + 1
    multi = sum(1 for p in images if len(dets[p].get("scores", ())) > 1)
    res = {
        "settings": C.settings_summary(pipe),
        "images": len(images), "images_no_face": len(missed), "no_face": missed,
        "detector_pass": dict(sorted(passes.items())), "images_multi_face": multi,
        "pairs": len(rows), "pairs_unscored": int((~ok).sum()),
        "pairs_unscored_genuine": int((~ok & (y == 1)).sum()),
        "kfold_accuracy": rep["kfold"]["mean"], "kfold_std": rep["kfold"]["std"],
        "auc": rep["auc"], "eer": rep["eer"], "eer_threshold": rep["eer_threshold"],
        "tar_at_far": rep["tar_at_far"],
        "report": rep,
        "expression": expression_block(rows, s, y, ok, thr_1e3),
        "timing": {"detect_s_this_run": round(det_s, 1), "embed_s_this_run": round(emb_s, 1),
                   "detect_cached": det_s == 0.0, "embed_cached": emb_s == 0.0,
                   "check_vs_single_max_abs_diff": check},
    }
    if not args.limit and not args.no_all_pairs:
        paths_subj = {}
        for r in rows:
            paths_subj[r["path_a"]] = r["subject_a"]
            paths_subj[r["path_b"]] = r["subject_b"]
        res["all_pairs"] = all_pairs_block(images, [paths_subj[p] for p in images], emb, found)
    res["timing"]["wall_s"] = round(time.perf_counter() - t0, 1)
    res["_scores"] = (s, y)
    return res


def headline(name: str, r: dict) -> str:
    ops = "  ".join(f"TAR@{op['far_target']:g}={100 * op['tar']:.2f}% (thr {op['threshold']}, "
                    f"{op['n_impostors']} imp, {'ok' if op['supported'] else 'UNSUPPORTED'})" for op in r["tar_at_far"])
    return (f"[{name}] 10-fold acc {100 * r['kfold_accuracy']:.2f}% +- {100 * r['kfold_std']:.2f}%  "
            f"AUC {r['auc']:.5f}  EER {100 * r['eer']:.2f}% (thr {r['eer_threshold']:.3f})  "
            f"no-face images {r['images_no_face']}  unscored pairs {r['pairs_unscored']}\n    {ops}")


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(C.REPO))
    except ValueError:
        return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=C.DEFAULT_DATA)
    ap.add_argument("--models", default=C.DEFAULT_MODELS)
    ap.add_argument("--flip", action="store_true", help="flip test-time augmentation (Settings.flip_tta)")
    ap.add_argument("--compare-flip", action="store_true", help="also run the other flip setting and report the difference")
    ap.add_argument("--detector", choices=["scrfd", "yunet"], default="scrfd")
    ap.add_argument("--limit", type=int, default=0, help="use N pairs spread over the folds (quick run)")
    ap.add_argument("--no-all-pairs", action="store_true", help="skip the all-pairs (29.6 M impostors) protocol")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/lfw_verify[_flip][_yunet][_limitN].json)")
    args = ap.parse_args(argv)
    argv_used = list(sys.argv[1:] if argv is None else argv)

    t_all = time.perf_counter()
    data = Path(args.data)
    rows = select_pairs(C.read_csv(data / "lfw" / "pairs.csv"), args.limit)
    images = sorted({r["path_a"] for r in rows} | {r["path_b"] for r in rows})
    suffix = ("_flip" if args.flip else "") + ("_yunet" if args.detector == "yunet" else "") + \
             (f"_limit{args.limit}" if args.limit else "")
    out = Path(args.out) if args.out else C.RESULTS_DIR / f"lfw_verify{suffix}.json"

    main_r = run_setting(args, args.flip, rows, images, data)
    name = "flip" if args.flip else "no flip"
    print(headline(name, main_r), flush=True)
    curves = {f"{name}, official pairs (AUC {main_r['auc']:.4f})": main_r["_scores"]}
    if "all_pairs" in main_r:
        ap_curve = main_r["all_pairs"].pop("_curve")
        curves[f"{name}, all pairs ({main_r['all_pairs']['n_impostors'] / 1e6:.1f} M impostors)"] = ("roc", *ap_curve)
    payload = {"benchmark": "lfw_verify", "date": time.strftime("%Y-%m-%d"),
               "command": ("SMILE2PAY_THREADS=1 nice python benchmarks/lfw_verify.py " + " ".join(argv_used)).strip(),
               "machine": C.machine(), "protocol": "LFW View-2 official pairs.txt, 10 folds x (300 genuine + 300 "
               "impostor); centre face; threshold for each fold chosen on the other 9; no-face pair = score -1",
               "limit": args.limit or None, "reference": REFERENCE}
    payload.update({k: v for k, v in main_r.items() if not k.startswith("_")})
    if args.compare_flip:
        other = run_setting(args, not args.flip, rows, images, data)
        oname = "flip" if not args.flip else "no flip"
        print(headline(oname, other), flush=True)
        curves[f"{oname}, official pairs (AUC {other['auc']:.4f})"] = other["_scores"]
        if "all_pairs" in other:
            other["all_pairs"].pop("_curve", None)
        on, off = (main_r, other) if args.flip else (other, main_r)
        payload["flip_comparison"] = {
            "kfold_accuracy": {"flip": on["kfold_accuracy"], "no_flip": off["kfold_accuracy"],
                               "diff": on["kfold_accuracy"] - off["kfold_accuracy"]},
            "kfold_std": {"flip": on["kfold_std"], "no_flip": off["kfold_std"]},
            "auc": {"flip": on["auc"], "no_flip": off["auc"], "diff": on["auc"] - off["auc"]},
            "eer": {"flip": on["eer"], "no_flip": off["eer"], "diff": on["eer"] - off["eer"]},
            "tar_at_far": [{"far": a["far_target"], "flip": a["tar"], "no_flip": b["tar"], "diff": a["tar"] - b["tar"],
                            "threshold_flip": a["threshold"], "threshold_no_flip": b["threshold"]}
                           for a, b in zip(on["tar_at_far"], off["tar_at_far"])],
            "all_pairs_tar_at_far": ([{"far": a["far_target"], "flip": a["tar"], "no_flip": b["tar"],
                                       "diff": a["tar"] - b["tar"]}
                                      for a, b in zip(on["all_pairs"]["tar_at_far"], off["all_pairs"]["tar_at_far"])]
                                     if "all_pairs" in on and "all_pairs" in off else None),
            "per_fold_wins_flip": int(sum(a > b for a, b in zip(on["report"]["kfold"]["per_fold"],
                                                                  off["report"]["kfold"]["per_fold"]))),
            "per_fold_wins_no_flip": int(sum(a < b for a, b in zip(on["report"]["kfold"]["per_fold"],
                                                                     off["report"]["kfold"]["per_fold"]))),
            "embed_cost": "flip doubles the recogniser work per face (two crops per embedding)",
        }
    if not args.no_plots:
        thr = next(op["threshold"] for op in main_r["tar_at_far"] if op["far_target"] == 1e-3)
        s, y = main_r["_scores"]
        title = f"LFW official pairs, mobile pack ({args.detector}{', flip TTA' if args.flip else ''})"
        payload["plots"] = [_rel(p) for p in plots(C.REPO / "docs" / "plots" / out.stem, curves, s, y, thr, title)]
    payload["wall_s"] = round(time.perf_counter() - t_all, 1)
    C.write_json(out, payload)
    print(f"wrote {out}  ({payload['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
