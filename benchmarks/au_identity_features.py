"""Is the identity network a better smile feature than the AU network? (issue 14; the probe ships since 2026-12-07)

A linear probe (L2 logistic regression, :mod:`smile2pay_tools.train.id_teacher`) on pooled inner feature maps
of the pack's recogniser ``w600k_mbf.onnx``, trained on the AU model's own training rows only (FER+ training
split with usable votes, LFW training-quarter people), reported on the issue's test populations beside the
AU stage's score and its anchors, same images, same run. Since probe v3 (16th stop) the ``509`` features are the
smile tail's (``--tail``, default: the one the shipped probe names; ``--tail none``: the recogniser's own):

* FER+ test, deduplicated (majority happiness), LFW test people (Morishita smile label), and CK+ (every frame:
  the probe never saw a CK+ face, so CK+ is a wholly unseen lab population for it; the AU rows are the
  out-of-fold scores of ``train-au --recipe v3 --cv 5``);
* scores: the AU stage's score (AU model fused with the FER classifier: the gate before the probe), the AU model
  alone, the FER classifier's P(happy), the blendshape teacher's mouthSmile, the probe, and the probe fused with the
  AU stage's score (sum of logits at probe weights 0.15 (the shipped burst fusion since v3) / 0.2 / 0.3 / 0.5 / 0.7);
* ROC AUC, and the share of smiles above the score that lets 2 % of the other faces through (chosen on the test
  set itself: a ranking figure, not an operating point);
* the gate recalibrated at probe weights 0 / 0.2-0.5 as ``au_cross_population.py`` calibrates the AU stage, and its
  rates on the test populations (``gate_offline``);
* ``--distill RUN ...``: the per-epoch monitors of ``train-au`` base stages trained with the probe as a soft
  teacher (``distill_weight``), beside the v3 base (``results/au3``).

``--probe-ck``: the probe also learns from CK+ (coded AU6+AU12 vs not), each CK+ frame scored by the probe of
the subject fold that left it out (train-au's folds), FER+ / LFW by the one fitted with all of CK+; JSON
``benchmarks/results/au_identity_features_probe_ck.json``. With ``--export-probe FILE`` that probe is written for
the product (``smile2pay/models/weights/smile_probe.npz``), with ``--write-calibration FILE`` the fused gate's
operating point (``au_probe``) at the weight chosen on the calibration populations (:func:`pick_weight`).

Usage:
    python benchmarks/au_identity_features.py [--run results/au3] [--distill results/au4 results/au4b results/au5a]

The distillation runs compared are base stages only: ``smile2pay train-au --out results/au4 --cv 5 --folds
--skip-final --distill-weight 0.5`` (``results/au4b``: 1.0; ``results/au5a``: 0.5 with ``--width 48``).

Writes ``benchmarks/results/au_identity_features.json``. Features are cached in RUN/cache (never committed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float = 0.02) -> float:
    """Share of positives strictly above the score that lets ``floor(fpr * negatives)`` negatives through."""
    neg = np.sort(s[~y])[::-1]
    k = int(np.floor(fpr * len(neg)))
    t = neg[k] if k < len(neg) else -np.inf
    return round(float((s[y] > t).mean()), 4)


def gate_offline(ck, fer, lfw, masks, model, names, oof, probe, models_dir, data_dir,
                 weights=(0.0, 0.2, 0.3, 0.4, 0.5), rise_scale: str = "probability") -> dict:
    """The payment gate's AU judgement with AU6 / AU12 = the AU stage's scores fused with the probe,
    ``sigmoid((1 - w) logit(AU stage) + w probe)`` (what the product does on embedded frames,
    :func:`smile2pay.decision.engine.fuse_probe`), recalibrated exactly as ``au_cross_population.py`` does
    (bursts: CK+ out-of-fold pairs + LFW calibration people at FPR <= 2 % each; single frames: FER+ Valid) and
    reported on the same test populations, offline on the cached crops. w = 0 reproduces the AU stage's gate.
    ``rise_scale``: the scale the bursts' rises are judged on (:func:`smile2pay.decision.au_calibration.rise`;
    its own delta / absence grids and flicker floor)."""
    from smile2pay.decision.au_calibration import calibrate, gate, rates
    from smile2pay_tools.bench import label_ceiling as ceiling
    from smile2pay_tools.bench import au_population as ap
    from smile2pay_tools.train.au_mix import fer_smile_target

    _, usable = fer_smile_target(fer["votes"])
    fv = np.flatnonzero(masks["fer_valid"] & usable)
    ft = np.flatnonzero(masks["fer_test"] & usable)
    lfw_raw, lfw_h = ap.model_scores(model, lfw["crops"])[0], ap.happy_scores(models_dir, lfw["crops"])
    ck_h = ap.happy_scores(models_dir, ck["crops"])
    fer_rows = np.concatenate([fv, ft])
    fer_raw, fer_h = ap.model_scores(model, fer["crops"][fer_rows])[0], ap.happy_scores(models_dir, fer["crops"][fer_rows])

    def fuse(P, H, pr, w):
        return ap.fuse_probe_matrix(ap.fuse_matrix(P, names, H), names, pr, w)

    ckp = ap.ck_pairs(ck, data_dir)
    lc = [(a, b, k) for a, b, k in ap.lfw_pairs(lfw, masks["lfw_calib"]) if k != "neutral"]
    lt = [(a, b, k) for a, b, k in ap.lfw_pairs(lfw, masks["lfw_test"]) if k in ("smile", "other")]
    out = {}
    for w in weights:
        Qck, Ql = fuse(oof, ck_h, probe["ck"], w), fuse(lfw_raw, lfw_h, probe["lfw"], w)
        Qf = fuse(fer_raw, fer_h, probe["fer"][fer_rows], w)
        ck_pr = ap.probes_of("ck", Qck, names, [b for _, b, _ in ckp], [s_ for _, _, s_ in ckp], [a for a, _, _ in ckp])
        lfw_cal = ap.probes_of("lfw_calib", Ql, names, [b for _, b, _ in lc], [k == "smile" for _, _, k in lc],
                               [a for a, _, _ in lc])
        fer_cal = ap.probes_of("fer_valid", Qf[:len(fv)], names, np.arange(len(fv)), fer["votes"][fv, :8].argmax(1) == 1)
        try:
            cal = calibrate([ck_pr, lfw_cal], max_fpr=0.02, rise_scale=rise_scale)
            cal1 = calibrate([fer_cal], max_fpr=0.02, grid_delta=(0.0,), grid_absent=(0.5,), min_delta=0.0)
        except ValueError as e:
            out[str(w)] = {"error": str(e)}
            print(f"gate, probe weight {w}: {e}")
            continue
        ts = [cal["thresholds"][a] for a in ("AU6", "AU12")]
        ts1 = [cal1["thresholds"][a] for a in ("AU6", "AU12")]
        pr = ap.probes_of("lfw_test", Ql, names, [b for _, b, _ in lt], [k == "smile" for _, _, k in lt], [a for a, _, _ in lt])
        r_l = rates(pr, ts, cal["delta"], cal["absent_threshold"], rise_scale)
        pr_f = ap.probes_of("fer_test", Qf[len(fv):], names, np.arange(len(ft)), fer["votes"][ft, :8].argmax(1) == 1)
        r_f = rates(pr_f, ts1, 0.0, 0.5)
        # the same decisions against the majority of nine of the ten votes, beside one annotator (label_ceiling)
        r_f9 = ceiling.decisions_vs_rest(fer["votes"][ft], gate(pr_f, ts1, 0.0, 0.5))
        r_c = rates(ck_pr, ts, cal["delta"], cal["absent_threshold"], rise_scale)
        pick = lambda r: {"smiles_passed": round(float(r["tpr"]), 4), "others_passed": round(float(r["fpr"]), 4)}
        out[str(w)] = {"burst_thresholds": cal["thresholds"], "delta": cal["delta"], "absent": cal["absent_threshold"],
                       "rise_scale": rise_scale,
                       "single_frame_thresholds": cal1["thresholds"],
                       "calibration_populations": cal["populations"],
                       "single_frame_calibration": cal1["populations"],
                       "lfw_test_neutral_to_smile_vs_other": pick(r_l), "ferplus_test_single_frame": pick(r_f),
                       "ferplus_test_single_frame_vs_nine_votes": r_f9,
                       "ckplus_oof_pairs (operating point chosen on them too)": pick(r_c)}
        print(f"gate, probe weight {w}: LFW test pairs {pick(r_l)}, FER+ test {pick(r_f)} (vs nine votes "
              f"{r_f9['tpr']} / {r_f9['fpr']}), CK+ OOF pairs {pick(r_c)}", flush=True)
    return out


def timings(models_dir, rounds: int = 8, per_round: int = 50, tail=None) -> dict:
    """Median / p95 ms of one face on one thread, interleaved in rounds (same run, same machine): the recogniser
    as the product runs it, the same graph also returning the two probe tensors (+ pooling them), the recogniser
    cut at tensor 473 on a 64 x 64 input (the cheapest stand-alone probe backbone), the AU network, and with
    ``tail`` the smile tail (473 -> 509) the probe reads through."""
    import onnx
    from onnx.utils import Extractor

    from smile2pay.models.graph import add_outputs
    from smile2pay.models.runtime import create_session
    from smile2pay_tools.train.id_teacher import FEATURE_TENSORS, pool_bands

    src = str(Path(models_dir) / "w600k_mbf.onnx")

    def graph(extra=(), cut=None, size=112):
        m = onnx.load(src)
        if cut:
            m = Extractor(m).extract_model([m.graph.input[0].name], [cut])
            dims = m.graph.input[0].type.tensor_type.shape.dim
            dims[2].dim_value = dims[3].dim_value = size
            for o in m.graph.output:
                o.type.tensor_type.ClearField("shape")
            del m.graph.value_info[:]
        data = add_outputs(m.SerializeToString(), extra) if extra else m.SerializeToString()
        return create_session(data, threads=1, name="timing")[0], (1, 3, size, size)

    import smile2pay

    au = Path(smile2pay.__file__).parent / "models" / "weights" / "au_mobile.onnx"
    cases = {"identity_forward": graph(), "identity_forward_with_probe_tensors": graph(FEATURE_TENSORS),
             "recogniser_cut_at_473_input_64": graph(cut="473", size=64),
             "au_network": (create_session(str(au), threads=1, name="au")[0], (1, 3, 64, 64))}
    if tail is not None:
        sess = create_session(Path(tail).read_bytes(), threads=1, name="tail")[0]
        cases[f"smile_tail_{sess.get_inputs()[0].name[1:]}_to_509"] = (sess, (1, 256, 14, 14))
    t = {k: [] for k in cases}
    t["pooling_the_probe_tensors"] = []
    rng = np.random.RandomState(0)
    for _ in range(rounds):
        for k, (sess, shape) in cases.items():
            x = rng.randn(*shape).astype(np.float32)
            name = sess.get_inputs()[0].name
            for _ in range(5):
                sess.run(None, {name: x})
            for _ in range(per_round):
                t0 = time.perf_counter()
                out = sess.run(None, {name: x})
                t[k].append(time.perf_counter() - t0)
                if k == "identity_forward_with_probe_tensors":
                    t1 = time.perf_counter()
                    np.concatenate([pool_bands(o) for o in out[1:]], 1)
                    t["pooling_the_probe_tensors"].append(time.perf_counter() - t1)
    return {k: {"median_ms": round(1000 * float(np.median(v)), 3), "p95_ms": round(1000 * float(np.percentile(v, 95)), 3),
                "n": len(v)} for k, v in t.items()}


def label_ceiling(fer, lfw, masks) -> dict:
    """How far the labels agree with themselves (smile2pay_tools.bench.label_ceiling): one FER+ annotator
    against the majority of the other nine votes on the FER+ test faces the gate is reported on, and LFW
    test people's images that carry both label sources."""
    from smile2pay_tools.bench import label_ceiling as ceiling
    from smile2pay_tools.train.au_mix import fer_smile_target

    _, usable = fer_smile_target(fer["votes"])
    ft = np.flatnonzero(masks["fer_test"] & usable)
    return {"ferplus_test_one_annotator_vs_other_nine": ceiling.one_annotator(fer["votes"][ft]),
            "lfw_test_people_two_label_sources": ceiling.lfw_agreement(lfw["label"], lfw["smile"], masks["lfw_test"]),
            "what": "one FER+ annotator judged against the majority of the other nine votes (each face weighted by "
                    "the dropped vote's probability); the gate at each probe weight is judged against the same truth "
                    "in gate_offline[w]['ferplus_test_single_frame_vs_nine_votes']. LFW: images with both sources."}


