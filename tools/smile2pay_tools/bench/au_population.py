"""Cross-population protocol of the smile gate (issue 14).

Usage:
    python benchmarks/au_cross_population.py --run results/au3 [--onnx FILE] [--write-calibration]

Train on some sources, report on the others, never on a subject or a byte-identical image seen in training:

* **CK+ subject-held-out (5-fold)**: every CK+ frame (ckplus48 + neutral/peak) scored by the fold model that
  never saw its subject (``RUN/cv/fold*/oof.npz`` of ``train-au --recipe v3 --cv 5``). Smile = coded AU6+AU12.
* **FER+ test, deduplicated**: FER2013Test minus every image pixel-identical to a FER2013Train/Valid image
  and minus repeats within the test split; smile = FER+ majority "happiness" (usable votes only).
* **LFW test people**: half of LFW's people (``sources.lfw_role == "test"``), none used in training or
  calibration; smile = Morishita smile label (1) vs not (0).

Scores compared on the same images in the same run: the model's smile score min(AU6, AU12), the MediaPipe
blendshape teacher (mouthSmile = AU12 proxy, and min(eyeSquint, mouthSmile)), the FER2013 mini-Xception's
P(happy) on the padded AU crop (and on FER+ images also on the raw 48x48 image, its native input). For each
anchor the better variant is kept, which can only favour the anchor.

The gate itself (the decision's AU judgement alone, :mod:`smile2pay.decision.au_calibration`) is calibrated
on the mix of calibration populations (CK+ out-of-fold neutral -> peak pairs, FER+ Valid, LFW
calibration people) and reported on the test populations: LFW neutral -> happy pairs of the same test
person (the neutral photo is the burst's neutral frame and the baseline), FER+ test frames (absolute).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger("smile2pay_tools.bench.au_population")
RULE_AUS = ("AU6", "AU12")
OTHER_LFW = ("surprise", "anger", "sadness", "disgust", "fear", "contempt")


def _auc(y, s):
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None


def load_au_model(onnx_path):
    """An :class:`~smile2pay.vision.au.AUModel` on any AU ONNX file (input size read from the graph)."""
    from smile2pay.models.manifest import ModelSpec
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.au import AUModel

    sess = create_session(onnx_path, threads=2, name="au_bench")[0]
    size = int(sess.get_inputs()[0].shape[2])
    spec = ModelSpec(name="au", file=str(onnx_path), task="au", sha256=None, size=None, licence="", source="",
                     input_size=(size, size))
    return AUModel(spec, sess)


def model_scores(model, crops: np.ndarray, batch: int = 512) -> tuple[np.ndarray, list[str]]:
    """(N, K) AU probabilities and the AU names; ``model`` is an AUModel or an ONNX path."""
    m = model if hasattr(model, "au_names") else load_au_model(model)
    out = [m.run(list(crops[i:i + batch]))[0] for i in range(0, len(crops), batch)]
    return np.concatenate(out), list(m.au_names)


def fuse_matrix(P: np.ndarray, names: list[str], happy: np.ndarray | None) -> np.ndarray:
    """The product's AU stage on precomputed outputs: AU6 / AU12 of ``P`` (N, K) fused with the expression
    classifier's P(happy) by the product's own formula (:func:`smile2pay.vision.au.fuse_logits`; rows of NaN stay
    NaN). ``happy`` None: ``P`` unchanged (the AU model alone)."""
    from smile2pay.vision.au import FUSED_AUS, FUSION_WEIGHT, fuse_logits

    if happy is None:
        return P
    Q = np.array(P, np.float64, copy=True)
    for au in FUSED_AUS:
        j = names.index(au)
        Q[:, j] = fuse_logits(Q[:, j], happy, FUSION_WEIGHT)
    return Q.astype(np.float32)


def fuse_probe_matrix(P: np.ndarray, names: list[str], z: np.ndarray, weight: float,
                      aus=("AU6", "AU12")) -> np.ndarray:
    """:func:`smile2pay.decision.engine.fuse_probe` on precomputed outputs: the AUs ``aus`` of ``P`` (N, K) fused
    with the smile probe's logits ``z`` (N,), ``sigmoid((1 - weight) logit(p) + weight z)``, p clipped to
    [1e-6, 1 - 1e-6] as the engine does; other columns unchanged."""
    from smile2pay.metrics.probability import logit, sigmoid

    Q = np.array(P, np.float64, copy=True)
    z = np.asarray(z, np.float64)
    for au in aus:
        j = names.index(au)
        Q[:, j] = sigmoid((1.0 - weight) * logit(Q[:, j]) + weight * z)
    return Q.astype(np.float32)


def ck_smile_coded(ck: dict) -> np.ndarray:
    """(N,) bool: the CK+ frame's sequence is coded with both AU6 and AU12 (the gate's ground truth on CK+)."""
    return np.array([{"6", "12"} <= set(str(a).split(";")) for a in ck["aus"]])


def _fer_classifier(models_dir):
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.fer import FERClassifier

    return FERClassifier(create_session(Path(models_dir) / "fer_emotion_minixception.onnx", name="fer")[0])


def happy_scores(models_dir, crops: np.ndarray, pad: float = 0.15) -> np.ndarray:
    """P(happy) as the product's AU stage computes it: the FER classifier on the unpadded centre of each AU crop
    (:func:`smile2pay.vision.au.centre_crop`)."""
    from smile2pay.vision.au import centre_crop

    return _fer_classifier(models_dir).happy([centre_crop(c, pad) for c in crops])


def calibration_populations(model, fer: dict, lfw: dict, masks: dict, lfw_probs: np.ndarray | None = None,
                            models_dir=None, fer_valid_probs: np.ndarray | None = None) -> list:
    """The held-out calibration populations of the gate, scored by ``model`` (trained on none of them): FER+ Valid
    single frames and LFW calibration-people neutral -> probe pairs. ``lfw_probs``: the model's probabilities on
    every LFW face when already computed (fused already when ``models_dir`` is given); ``fer_valid_probs`` the same
    for the FER+ Valid faces with usable votes, in mask order. ``models_dir``: fuse the expression classifier's
    P(happy) in, as the product's AU stage does."""
    from ..train.au_mix import fer_smile_target

    _, usable = fer_smile_target(fer["votes"])
    fv = np.flatnonzero(masks["fer_valid"] & usable)
    if fer_valid_probs is not None:
        m = model if hasattr(model, "au_names") else load_au_model(model)
        pv, names = fer_valid_probs, list(m.au_names)
    else:
        pv, names = model_scores(model, fer["crops"][fv])
        if models_dir is not None:
            pv = fuse_matrix(pv, names, happy_scores(models_dir, fer["crops"][fv]))
    fer_pr = probes_of("ferplus_valid", pv, names, np.arange(len(fv)), fer["votes"][fv, :8].argmax(1) == 1)
    if lfw_probs is not None:
        pl = lfw_probs
    else:
        pl = model_scores(model, lfw["crops"])[0]
        if models_dir is not None:
            pl = fuse_matrix(pl, names, happy_scores(models_dir, lfw["crops"]))
    lc = [(a, b, k) for a, b, k in lfw_pairs(lfw, masks["lfw_calib"]) if k != "neutral"]
    lfw_pr = probes_of("lfw_calib_pairs", pl, names, [b for _, b, _ in lc], [k == "smile" for _, _, k in lc],
                       [a for a, _, _ in lc])
    return [fer_pr, lfw_pr]


