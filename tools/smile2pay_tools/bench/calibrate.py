"""``smile2pay calibrate``: identity thresholds at target FARs (and per-AU thresholds) with their
uncertainty, written in the calibration format that ``verify()`` reads (:mod:`smile2pay.decision.policy`).

Identity, from either or both of:

* ``--dataset`` (``lfw``, ``ckplus``, ``ckplus48``, ``ckplus_neutral_peak48`` or a CSV ``path,subject,...``):
  every cross-subject pair of images is an impostor comparison, every same-subject pair a genuine
  one (:func:`smile2pay.metrics.calibration.calibrate`), so FAR 1e-4 rests on millions of comparisons;
* ``--pairs`` (LFW ``pairs.txt`` or CSV ``path_a,path_b,same``): the listed pairs only; a pair with no
  face scores -1 (a reject).

Each operating point carries the threshold, the false accepts and impostor count behind it, a
Clopper-Pearson interval on the observed FAR, whether the count supports the FAR (rule of three),
the TAR, and a 95% interval of the threshold from a bootstrap over **subjects** (attempts by one
person are correlated; ISO/IEC 19795-1). With several populations the default operating point takes
the **strictest** threshold at each FAR and records each population's own value: thresholds do not
travel between populations, so calibrate on data like the deployment's.

AU (``--au-data SPEC`` through the pipeline's AU model, or ``--au-oof DIR`` with the subject-held-out
probabilities of ``smile2pay train-au --cv``): per AU, ``threshold`` = the lowest probability at which
at most ``--au-fpr`` of AU-absent images pass (Clopper-Pearson on that rate), ``absent_threshold`` =
the level below which at most ``--au-miss`` of AU-present images fall (capped at ``threshold``).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from smile2pay.vision.detect import DEFAULT_DETECTOR

from smile2pay.errors import RequestError

from . import common as C

log = logging.getLogger("smile2pay_tools.bench.calibrate")
FORMAT = "smile2pay.calibration/1"


def configure(p: argparse.ArgumentParser) -> None:
    """The options of ``smile2pay calibrate`` (declared by the CLI, which parses them without the tools)."""
    from smile2pay.cli.bench import calibrate_args

    calibrate_args(p)


def _name(spec: str) -> str:
    return Path(spec).stem if ("/" in spec or spec.endswith(".csv") or spec.endswith(".txt")) else spec


def _round_up(t: float, digits: int = 6) -> float:
    """Round a threshold UP to ``digits`` decimals: rounding to nearest could fall on an impostor's
    score and admit one more false accept than counted."""
    q = 10 ** digits
    return math.ceil(t * q - 1e-9) / q


def calibrate_pairs(gen: np.ndarray, imp: np.ndarray, imp_sa: np.ndarray | None, imp_sb: np.ndarray | None,
                    fars, *, bootstrap: int = 100, seed: int = 0, confidence: float = 0.95) -> dict:
    """Operating points from listed pairs (:func:`smile2pay.metrics.calibration.operating_points`),
    thresholds rounded UP to 6 decimals for the file. The bootstrap resamples subjects when
    ``imp_sa``/``imp_sb`` (subject indices) are given, else pairs."""
    from smile2pay.metrics.calibration import operating_points

    try:
        res = operating_points(gen, imp, fars, imp_sa=imp_sa, imp_sb=imp_sb, bootstrap=bootstrap, seed=seed,
                               confidence=confidence)
    except ValueError as e:
        raise RequestError(str(e), code="DATASET_INVALID") from None
    for op in res["operating_points"]:
        op["threshold"] = _round_up(op["threshold"])
    return res


def au_thresholds(probs: np.ndarray, present: np.ndarray, *, fpr: float = 0.05, miss: float = 0.05,
                  confidence: float = 0.95) -> dict:
    """Per-AU operating point from probabilities of one AU and presence labels (see module doc)."""
    from smile2pay.metrics.verification import tar_at_far

    p = np.asarray(probs, np.float64)
    y = np.asarray(present, bool)
    if y.sum() == 0 or (~y).sum() == 0:
        raise RequestError("AU calibration needs images with and without the AU", code="DATASET_INVALID")
    op = tar_at_far(p, y, fpr, confidence)
    t = op["threshold"]
    t = 1.0 if not math.isfinite(t) else float(t)
    pos = np.sort(p[y])
    k = int(math.floor(miss * pos.size * (1 + 1e-12)))
    a = float(pos[min(k, pos.size - 1)])
    a = min(a, t)
    below_neg = int(np.sum(p[~y] < a))
    return {"threshold": float(t), "absent_threshold": float(a),
            "fpr_target": fpr, "false_positives": op["false_accepts"], "negatives": op["n_impostors"],
            "fpr": op["far_observed"], "fpr_ci95": op["far_ci95"], "tpr": op["tar"], "tpr_ci95": op["tar_ci95"],
            "positives": op["n_genuine"], "miss_target": miss,
            "present_below_absent_threshold": int(np.sum(pos < a)),
            "absent_below_absent_threshold": below_neg, "absent_recall": below_neg / int((~y).sum())}


def tail_shape_section(shapes: dict, fars) -> dict:
    """The calibration's ``identity.tail_shape``: per FAR the heaviest reference tail (largest ``z``),
    read by the gallery self-calibration (:mod:`smile2pay.decision.population`)."""
    return {"statistic": "z = (threshold - median) / (half the 15.9-84.1 percentile range) of impostor scores",
            "z": {f"{f:g}": max(float(s["z"][f"{f:g}"]) for s in shapes.values()) for f in fars},
            "per_population": shapes}


def _identity_dataset(pipe, spec: str, fars, args) -> dict:
    from smile2pay.config import data_dir
    from smile2pay_tools.datasets_id import load_dataset
    from smile2pay.metrics.calibration import calibrate

    samples = load_dataset(spec, data_dir())
    paths = [s.path for s in samples]
    e = C.embed_paths(pipe, paths, data_dir(), use_cache=not args.no_cache,
                      cache_dir=Path(args.cache) if args.cache else None, show_progress=not args.no_progress,
                      desc=_name(spec))
    found = e["found"]
    subj = [s.subject for s, f in zip(samples, found) if f]
    res = calibrate(e["emb"][found], subj, fars=tuple(fars), bootstrap=args.bootstrap, seed=args.seed)
    res["images_no_face"] = int((~found).sum())
    res["note"] = "images without a face are left out (calibration needs scores, not rejects)"
    return res


def _identity_pairs(pipe, path: str, fars, args) -> dict:
    from smile2pay.config import data_dir
    from smile2pay_tools.datasets_id import load_pairs

    from .pairs import score_pairs

    pairs = load_pairs(path, args.root)
    images = list(dict.fromkeys([q.path_a for q in pairs] + [q.path_b for q in pairs]))
    e = C.embed_paths(pipe, images, data_dir(), use_cache=not args.no_cache,
                      cache_dir=Path(args.cache) if args.cache else None, show_progress=not args.no_progress,
                      desc=_name(path))
    s, y, ok = score_pairs(pairs, dict(zip(images, e["emb"])), dict(zip(images, e["found"])))
    sa = sb = None
    if all(q.subject_a and q.subject_b for q in pairs):
        names = {n: i for i, n in enumerate(sorted({q.subject_a for q in pairs} | {q.subject_b for q in pairs}))}
        sa = np.array([names[q.subject_a] for q, g in zip(pairs, y) if not g])
        sb = np.array([names[q.subject_b] for q, g in zip(pairs, y) if not g])
    res = calibrate_pairs(s[y], s[~y], sa, sb, fars, bootstrap=args.bootstrap, seed=args.seed)
    res["pairs_unscored"] = int((~ok).sum())
    res["note"] = "listed pairs only; a pair with no face scores -1 (a reject)"
    return res


def _au_probs_pipeline(pipe, spec: str, args) -> tuple[np.ndarray, list[str], list[frozenset], int]:
    from smile2pay.config import data_dir
    from smile2pay_tools.datasets import load_csv_manifest
    from smile2pay_tools.datasets_id import load_dataset
    from smile2pay.errors import FaceError

    if spec.endswith(".csv"):
        samples = [(s.path, s.aus) for s in load_csv_manifest(spec)]
    else:
        samples = [(s.path, s.aus) for s in load_dataset(spec, data_dir())]
    an = pipe.au_analyzer
    if an is None or an.model is None:
        raise RequestError("AU calibration needs the pack's AU model", code="MODEL_MISSING")
    names = list(an.model.au_names)
    rows, aus, missed = [], [], 0
    for path, a in C.progress(samples, "au probs", enabled=not args.no_progress):
        try:
            f = pipe.single(path, pick="center", embed=False)
        except FaceError:
            missed += 1
            continue
        rows.append([float(f.au_probs.get(n, np.nan)) for n in names])
        aus.append(a)
    return np.asarray(rows), names, aus, missed


def _oof_au_names(fold_dir: Path, k: int) -> list[str]:
    """AU names of a CV fold: the exported fold model's metadata (``au.onnx``), else the training default."""
    names = None
    onnx_path = fold_dir / "au.onnx"
    if onnx_path.is_file():
        import onnxruntime as ort

        meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
        if "au_names" in meta.custom_metadata_map:
            names = json.loads(meta.custom_metadata_map["au_names"])
    if not names:
        from smile2pay_tools.train.au_train import TrainConfig

        names = list(TrainConfig().aus)
    names = [n if str(n).startswith("AU") else f"AU{n}" for n in names]
    if len(names) != k:
        raise RequestError(f"{fold_dir}: {k} probability columns but {len(names)} AU names", code="DATASET_INVALID")
    return names


