"""Detection in a window for bursts (issue: latency): what it costs in accuracy, measured against the whole frame.

A burst detects its first frame on the whole frame and then every frame inside one window around that face at a
small scale (``Settings.window_face_px``, smile2pay.vision.track.Window). This benchmark runs the same inputs
both ways, same run:

* ``lfw``: LFW View-2 (10 folds x 600 official pairs). Side A as enrolment sees it (whole frame, centre face);
  side B as a burst's frame sees it: the whole-frame detection finds the face, then the face is detected again
  in its window and aligned from those landmarks. 10-fold accuracy, TAR/FAR at the shipped FAR-1e-4 threshold,
  against side B from the whole frame (the cached embeddings of ``benchmarks/lfw_verify.py``).
* ``ckplus``: CK+ neutral -> peak sequences as 4-frame camera-like bursts (two noisy copies of the neutral frame,
  two of the peak, 640x480 canvas; ``smile2pay_tools.bench.stream.ck_cases``: genuine smiles, an impostor's smile
  per smile, the subject's own neutral held, other expressions), through ``Smile2Pay.verify`` with windows
  off (0) and on, PAD off. Approvals by kind with reasons, and per-frame time. The AU model trained on all of
  CK+: these rates are in-sample for it; what this shows is the difference between the two detection paths.

    python benchmarks/burst_window.py [--face-px 64] [--parts lfw,ckplus] [--max-pairs 0]

Writes benchmarks/results/burst_window.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import _common as C  # noqa: E402
from smile2pay.reasons import APPROVED  # noqa: E402


def lfw_part(args, data: Path) -> dict:
    from smile2pay.decision.policy import Policy
    from smile2pay.metrics import verification_report
    from smile2pay.metrics.verification import accuracy_at
    from smile2pay.pipeline import pick_face
    from smile2pay.vision import track
    from smile2pay.vision.detect import Detections
    from smile2pay_tools.bench.common import _center_face

    rows = C.read_csv(data / "lfw" / "pairs.csv")
    if args.max_pairs:                  # spread over the folds, half genuine (as lfw_verify --limit)
        k, seen, kept = max(1, args.max_pairs // 20), Counter(), []
        for r in rows:
            if seen[(r["fold"], r["same"])] < k:
                seen[(r["fold"], r["same"])] += 1
                kept.append(r)
        rows = kept
    images = sorted({r["path_a"] for r in rows} | {r["path_b"] for r in rows})
    pipe = C.make_pipeline(args.models, window_face_px=args.face_px)
    dets, _ = C.detect_all(pipe, images, data, dataset="lfw", desc="detect lfw")
    det_key = C.detection_key(pipe, "lfw")
    emb, found, _ = C.embed_all(pipe, images, dets, data, det_key, desc="embed lfw")
    index = {p: i for i, p in enumerate(images)}
    side_b = sorted({r["path_b"] for r in rows})
    win_emb, fallback, sizes, t_win = {}, 0, Counter(), []
    for rel in C._c.progress(side_b, "window lfw"):
        rec = dets[rel]
        if C._c._no_face(rec):
            continue
        img = pipe.load(str(data / rel))
        anchor = _center_face(pipe, img, rec)
        win = pipe.window_for(img, anchor)
        face = None
        if win is not None:
            t0 = time.perf_counter()
            d = pipe.detector.detect_window(img, win)
            t_win.append(time.perf_counter() - t0)
            # LFW photos hold other people: the window's face linked to the protocol face, as a burst's track
            ious = [track.box_iou(b, anchor.bbox) for b in d.boxes]
            if ious and max(ious) >= track.LINK_IOU:
                k = int(np.argmax(ious))
                one = Detections(d.boxes[k:k + 1], d.scores[k:k + 1], d.landmarks[k:k + 1], d.attempt)
                face = pipe.faces(img, one)[0]
                sizes[win.size] += 1
        if face is None:
            fallback += 1
            face = anchor
        pipe.embed([face])
        win_emb[rel] = face.embedding
    y = np.array([int(r["same"]) for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    a = np.array([index[r["path_a"]] for r in rows])
    b = np.array([index[r["path_b"]] for r in rows])
    ok = found[a] & found[b]
    s_full = np.full(len(rows), -1.0)
    s_full[ok] = np.einsum("ij,ij->i", emb[a[ok]], emb[b[ok]])
    s_win = s_full.copy()
    for i, r in enumerate(rows):
        if ok[i]:
            s_win[i] = float(np.dot(emb[a[i]], win_emb[r["path_b"]]))
    thr = Policy.from_calibration(far=1e-4, model_fingerprint=pipe.model_fingerprint).identity_threshold
    out = {"pairs": len(rows), "pairs_unscored": int((~ok).sum()), "threshold_far_1e-4": round(float(thr), 6),
           "window_fallbacks": fallback, "window_sizes": dict(sorted(sizes.items())),
           "window_detect_ms_median": round(float(np.median(t_win)) * 1000, 3) if t_win else None,
           "side_b_cosine_window_vs_whole": {}}
    cos = [float(np.dot(win_emb[p], emb[index[p]])) for p in side_b if p in win_emb]
    out["side_b_cosine_window_vs_whole"] = {"min": round(min(cos), 4), "p01": round(float(np.percentile(cos, 1)), 4),
                                            "median": round(float(np.median(cos)), 4)}
    for name, s in (("whole_frame", s_full), ("window", s_win)):
        rep = verification_report(s, y, folds=folds, fars=(1e-3,))
        out[name] = {"kfold_accuracy": round(rep["kfold"]["mean"], 5), "kfold_std": round(rep["kfold"]["std"], 5),
                     "auc": round(rep["auc"], 6),
                     "tar_at_shipped_threshold": round(float(np.mean(s[y == 1] >= thr)), 5),
                     "false_accepts_at_shipped_threshold": int(np.sum(s[y == 0] >= thr)),
                     "impostor_pairs": int(np.sum(y == 0)),
                     "accuracy_at_shipped_threshold": round(accuracy_at(s, y, thr), 5)}
        print(f"LFW {name:12s} 10-fold {out[name]['kfold_accuracy']:.4f} +- {out[name]['kfold_std']:.4f}  "
              f"TAR@{thr:.3f} {out[name]['tar_at_shipped_threshold']:.4f}  "
              f"FA {out[name]['false_accepts_at_shipped_threshold']}/{out[name]['impostor_pairs']}")
    return out


def ckplus_part(args, data: Path) -> dict:
    from smile2pay import Smile2Pay
    from smile2pay.config import Settings
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.gallery.crypto import generate_key
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench import clips
    from smile2pay_tools.bench.smile_to_pay import CK_QUALITY
    from smile2pay_tools.bench.stream import ck_cases

    tmp = Path(tempfile.mkdtemp(prefix="s2p_burst_window_"))
    modes = {"whole_frame": 0, "window": args.face_px}
    s2p = {}
    for name, px in modes.items():
        pipe = FacePipeline(Settings.from_env(models=args.models, quality=CK_QUALITY, threads=1, window_face_px=px))
        s2p[name] = Smile2Pay(tmp / name, pipeline=pipe, key=generate_key(), pad="off",
                              guard_settings=GuardSettings(max_failures=10 ** 9))
    cases = {name: ck_cases(data, s, None) for name, s in s2p.items()}
    assert [c["claim"] for c in cases["whole_frame"]] == [c["claim"] for c in cases["window"]]
    stats = {name: {} for name in modes}
    per_frame = {name: [] for name in modes}
    agree, disagree = 0, []
    au_diff: dict[str, list[float]] = {"neutral_AU6": [], "neutral_AU12": [], "smile_AU6": [], "smile_AU12": []}
    for k, c in enumerate(C._c.progress(cases["whole_frame"], "CK+ bursts")):
        n = clips.read(data / c["neutral"])
        p = clips.read(data / c["smile"]) if c["smile"] else n
        frames = clips.clip_frames([(n, 2), (p, 2)], seed=k)
        got = {}
        for name in modes:
            t0 = time.perf_counter()
            d = s2p[name].verify(c["claim"], frames)
            per_frame[name].append((time.perf_counter() - t0) * 1000.0 / len(frames))
            got[name] = d
            st = stats[name].setdefault(c["kind"], {"approved": 0, "total": 0, "reasons": Counter()})
            st["total"] += 1
            st["approved"] += int(d.approved)
            st["reasons"][",".join(d.reasons) or APPROVED] += 1
        fw, fx = got["whole_frame"].frames, got["window"].frames
        if c["kind"] == "genuine_smile" and len(fw) == len(fx) == 4 \
                and all(f.get("au_probs") for f in fw + fx):
            for au in ("AU6", "AU12"):          # frame 0: a neutral copy, frame 2: a peak copy
                au_diff[f"neutral_{au}"].append(fx[0]["au_probs"][au] - fw[0]["au_probs"][au])
                au_diff[f"smile_{au}"].append(fx[2]["au_probs"][au] - fw[2]["au_probs"][au])
        if got["whole_frame"].approved == got["window"].approved:
            agree += 1
        else:
            disagree.append({"kind": c["kind"], "claim": c["claim"], "whole_frame": got["whole_frame"].reasons,
                             "window": got["window"].reasons})
    for s in s2p.values():
        s.close()
    out = {"cases": len(cases["whole_frame"]), "same_decision": agree, "different_decision": disagree,
           "genuine_au_window_minus_whole": {
               k: {"mean": round(float(np.mean(v)), 4), "sd": round(float(np.std(v)), 4),
                   "min": round(float(np.min(v)), 4), "max": round(float(np.max(v)), 4), "n": len(v)}
               for k, v in au_diff.items() if v}}
    for name in modes:
        out[name] = {kind: {"approved": v["approved"], "total": v["total"],
                            "reasons": dict(v["reasons"].most_common(6))} for kind, v in stats[name].items()}
        t = np.asarray(per_frame[name])
        out[name]["per_frame_ms"] = {"median": round(float(np.median(t)), 3),
                                     "p95": round(float(np.percentile(t, 95)), 3), "n": int(t.size)}
        print(f"CK+ bursts {name:12s} " + "  ".join(f"{kind} {v['approved']}/{v['total']}" for kind, v in
                                                    out[name].items() if kind != "per_frame_ms")
              + f"  per frame median {out[name]['per_frame_ms']['median']:.2f} ms")
    for k, v in out["genuine_au_window_minus_whole"].items():
        print(f"CK+ genuine bursts, {k} window - whole frame: mean {v['mean']:+.4f} sd {v['sd']:.4f} (n={v['n']})")
    out["ratio_window_to_whole_per_frame_median"] = round(
        out["window"]["per_frame_ms"]["median"] / out["whole_frame"]["per_frame_ms"]["median"], 3)
    print(f"CK+ bursts: same decision {agree}/{out['cases']}; per-frame ratio window/whole "
          f"{out['ratio_window_to_whole_per_frame_median']}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=C.DEFAULT_DATA)
    ap.add_argument("--models", default=C.DEFAULT_MODELS)
    ap.add_argument("--face-px", type=int, default=64, help="Settings.window_face_px of the window path")
    ap.add_argument("--parts", default="lfw,ckplus")
    ap.add_argument("--max-pairs", type=int, default=0, help="LFW: N pairs spread over the folds (0: all 6,000)")
    ap.add_argument("--out", default=str(C.RESULTS_DIR / "burst_window.json"))
    args = ap.parse_args(argv)
    data = Path(args.data)
    t0 = time.perf_counter()
    res = {"benchmark": "burst detection window vs whole frame", "date": time.strftime("%Y-%m-%d"),
           "machine": C.machine(), "face_px": args.face_px, "threads": 1}
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if "lfw" in parts:
        res["lfw"] = lfw_part(args, data)
    if "ckplus" in parts:
        res["ckplus"] = ckplus_part(args, data)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    C.write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