def fusion_sweep(model, fer: dict, lfw: dict, masks: dict, models_dir, lfw_raw: np.ndarray, lfw_happy: np.ndarray,
                 grid=(1.0, 0.9, 0.8, 0.7, 0.6, 0.5)) -> dict:
    """Smile AUC of min(AU6, AU12) fused at each AU-model weight of ``grid`` on the calibration populations only
    (FER+ Valid single frames, LFW calibration people; never a report set) and the weight with the best
    worst-case AUC over them: how :data:`smile2pay.vision.au.FUSION_WEIGHT` is chosen for a model."""
    from smile2pay.vision.au import fuse_logits

    from ..train.au_mix import fer_smile_target

    _, usable = fer_smile_target(fer["votes"])
    fv = np.flatnonzero(masks["fer_valid"] & usable)
    pv, names = model_scores(model, fer["crops"][fv])
    hv = happy_scores(models_dir, fer["crops"][fv])
    lc = np.flatnonzero(masks["lfw_calib"] & (lfw["smile"] >= 0))
    j6, j12 = names.index("AU6"), names.index("AU12")
    pops = {"ferplus_valid": (pv, hv, fer["votes"][fv, :8].argmax(1) == 1),
            "lfw_calib_people": (lfw_raw[lc], lfw_happy[lc], lfw["smile"][lc] == 1)}
    out = {}
    for w in grid:
        out[str(w)] = {k: _auc(y, np.minimum(fuse_logits(P[:, j6], h, w), fuse_logits(P[:, j12], h, w)))
                       for k, (P, h, y) in pops.items()}
    best = max(grid, key=lambda w: (min(out[str(w)].values()), w))
    return {"auc": out, "best_worst_case_weight": best}