def pick_weight(gate: dict) -> str:
    """The probe weight (> 0) whose burst operating point passes the most smiles in its worst calibration
    population (CK+ out-of-fold pairs, LFW calibration people), then the most FER+ Valid single-frame smiles:
    chosen on calibration populations only, never on the report sets."""
    def key(w):
        g = gate[w]
        tb = [r["tpr"] for r in g["calibration_populations"].values() if r["tpr"] is not None]
        ts = [r["tpr"] for r in g["single_frame_calibration"].values() if r["tpr"] is not None]
        return (round(min(tb), 6), round(min(ts), 6), -float(w))
    cands = [w for w, g in gate.items() if float(w) > 0 and "error" not in g]
    if not cands:
        raise SystemExit("no probe weight has an operating point to ship")
    return max(cands, key=key)


def pick_single_frame_weight(gate: dict) -> str:
    """The probe weight (> 0) for single-frame mode: the most FER+ Valid smiles passed at its single-frame
    operating point (<= 2 % of the other expressions), then the fewest others, then the smaller weight. Chosen on
    FER+ Valid only. Single frames have their own weight because no neutral frame is judged there: the decision
    rests on one face's appearance, where the probe ranks in-the-wild smiles best, while bursts also need the AU
    stage's change from neutral on lab and LFW faces."""
    def key(w):
        r = list(gate[w]["single_frame_calibration"].values())
        return (round(min(x["tpr"] for x in r), 6), -round(max(x["fpr"] for x in r), 6), -float(w))
    cands = [w for w, g in gate.items() if float(w) > 0 and "error" not in g
             and all(x["tpr"] is not None for x in g["single_frame_calibration"].values())]
    if not cands:
        raise SystemExit("no probe weight has a single-frame operating point to ship")
    return max(cands, key=key)