def _au_probs_oof(folder: str) -> tuple[np.ndarray, list[str], list[frozenset], int]:
    from smile2pay_tools.datasets import parse_au_codes

    from .common import load_oof

    gt, probs = load_oof(folder, "probs")
    names = _oof_au_names(sorted((Path(folder) / "cv").glob("fold*/oof.npz"))[0].parent, probs.shape[1])
    keep = ~np.isnan(probs).any(axis=1)
    aus = [parse_au_codes(str(c)) for c, k in zip(gt["aus"], keep) if k]
    return probs[keep], names, aus, int((~keep).sum())


def run(args) -> dict:
    t0 = time.perf_counter()
    fars = sorted(set(args.far or [1e-3, 1e-4]), reverse=True)
    for f in fars:
        if not 0 < f < 1:
            raise RequestError(f"--far must be in (0, 1), got {f}", code="REQUEST_INVALID")
    if not args.dataset and not args.pairs and not (args.au_data or args.au_oof):
        raise RequestError("give --dataset and/or --pairs (identity), and/or --au-data/--au-oof (AU)",
                           code="REQUEST_INVALID")
    out = Path(args.out)
    # the sections this command does not measure (smile gate, continuity, PAD, ...) come from --calibration, else
    # from --out when it exists, else from the shipped file: an identity calibration must not drop them
    from smile2pay.decision.policy import CALIBRATION_DIR, load_calibration

    base_path = getattr(args, "calibration", None)
    prev = {}
    if base_path:
        prev = load_calibration(base_path)
    elif out.exists():
        try:
            prev = json.loads(out.read_text())
        except ValueError:
            prev = {}
    base = prev if prev else load_calibration(CALIBRATION_DIR / "mobile.json")
    pipe = C.make_pipeline(getattr(args, "models", None), detector=args.detector or DEFAULT_DETECTOR, threads=args.threads)
    pops: dict[str, dict] = {}
    for spec in args.dataset:
        pops[_name(spec)] = _identity_dataset(pipe, spec, fars, args)
    for spec in args.pairs:
        pops[f"pairs:{_name(spec)}"] = _identity_pairs(pipe, spec, fars, args)
    kept = {k: v for k, v in base.items() if k not in ("format", "model", "created", "command", "dataset", "note",
                                                       "identity", "au")}
    cal: dict = {"format": FORMAT, "model": pipe.model_fingerprint, "created": time.strftime("%Y-%m-%d"),
                 "command": "smile2pay calibrate " + " ".join(
                     [f"--dataset {d}" for d in args.dataset] + [f"--pairs {p}" for p in args.pairs]
                     + [f"--far {f:g}" for f in fars] + [f"--bootstrap {args.bootstrap}"]
                     + ([f"--au-data {args.au_data}"] if args.au_data else [])
                     + ([f"--au-oof {args.au_oof}"] if args.au_oof else []) + [f"--out {args.out}"]),
                 "dataset": ", ".join(pops) if pops else None,
                 "note": ("default = strictest threshold over the populations at each FAR; thresholds do not "
                          "travel between populations: calibrate on data like the deployment's")}
    if pops:
        default_ops = []
        for i, far in enumerate(fars):
            t, src = max((p["operating_points"][i]["threshold"], name) for name, p in pops.items())
            op = dict(pops[src]["operating_points"][i])
            op["population"] = src
            op["per_population"] = {name: p["operating_points"][i]["threshold"] for name, p in pops.items()}
            default_ops.append(op)
        cal["identity"] = {"operating_points": default_ops, "populations": pops}
        shapes = {name: p["tail_shape"] for name, p in pops.items() if "tail_shape" in p}
        if shapes:
            cal["identity"]["tail_shape"] = tail_shape_section(shapes, fars)
    elif prev.get("identity"):
        cal["identity"] = prev["identity"]
        cal["model"] = prev.get("model", cal["model"])
    else:
        raise RequestError(f"{out} has no identity section to keep; give --dataset or --pairs", code="REQUEST_INVALID")
    if args.au_data or args.au_oof:
        probs, names, aus, missed = (_au_probs_oof(args.au_oof) if args.au_oof
                                     else _au_probs_pipeline(pipe, args.au_data, args))
        section = {}
        for au in args.aus:
            if au not in names:
                raise RequestError(f"unknown AU {au}; the model has {names}", code="REQUEST_INVALID")
            num = int(au[2:])
            present = np.array([num in a for a in aus])
            op = au_thresholds(probs[:, names.index(au)], present, fpr=args.au_fpr, miss=args.au_miss)
            op["source"] = (f"out-of-fold (subject-held-out) probabilities of {args.au_oof}" if args.au_oof
                            else f"{args.au_data} through the pack's AU model ({missed} images without a face)")
            section[au] = op
        cal["au"] = section
    else:
        cal["au"] = base.get("au", {})
    cal.update(kept)
    # the file must load the way verify() loads it
    from smile2pay.decision.policy import Policy, write_calibration

    write_calibration(out, json.loads(json.dumps(cal, default=C.json_default)))

    Policy.from_calibration(out, far=fars[-1] if pops or prev else 1e-4)
    return {"out": str(out), "calibration": cal, "seconds": round(time.perf_counter() - t0, 1)}


def summary(res: dict) -> str:
    cal = res["calibration"]
    lines = [f"wrote {res['out']} (model {cal['model'][:24]}...)"]
    for op in cal.get("identity", {}).get("operating_points", []):
        lo, hi = op.get("threshold_ci95_subject_bootstrap") or op.get("threshold_ci95_pair_bootstrap") or (None, None)
        lines.append(f"FAR {op['far']:g}: threshold {op['threshold']:.4f} [{lo:.4f}, {hi:.4f}] from {op['population']}; "
                     f"{op['false_accepts']:,} false accepts of {op['impostors']:,} impostors "
                     f"(FAR 95% CI {op['far_ci95'][0]:.2e}..{op['far_ci95'][1]:.2e}"
                     f"{'' if op['supported'] else ', NOT SUPPORTED'}), TAR {op['tar']:.4f} of {op['genuine']:,}")
    for au, a in cal.get("au", {}).items():
        lines.append(f"{au}: threshold {a['threshold']} (FPR {a.get('fpr', 0):.3f} of {a.get('negatives')}, "
                     f"TPR {a.get('tpr', 0):.3f}), absent_threshold {a['absent_threshold']}")
    return "\n".join(lines)