def fer_scores(models_dir, crops: np.ndarray) -> dict:
    """P(happy) of the FER classifier on the AU crop (pad 0.15) and on its centre (pad 0: the ArcFace box, what
    the product's AU stage feeds it)."""
    fer = _fer_classifier(models_dir)
    return {"pad0.15": fer.happy(list(crops)), "pad0": happy_scores(models_dir, crops)}


def fer_raw_scores(models_dir, paths) -> np.ndarray:
    import cv2

    return _fer_classifier(models_dir).happy([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])


def teacher_scores(bs: np.ndarray) -> dict:
    from smile2pay.vision.au import blendshapes_to_au_array

    a = blendshapes_to_au_array(bs, list(RULE_AUS))
    return {"AU12": a[:, 1], "min_AU6_AU12": a.min(1)}


def lfw_expression(lfw: dict) -> np.ndarray:
    """'smile' / 'neutral' / 'other' / '' per LFW image. muxspace's label of another expression (``OTHER_LFW``)
    comes first, even where Morishita's curated label says smile (the two sources disagree on a few photos:
    ``smile_gate_product.py``'s ``other_pairs_by_label_source``); otherwise Morishita's smile label where it exists,
    else muxspace's happiness / neutral."""
    out = np.full(len(lfw["path"]), "", dtype=object)
    for i, (lab, sm) in enumerate(zip(lfw["label"], lfw["smile"])):
        if lab in OTHER_LFW:
            out[i] = "other"
        elif sm == 1 or (sm < 0 and lab == "happiness"):
            out[i] = "smile"
        elif sm == 0 or (sm < 0 and lab == "neutral"):
            out[i] = "neutral"
    return out


def lfw_pairs(lfw: dict, mask: np.ndarray, max_per_person: int = 6) -> list[tuple[int, int, str]]:
    """(neutral index, probe index, kind) of one person: kind 'smile', 'other' or 'neutral'."""
    expr = lfw_expression(lfw)
    by = defaultdict(list)
    for i in np.flatnonzero(mask):
        if expr[i]:
            by[lfw["subject"][i]].append(i)
    out = []
    for _, idx in sorted(by.items()):
        neu = [i for i in idx if expr[i] == "neutral"]
        for n in neu[:2]:
            probes = [j for j in idx if j != n][:max_per_person]
            out += [(n, j, expr[j]) for j in probes]
    return out


def enrolled_baseline(neutral, policy) -> dict | None:
    """The baseline ``verify()`` reads for a user enrolled from the ``neutral`` photo
    (:class:`smile2pay.decision.engine.FrameObs`): its AU stage probabilities and probe logit, as ``enroll`` stores
    them, on the policy's judged scale."""
    from smile2pay.decision import engine

    return engine.judged_baseline({**neutral.au_probs, "smile_probe": neutral.smile_probe}, policy)


def product_pair_passes(neutral, probe, rule, policy, enrolled: bool) -> bool:
    """One neutral -> probe photo pair judged as the product judges a two-frame burst
    (:func:`smile2pay.decision.engine.judge_frames`): the first frame clearly neutral, the second the pattern as a
    change from it; with ``enrolled``, for a user enrolled from the neutral photo (:func:`enrolled_baseline`).
    ``neutral`` / ``probe``: :class:`smile2pay.decision.engine.FrameObs`."""
    from smile2pay.decision import engine

    probs = [engine.judged_probs(o, policy) for o in (neutral, probe)]
    base = enrolled_baseline(neutral, policy) if enrolled else None
    present, absent, _ = engine.judge_frames(probs, rule, policy, base)
    return bool(absent[0] and present[1])