def write_probe_calibration(path, res: dict, weight: str, single_weight: str = "auto") -> dict:
    """Write the ``au_probe`` section (smile2pay.decision.policy.parse_probe_section) into calibration ``path``."""
    gate = res["gate_offline"]
    w = pick_weight(gate) if weight == "auto" else str(float(weight))
    if w not in gate or "error" in gate[w]:
        raise SystemExit(f"probe weight {w} was not calibrated (have {sorted(gate)})")
    g = gate[w]
    sw = pick_single_frame_weight(gate) if single_weight == "auto" else str(float(single_weight))
    if sw not in gate or "error" in gate[sw]:
        raise SystemExit(f"probe weight {sw} was not calibrated (have {sorted(gate)})")
    g1 = gate[sw]
    cal_path = Path(path)
    c = json.loads(cal_path.read_text())
    probe = res.get("exported_probe") or {}
    c["au_probe"] = {
        "model": f"smile_probe:{probe['sha256']}" if probe else None,
        "weight": float(w), "chosen_by": "best worst calibration population (pick_weight)",
        "au": {a: {"threshold": g["burst_thresholds"][a], "absent_threshold": g["absent"]} for a in ("AU6", "AU12")},
        "au_change": {"baseline_min_delta": g["delta"], "burst_min_delta": g["delta"],
                      **({"rise_scale": g["rise_scale"]} if g.get("rise_scale", "probability") != "probability"
                         else {})},
        "single_frame_weight": float(sw),
        "single_frame_weight_chosen_by": "most FER+ Valid smiles at <= 2 % of its other expressions "
                                         "(pick_single_frame_weight)",
        "au_single_frame": {a: {"threshold": t} for a, t in g1["single_frame_thresholds"].items()},
        "chosen_at": {"bursts": g["calibration_populations"], "single_frames": g1["single_frame_calibration"]},
        "weights_tried": {k: {"calibration": v.get("calibration_populations"),
                              "single_frame_calibration": v.get("single_frame_calibration")} for k, v in gate.items()},
        "command": res["command"], "date": res["date"],
        "note": "AU6 / AU12 = sigmoid((1 - weight) logit(AU stage) + weight * probe logit) on the frames a decision "
                "embeds (smile2pay.decision.engine.fuse_probe); CK+ rows of the calibration are scored out-of-fold "
                "(probe and AU model)"}
    tmp = cal_path.with_suffix(cal_path.suffix + ".tmp")     # a reader never sees half a calibration file
    tmp.write_text(json.dumps(c, indent=1) + "\n")
    tmp.replace(cal_path)
    print(f"au_probe (weight {w}, single frames {sw}) written to {cal_path}", flush=True)
    return {"file": str(cal_path), "weight": float(w), "single_frame_weight": float(sw)}