def ck_pairs(ck: dict, data_dir, kinds: tuple[str, ...] = ("smile", "other")) -> list[tuple[int, int, bool]]:
    """(neutral row, peak row, is a smile) of the CK+ neutral -> peak pairs whose kind
    (:func:`smile2pay_tools.bench.clips.ck_kind`) is in ``kinds``: by default smiles and other expressions,
    without the happy-labelled sequences not coded AU6+AU12 (``kinds=("ambiguous",)`` gives those)."""
    from .clips import ck_kind

    rows = list(csv.DictReader(open(Path(data_dir) / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv",
                                    encoding="utf-8")))
    row = {str(p).split("/ckplus_neutral_peak48/", 1)[1]: i for i, p in enumerate(ck["path"])
           if "/ckplus_neutral_peak48/" in str(p)}
    out = []
    for r in rows:
        a, b = r["neutral_path"].split("/", 1)[1], r["peak_path"].split("/", 1)[1]
        kind = ck_kind(r)
        if a in row and b in row and kind in kinds:
            out.append((row[a], row[b], kind == "smile"))
    return out


def oof_probs(run_dir: Path, n: int, k: int = 5) -> np.ndarray | None:
    probs = None
    for f in range(k):
        z = run_dir / "cv" / f"fold{f}" / "oof.npz"
        if not z.is_file():
            return None
        d = np.load(z)
        if probs is None:
            probs = np.full((n, d["probs"].shape[1]), np.nan, np.float32)
        probs[d["idx"]] = d["probs"]
    return probs


def ece_block(p, y) -> dict:
    from smile2pay.metrics.calibration_error import expected_calibration_error, reliability_bins

    return {"ece": round(expected_calibration_error(p, y), 4), "bins": reliability_bins(p, y)}


def probes_of(name, P, names, idx_probe, y, idx_neutral=None):
    from smile2pay.decision.au_calibration import Probes

    j = [names.index(a) for a in RULE_AUS]
    probe = P[idx_probe][:, j]
    neutral = P[idx_neutral][:, j] if idx_neutral is not None else np.full_like(probe, np.nan)
    return Probes(name, RULE_AUS, probe, neutral, neutral.copy(), np.asarray(y, bool))


def run(args) -> dict:
    from ..train.au_mix import fer_smile_target, load_sources, source_masks

    t0 = time.time()
    run_dir = Path(args.run)
    ck, fer, lfw = load_sources(args.data, args.models, run_dir / "cache", progress=False)
    masks = source_masks(fer, lfw)
    onnx = Path(args.onnx) if args.onnx else run_dir / "au_mobile.onnx"
    res: dict = {"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/au_cross_population.py "
                 + " ".join(sys.argv[1:]), "model": str(onnx), "sets": {}}
    from smile2pay.models.store import sha256_file

    res["model_sha256"] = sha256_file(onnx)

    # --- the test sets -------------------------------------------------------------------------
    share, usable = fer_smile_target(fer["votes"])
    fer_major = fer["votes"][:, :8].argmax(1)
    sets = {}
    oof = oof_probs(run_dir, len(ck["crops"]))
    ck_y = ck_smile_coded(ck)
    sets["ckplus_subject_held_out"] = dict(idx=np.arange(len(ck["crops"])), y=ck_y, src=ck)
    ft = np.flatnonzero(masks["fer_test"] & usable)
    sets["ferplus_test_dedup"] = dict(idx=ft, y=fer_major[ft] == 1, src=fer)
    lt = np.flatnonzero(masks["lfw_test"] & (lfw["smile"] >= 0))
    sets["lfw_test_people"] = dict(idx=lt, y=lfw["smile"][lt] == 1, src=lfw)

    if oof is None:
        raise SystemExit(f"{run_dir}/cv/fold*/oof.npz missing: run train-au --recipe v3 --cv 5 first")
    model = load_au_model(onnx)
    names = list(model.au_names)
    fusion = not getattr(args, "no_fusion", False)
    res["au_stage"] = "AU model fused with FER P(happy) (smile2pay.vision.au.fuse_happy)" if fusion else "AU model alone"
    Pl_raw, _ = model_scores(model, lfw["crops"])       # every LFW face once: test people here, calibration below
    Hl = happy_scores(args.models, lfw["crops"])
    Hck = happy_scores(args.models, ck["crops"])
    Pl = fuse_matrix(Pl_raw, names, Hl if fusion else None)
    res["fusion_weight_sweep"] = fusion_sweep(model, fer, lfw, masks, args.models, Pl_raw, Hl)
    print("fusion weight sweep (calibration populations):", json.dumps(res["fusion_weight_sweep"]), flush=True)
    oof_raw, oof = oof, fuse_matrix(oof, names, Hck if fusion else None)
    scored = {}
    for k, s in sets.items():
        src, idx = s["src"], s["idx"]
        crops = src["crops"][idx]
        if k.startswith("ckplus"):
            P_raw, H = oof_raw[idx], Hck[idx]
        elif k.startswith("lfw"):
            P_raw, H = Pl_raw[idx], Hl[idx]
        else:
            P_raw, H = model_scores(model, crops)[0], happy_scores(args.models, crops)
        P = fuse_matrix(P_raw, names, H if fusion else None)
        j6, j12 = names.index("AU6"), names.index("AU12")
        sc = {"model_min_AU6_AU12": np.minimum(P[:, j6], P[:, j12]), "model_AU12": P[:, j12],
              "au_model_alone_min_AU6_AU12": np.minimum(P_raw[:, j6], P_raw[:, j12])}
        t = teacher_scores(src["blendshapes"][idx])
        sc["teacher_AU12"], sc["teacher_min_AU6_AU12"] = t["AU12"], t["min_AU6_AU12"]
        # the classifier alone: on the padded AU crop, and on its centre (= H, what the AU stage fuses)
        sc["fer_happy_crop_pad0.15"] = _fer_classifier(args.models).happy(list(crops))
        sc["fer_happy_crop_pad0"] = H
        if k.startswith("ferplus"):
            sc["fer_happy_raw48"] = fer_raw_scores(args.models, src["path"][idx])
        y = s["y"]
        aucs = {n: _auc(y, v) for n, v in sc.items()}
        best_teacher = max(aucs["teacher_AU12"], aucs["teacher_min_AU6_AU12"])
        best_fer = max(v for n, v in aucs.items() if n.startswith("fer_"))
        ent = {"images": int(len(idx)), "smiles": int(y.sum()), "auc": aucs,
               "smile_score_auc": aucs["model_min_AU6_AU12"],
               "au_model_alone_auc": aucs["au_model_alone_min_AU6_AU12"], "best_teacher_auc": best_teacher,
               "best_fer_auc": best_fer,
               "target_met": bool(aucs["model_min_AU6_AU12"] >= 0.98 and aucs["model_min_AU6_AU12"] > best_teacher
                                  and aucs["model_min_AU6_AU12"] > best_fer),
               "calibration_smile_score": ece_block(sc["model_min_AU6_AU12"], y)}
        if k.startswith("ckplus"):
            from sklearn.metrics import f1_score

            ent["label"] = "subject-held-out (out-of-fold)"
            per_au = {}
            for j, n in enumerate(names):
                yy = np.array([n[2:] in str(a).split(";") for a in ck["aus"]])
                if 0 < yy.sum() < len(yy):
                    per_au[n] = {"positives": int(yy.sum()), "auc": _auc(yy, P_raw[:, j]),
                                 "f1_at_0.5": round(float(f1_score(yy, P_raw[:, j] >= 0.5)), 4),
                                 "ece": round(ece_block(P_raw[:, j], yy)["ece"], 4)}
            ent["per_au"] = per_au                       # the AU model's own outputs (before the fusion)
        elif k.startswith("ferplus"):
            ent["label"] = ("FER2013Test minus pixel-identical train/valid images and in-test repeats; usable votes; "
                            f"detected {len(fer['path'])}/{fer['n_requested']} FER+ images")
            ent["calibration_happiness_share"] = ece_block(np.minimum(P[:, j6], P[:, j12]), share[idx] >= 0.5)
        else:
            ent["label"] = "LFW people held out of training and calibration (crc32(name) % 4 in {0, 1})"
        res["sets"][k] = ent
        scored[k] = (P, y)
        print(f"{k:26s} n={len(idx):5d} smiles={int(y.sum()):4d}  gate score {aucs['model_min_AU6_AU12']}  "
              f"AU model alone {aucs['au_model_alone_min_AU6_AU12']}  "
              f"teacher {best_teacher}  FER {best_fer}", flush=True)

    # --- the gate: calibrate on the mix, report on the test populations ---------------------------
    from smile2pay.decision.au_calibration import calibrate, calibration_section, rates

    ckp = ck_pairs(ck, args.data)
    ck_probes = probes_of("ckplus_oof_pairs", oof, names, [b for _, b, _ in ckp], [s for _, _, s in ckp],
                          [a for a, _, _ in ckp])
    fer_probes, lfw_cal = calibration_populations(model, fer, lfw, masks, Pl, models_dir=args.models if fusion else None)
    # a payment is a burst (a neutral frame, then the smile, and the enrolled baseline): its operating point is
    # chosen on the paired populations; single-frame mode (no neutral reference) gets its own, on FER+ Valid
    from smile2pay.decision.au_calibration import MIN_DELTA

    min_delta = MIN_DELTA if getattr(args, "min_delta", None) is None else float(args.min_delta)
    cal = calibrate([ck_probes, lfw_cal], max_fpr=args.max_fpr, min_delta=min_delta)
    cal1 = calibrate([fer_probes], max_fpr=args.max_fpr, grid_delta=(0.0,), grid_absent=(0.5,), min_delta=0.0)
    ts = [cal["thresholds"][a] for a in RULE_AUS]
    ts1 = [cal1["thresholds"][a] for a in RULE_AUS]
    gate = {"burst": {"chosen_on": cal["populations"], "thresholds": cal["thresholds"], "delta": cal["delta"],
                      "absent_threshold": cal["absent_threshold"]},
            "single_frame": {"chosen_on": cal1["populations"], "thresholds": cal1["thresholds"]},
            "max_fpr_on_each_calibration_population": args.max_fpr}
    lp = lfw_pairs(lfw, masks["lfw_test"])
    for kind in ("other", "neutral"):
        sub = [(a, b, k) for a, b, k in lp if k in ("smile", kind)]
        pr = probes_of(f"lfw_test_pairs_{kind}", Pl, names, [b for _, b, _ in sub], [k == "smile" for _, _, k in sub],
                       [a for a, _, _ in sub])
        gate[f"lfw_test_neutral_to_smile_vs_{kind}"] = {**rates(pr, ts, cal["delta"], cal["absent_threshold"]),
                                                        "people": len({lfw["subject"][b] for _, b, _ in sub})}
    # the smile probes by where their label comes from: Morishita's binary smile label (curated) or only
    # muxspace's "happiness" (which also holds faint closed-mouth smiles)
    by_source = {}
    for src, keep in (("morishita_smile", lambda b: lfw["smile"][b] == 1),
                      ("muxspace_happiness_only", lambda b: lfw["smile"][b] < 0)):
        sub = [(a, b, k) for a, b, k in lp if k == "smile" and keep(b)]
        pr = probes_of(f"lfw_test_pairs_{src}", Pl, names, [b for _, b, _ in sub], [True] * len(sub),
                       [a for a, _, _ in sub])
        by_source[src] = rates(pr, ts, cal["delta"], cal["absent_threshold"])
    gate["lfw_test_neutral_to_smile_by_label_source"] = by_source
    # a ceiling: the best smile rate any threshold on the probe's min(AU6, AU12) reaches at max_fpr of the other
    # expressions, the threshold chosen on these test pairs themselves (an oracle, not an operating point)
    j6, j12 = names.index("AU6"), names.index("AU12")
    sub = [(b, k == "smile") for _, b, k in lp if k in ("smile", "other")]
    sc = np.array([min(Pl[b, j6], Pl[b, j12]) for b, _ in sub])
    yy = np.array([y for _, y in sub])
    neg = np.sort(sc[~yy])[::-1]
    k_allowed = int(np.floor(args.max_fpr * len(neg)))
    t_or = neg[k_allowed] if k_allowed < len(neg) else -np.inf
    gate["lfw_test_oracle_threshold_on_test_pairs"] = {"tpr": float((sc[yy] > t_or).mean()),
                                                       "fpr": float((sc[~yy] > t_or).mean()),
                                                       "threshold": float(t_or)}
    P_ft, y_ft = scored["ferplus_test_dedup"]
    pr = probes_of("ferplus_test", P_ft, names, np.arange(len(y_ft)), y_ft)
    gate["ferplus_test_single_frame"] = rates(pr, ts1, 0.0, 0.5)
    gate["ferplus_test_at_burst_thresholds"] = rates(pr, ts, cal["delta"], cal["absent_threshold"])
    gate["ckplus_oof_pairs (thresholds chosen on these too: in-sample for the operating point)"] = rates(
        ck_probes, ts, cal["delta"], cal["absent_threshold"])
    # happy-labelled CK+ sequences not coded AU6+AU12: in neither the smiles nor the others above
    from .clips import CK_AMBIGUOUS_NOTE

    amb = ck_pairs(ck, args.data, kinds=("ambiguous",))
    amb_probes = probes_of("ckplus_oof_ambiguous", oof, names, [b for _, b, _ in amb], [True] * len(amb),
                           [a for a, _, _ in amb])
    gate["ckplus_oof_happy_not_coded_au6_au12"] = {**rates(amb_probes, ts, cal["delta"], cal["absent_threshold"]),
                                                   "note": CK_AMBIGUOUS_NOTE + "; 'tpr' = share of them that pass"}
    res["gate"] = gate
    print(json.dumps(gate, indent=1), flush=True)
    if args.write_calibration:
        cal_path = Path(args.write_calibration)
        c = json.loads(cal_path.read_text())
        au, change = calibration_section(cal, note=f"{res['command']} ({res['date']}), model {res['model_sha256'][:8]}, "
                                                   f"AU stage: {res['au_stage']}")
        c["au"], c["au_change"] = au, change
        c["au_single_frame"] = {a: {"threshold": round(t, 4), "chosen_at": cal1["populations"]}
                                for a, t in cal1["thresholds"].items()}
        from smile2pay.decision.policy import write_calibration

        write_calibration(cal_path, c)
        res["wrote_calibration"] = str(cal_path)
    res["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    if args.png:
        reliability_png(res, args.png)
    return res


def reliability_png(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = res["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 4.0))
    for ax, (k, v) in zip(np.atleast_1d(axes), sets.items()):
        b = [x for x in v["calibration_smile_score"]["bins"] if x["n"]]
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
        ax.plot([x["mean_p"] for x in b], [x["freq"] for x in b], marker="o", label="min(AU6, AU12)")
        ax.set_title(f"{k}\nAUC {v['smile_score_auc']}, ECE {v['calibration_smile_score']['ece']}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed smile rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv=None):
    import os

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="results/au3", help="train-au --recipe v3 output folder (caches, cv/)")
    ap.add_argument("--onnx", help="model to score FER+/LFW with (default RUN/au_mobile.onnx)")
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap.add_argument("--max-fpr", type=float, default=0.015)
    ap.add_argument("--min-delta", type=float, default=None,
                    help="smallest required rise the paired calibration may choose (default: "
                         "smile2pay.decision.au_calibration.MIN_DELTA, above a still's flicker)")
    ap.add_argument("--no-fusion", action="store_true",
                    help="the AU model alone (no FER P(happy) fused into AU6 / AU12): the gate before 2026-12-06")
    ap.add_argument("--write-calibration", help="calibration JSON whose au/au_change sections to (re)write")
    ap.add_argument("--out", default="benchmarks/results/au_cross_population.json")
    ap.add_argument("--png", default="docs/img/au_reliability.png")
    logging.basicConfig(level=logging.WARNING)
    return run(ap.parse_args(argv))