def main(argv=None) -> dict:
    from smile2pay.decision.au_calibration import RISE_SCALES

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="results/au3", help="train-au --recipe v3 folder (caches, cv/ out-of-fold)")
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", "../shared/data"))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", "../shared/models"))
    ap.add_argument("--distill", nargs="*", default=[], help="train-au runs with distill_weight > 0 (base monitors)")
    ap.add_argument("--probe-ck", action="store_true",
                    help="train the probe on CK+ too (CK+ rows scored out-of-fold by train-au's subject folds)")
    ap.add_argument("--hard-labels", action="store_true",
                    help="FER+ rows as 0/1 majority labels (the probe shipped 2026-12-07, 10th-14th stops; with "
                         "--tail none for v1 itself); default: their happiness share as a soft target (since the 15th stop)")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
                    help="probe weights the gate is recalibrated and reported at (0: the AU stage alone)")
    ap.add_argument("--no-timings", action="store_true", help="skip the one-thread timings")
    ap.add_argument("--rise-scale", choices=RISE_SCALES, default="logit",
                    help="the scale the bursts' required rises are judged on (default logit, shipped since the 18th "
                         "stop; probability reproduces the earlier calibrations)")
    ap.add_argument("--tail", default="shipped",
                    help="smile tail file the probe's 509 features are read through (smile2pay_tools.train.smile_tail); "
                         "'shipped' (default): the one the shipped probe reads through, 'none': the recogniser's own")
    ap.add_argument("--export-probe", default=None, metavar="FILE",
                    help="write the probe fitted on every training row (with --probe-ck: CK+ too) for the product "
                         "(smile2pay/models/weights/smile_probe.npz)")
    ap.add_argument("--write-calibration", default=None, metavar="FILE",
                    help="write the fused gate's operating point (section au_probe) into this calibration file")
    ap.add_argument("--ship-weight", default="auto",
                    help="probe weight written with --write-calibration; auto: the best worst calibration population "
                         "(CK+ out-of-fold pairs, LFW calibration people), then FER+ Valid single frames")
    ap.add_argument("--ship-single-frame-weight", default="auto",
                    help="probe weight for single-frame mode written with --write-calibration; auto: the most FER+ "
                         "Valid smiles at its single-frame operating point")
    ap.add_argument("--out", default=None,
                    help="JSON (default benchmarks/results/au_identity_features.json, or ..._probe_ck.json)")
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from smile2pay.metrics.probability import logit
    from smile2pay_tools.bench.au_population import (ck_smile_coded, fuse_matrix, happy_scores, load_au_model,
                                                     model_scores, oof_probs, teacher_scores)
    from smile2pay_tools.train.au_mix import fer_smile_target, load_sources, source_masks
    from smile2pay_tools.train.id_teacher import (TEACHER_C, cached_features, fit_probe, probe_logits, probe_params,
                                                  shipped_tail, tail_layout, teacher_rows)

    t0 = time.time()
    run = Path(args.run)
    tail = None if args.tail == "none" else (shipped_tail() if args.tail == "shipped" else Path(args.tail))
    tail_sha = None
    if tail is not None:
        import hashlib

        tail_sha = hashlib.sha256(tail.read_bytes()).hexdigest()
    tail_input = tail_layout(tail)[0] if tail is not None else None
    if tail is None:
        feature_text = "w600k_mbf tensors 473 + 509, global + 3 band means (3,072)"
    elif tail_input == "473":
        feature_text = f"w600k_mbf tensor 473 + the smile tail's 509 ({tail_sha[:12]}), global + 3 band means (3,072)"
    else:
        feature_text = (f"the smile tail's 473 + 509 ({tail_sha[:12]}, from w600k_mbf tensor {tail_input}), "
                        "global + 3 band means (3,072)")
    ck, fer, lfw = load_sources(args.data, args.models, run / "cache", progress=False)
    masks = source_masks(fer, lfw)
    Xf = cached_features("ferplus", fer, run / "cache", args.models, tail=tail)
    Xl = cached_features("lfw", lfw, run / "cache", args.models, tail=tail)
    Xc = cached_features("ckplus", ck, run / "cache", args.models, tail=tail)
    fi, fy, li, ly = teacher_rows(fer, masks["fer_train"], lfw, masks["lfw_train"], soft=not args.hard_labels)
    base_X = np.concatenate([Xf[fi], Xl[li]]).astype(np.float32)
    base_y = np.concatenate([fy, ly]).astype(np.float64)
    labels = ("FER+ rows 0/1 (happiness share >= 0.5)" if args.hard_labels
              else "FER+ rows soft (happiness share of the emotion votes)") + "; LFW and CK+ rows 0/1"
    if not args.probe_ck:
        # the probe fitted on all training rows scores the held-out faces; CK+ was never a training row
        wv, bv = probe_params(base_X, base_y)
        f = probe_logits(wv, bv)
        probe = {"fer": f(Xf), "lfw": f(Xl), "ck": f(Xc)}
    else:
        # CK+ coded AU6+AU12 as a third source of rows: CK+ scored out-of-fold by train-au's subject folds (the
        # AU model's out-of-fold rows come from the same folds), FER+ / LFW by the probe fitted with all of CK+
        from smile2pay_tools.datasets import subject_folds
        from smile2pay_tools.train.au_mix import MixConfig

        cky = ck_smile_coded(ck).astype(int)
        fold_of = subject_folds(ck["subject"], k=5, seed=MixConfig().seed)
        fold = np.array([fold_of[s_] for s_ in ck["subject"]])
        pck = np.zeros(len(cky))
        for k in range(5):
            tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            pck[te] = fit_probe(np.concatenate([base_X, Xc[tr].astype(np.float32)]), np.concatenate([base_y, cky[tr]]))(Xc[te])
        wv, bv = probe_params(np.concatenate([base_X, Xc.astype(np.float32)]), np.concatenate([base_y, cky]))
        f = probe_logits(wv, bv)
        probe = {"fer": f(Xf), "lfw": f(Xl), "ck": pck}

    model = load_au_model(run / "au_mobile.onnx")
    names = list(model.au_names)
    j6, j12 = names.index("AU6"), names.index("AU12")
    share, usable = fer_smile_target(fer["votes"])
    ft = np.flatnonzero(masks["fer_test"] & usable)
    lt = np.flatnonzero(masks["lfw_test"] & (lfw["smile"] >= 0))
    oof = oof_probs(run, len(ck["crops"]))
    sets = {
        "ferplus_test_dedup": (fer, ft, fer["votes"][ft, :8].argmax(1) == 1, probe["fer"][ft], None),
        "lfw_test_people": (lfw, lt, lfw["smile"][lt] == 1, probe["lfw"][lt], None),
        ("ckplus_out_of_fold" if args.probe_ck else "ckplus_all_unseen_by_probe"): (ck, np.arange(len(ck["crops"])),
                                       ck_smile_coded(ck),
                                       probe["ck"], oof),
    }
    res: dict = {"benchmark": "au_identity_features", "date": time.strftime("%Y-%m-%d"),
                 "command": "python benchmarks/au_identity_features.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "probe": {"features": feature_text, "smile_tail_sha256": tail_sha,
                           "trained_on": {"ferplus_train_rows": int(len(fi)), "lfw_train_people_rows": int(len(li))},
                           "classifier": f"standardised, L2 logistic regression C={TEACHER_C}",
                           "labels": labels,
                           "ckplus_rows": "out-of-fold (train-au subject folds)" if args.probe_ck else "none"},
                 "sets": {}}
    for k, (src, idx, y, pr, raw) in sets.items():
        P_raw = raw[idx] if raw is not None else model_scores(model, src["crops"][idx])[0]
        H = happy_scores(args.models, src["crops"][idx])
        P = fuse_matrix(P_raw, names, H)
        gate = np.minimum(P[:, j6], P[:, j12])
        sc_ = {"au_stage_score (AU model + FER fused; the gate before the probe)": gate,
               "au_model_alone": np.minimum(P_raw[:, j6], P_raw[:, j12]),
               "fer_classifier_happy": H,
               "blendshape_teacher_mouthSmile": teacher_scores(src["blendshapes"][idx])["AU12"],
               "identity_probe": pr}
        for w in (0.15, 0.2, 0.3, 0.5, 0.7):
            sc_[f"gate + probe, probe weight {w}"] = (1 - w) * logit(gate) + w * pr
        ent = {"images": int(len(idx)), "smiles": int(y.sum()),
               "auc": {n: round(float(roc_auc_score(y, s)), 4) for n, s in sc_.items()},
               "smiles_passed_at_2pct_others": {n: tpr_at_fpr(y, np.asarray(s, np.float64)) for n, s in sc_.items()}}
        res["sets"][k] = ent
        print(f"{k:30s} n={len(idx):5d} smiles={int(y.sum()):4d}", flush=True)
        for n in sc_:
            print(f"    {n:45s} AUC {ent['auc'][n]:.4f}   smiles at 2% others {ent['smiles_passed_at_2pct_others'][n]:.3f}")
    res["timings_one_thread"] = {} if args.no_timings else timings(args.models, tail=tail)
    for k, v in res["timings_one_thread"].items():
        print(f"    {k:40s} median {v['median_ms']:.2f} ms  p95 {v['p95_ms']:.2f} ms", flush=True)
    res["gate_offline"] = gate_offline(ck, fer, lfw, masks, model, names, oof, probe, args.models, args.data,
                                       weights=tuple(args.weights), rise_scale=args.rise_scale)
    res["label_ceiling"] = label_ceiling(fer, lfw, masks)
    one = res["label_ceiling"]["ferplus_test_one_annotator_vs_other_nine"]
    print(f"label ceiling: one FER+ annotator vs the other nine votes: smiles {one['tpr']}, others {one['fpr']}",
          flush=True)
    if args.export_probe:
        from smile2pay_tools.train.id_teacher import save_probe

        meta = {"trained_on": {"ferplus_train_rows": int(len(fi)), "lfw_train_people_rows": int(len(li)),
                               "ckplus_rows": int(len(Xc)) if args.probe_ck else 0},
                "classifier": f"standardised (folded into w), L2 logistic regression C={TEACHER_C}",
                "labels": labels,
                "features": feature_text, "smile_tail_sha256": tail_sha,
                "command": res["command"], "date": res["date"]}
        sha = save_probe(args.export_probe, wv, bv, meta, tail_sha256=tail_sha, tail_input=tail_input)
        res["exported_probe"] = {"file": args.export_probe, "sha256": sha, "size": Path(args.export_probe).stat().st_size}
        print(f"probe written to {args.export_probe} (sha256 {sha})", flush=True)
    if args.write_calibration:
        res["wrote_calibration"] = write_probe_calibration(args.write_calibration, res, args.ship_weight,
                                                           args.ship_single_frame_weight)
    dist = {}
    for r in [args.run] + list(args.distill):
        p = Path(r) / "summary.json"
        if p.is_file():
            s = json.loads(p.read_text())
            hist = s.get("base", {}).get("history", [])
            dist[r] = {"distill_weight": s.get("config", {}).get("distill_weight", 0.0),
                       "width": s.get("config", {}).get("width"), "base_epochs": s.get("config", {}).get("base_epochs"),
                       "smile_teacher": s.get("smile_teacher"),
                       "base_monitors": [{k: h.get(k) for k in ("epoch", "auc_fer_valid", "auc_lfw_calib")} for h in hist]}
    if dist:
        res["distillation_base_monitors"] = dist
        for r, d in dist.items():
            last = d["base_monitors"][-1] if d["base_monitors"] else {}
            print(f"base {r} (distill_weight {d['distill_weight']}, width {d['width']}): last epoch {last}")
    res["seconds"] = round(time.time() - t0, 1)
    out = Path(args.out or ("benchmarks/results/au_identity_features_probe_ck.json" if args.probe_ck
                            else "benchmarks/results/au_identity_features.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
