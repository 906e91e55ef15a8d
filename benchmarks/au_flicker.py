"""How far does a *still* photo's smile score move from frame to frame under camera noise alone?

A smile-to-pay decision needs the smile to appear as a change from a neutral frame of the same capture. If the
required rise (``burst_min_delta``) is smaller than what sensor noise and video compression move the fused AU6 /
AU12 probabilities on one unchanging photo, a single smiling photo whose score sits at the threshold "smiles"
by flicker alone (measured: 1 of 200 LFW victims paid with one photo held in front of the camera, 2026-12-06).
This measures that flicker, so the calibration can keep the required rise above it:

    python benchmarks/au_flicker.py [--stills 300] [--frames 8] [--out benchmarks/results/au_flicker.json]

Stills: LFW happy and neutral photos of people *not* among the two-photo-attack victims (the people after the
first 200 of ``clips.lfw_expression_people``), and the CK+ peak frames of AU6+AU12 sequences. Each still is
composed on a 640x480 canvas (``clips.compose``), then ``--frames`` copies get Gaussian noise (sigma 2 and 5 grey
levels) and a JPEG round trip at quality 90 (what ``watch --video`` reads); the pipeline measures every copy
(detection, alignment, the fused AU stage). Per still: the *pattern flicker* = the largest rise of the rule
AU6+AU12 between an earlier and a later copy that both AUs show, ``max_{i<j} min_a (p_a[j] - p_a[i])``, the
quantity ``burst_min_delta`` must exceed. Writes the distribution and the smallest grid step above its maximum.
The same flicker on the logit scale (``max_logit_pattern_flicker``: the rise a calibration with
``rise_scale="logit"`` judges), from any earlier copy and from earlier copies under the absence thresholds 0.7, 0.8
and 0.9 (a burst's neutral frame must be under it): the floors of
:data:`smile2pay.decision.au_calibration.LOGIT_DELTA_FLOOR`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

AUS = ("AU6", "AU12")
#: the logit-scale flicker is reported from any earlier frame and from earlier frames under these absence thresholds
LOGIT_BELOW = (None, 0.7, 0.8, 0.9)


def pattern_flicker(p: np.ndarray, scale: str = "probability", below: float | None = None) -> float:
    """``max_{i<j} min_a rise(p[j, a], p[i, a])`` for frames x AUs probabilities (0 when fewer than 2 frames), the
    rise on ``scale`` as the calibration judges it (:func:`smile2pay.decision.au_calibration.rise`: the difference,
    or the logits' difference). ``below``: only earlier frames whose every AU is below it count (a burst's neutral
    frame must be under the absence threshold, so a still flickering above it cannot start one)."""
    from smile2pay.decision.au_calibration import rise

    p = np.asarray(p, float)
    best = 0.0
    for j in range(1, len(p)):
        ok = np.ones(j, bool) if below is None else (p[:j] < below).all(1)
        if not ok.any():
            continue
        r = rise(p[j][None, :], p[:j][ok], scale).min(1)      # each earlier frame i: the rise both AUs show
        best = max(best, float(r.max()))
    return best


def main(argv=None) -> dict:
    import cv2

    from smile2pay.config import Settings, data_dir
    from smile2pay.errors import Smile2PayError
    from smile2pay.pipeline import FacePipeline
    from smile2pay_tools.bench import clips
    from smile2pay_tools.bench import common as C
    from smile2pay_tools.bench.stream import CK_QUALITY

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stills", type=int, default=300, help="LFW stills per label (happy, neutral)")
    ap.add_argument("--skip-people", type=int, default=200, help="LFW people kept for the attack benchmark")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 5.0])
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/au_flicker.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = data_dir()
    pipe = FacePipeline(Settings.from_env(quality=CK_QUALITY, threads=1))
    from smile2pay.decision import engine
    from smile2pay.decision.policy import Policy

    # the smile probe's scale (the decision fuses the probe's logit into AU6 / AU12 on embedded frames): measured
    # on the same copies beside the AU stage's own, when the pack reads a probe and the calibration has its section
    pp = Policy.from_calibration().with_smile_probe() if pipe.smile_probe is not None else None
    scales = ("au_stage",) + (("with_smile_probe",) if pp is not None else ())
    people = clips.lfw_expression_people(data)[a.skip_people:]
    stills = {"lfw_happy": [p["happy"][0] for p in people][:a.stills],
              "lfw_neutral": [p["neutral"][0] for p in people][:a.stills],
              "ckplus_peak": sorted({r["peak_path"] for r in clips.ck_pairs(data) if r["is_smile_au6_au12"] == "1"})}
    rng = np.random.default_rng(0)
    res: dict = {"benchmark": "au_flicker", "date": time.strftime("%Y-%m-%d"),
                 "command": "python benchmarks/au_flicker.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "frames_per_still": a.frames, "jpeg_quality": 90, "rule": "AU6+AU12", "sets": {}}
    worst = {sc: 0.0 for sc in scales}
    worst_logit = {(sc, b): 0.0 for sc in scales for b in LOGIT_BELOW}
    for sigma in a.sigmas:
        for name, paths in stills.items():
            flick, per_au, missed = {sc: [] for sc in scales}, {sc: {au: [] for au in AUS} for sc in scales}, 0
            flick_logit = {(sc, b): [] for sc in scales for b in LOGIT_BELOW}
            for rel in C.progress(paths, f"{name} sigma {sigma:g}", enabled=not a.no_progress):
                base = clips.compose(clips.read(data / rel)).astype(np.float32)
                probs = []
                for _ in range(a.frames):
                    fr = np.clip(base + rng.normal(0.0, sigma, base.shape), 0, 255).astype(np.uint8)
                    ok, buf = cv2.imencode(".jpg", fr, [cv2.IMWRITE_JPEG_QUALITY, 90])
                    fr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
                    try:
                        f = pipe.single(fr, pick="largest", embed=pp is not None)
                    except Smile2PayError:
                        continue
                    row = {"au_stage": dict(f.au_probs or {})}
                    if pp is not None:
                        row["with_smile_probe"] = engine.fuse_probe(row["au_stage"], f.smile_probe, pp.probe_weight,
                                                                    pp.probe_aus)
                    probs.append(row)
                if len(probs) < 2:
                    missed += 1
                    continue
                for sc in scales:
                    p = np.array([[float(r[sc].get(au, 0.0)) for au in AUS] for r in probs])
                    flick[sc].append(pattern_flicker(p))
                    for b in LOGIT_BELOW:
                        flick_logit[(sc, b)].append(pattern_flicker(p, "logit", b))
                    for k, au in enumerate(AUS):
                        per_au[sc][au].append(float(p[:, k].max() - p[:, k].min()))
            ent = {"stills": len(paths), "no_face_or_one_frame": missed}
            for sc in scales:
                f = np.array(flick[sc])
                worst[sc] = max(worst[sc], float(f.max()) if f.size else 0.0)
                ent[sc] = {"measured": int(f.size),
                           "pattern_flicker": {"median": round(float(np.median(f)), 4),
                                               "p99": round(float(np.percentile(f, 99)), 4),
                                               "max": round(float(f.max()), 4),
                                               "share_at_or_above": {str(d): round(float((f >= d).mean()), 4)
                                                                     for d in (0.02, 0.05, 0.1, 0.15, 0.2)}},
                           "range_per_au_max": {au: round(float(np.max(v)), 4) for au, v in per_au[sc].items() if v},
                           "logit_pattern_flicker": {}}
                for b in LOGIT_BELOW:
                    fl = np.array(flick_logit[(sc, b)])
                    key = "any earlier frame" if b is None else f"earlier frame below {b:g}"
                    ent[sc]["logit_pattern_flicker"][key] = {"median": round(float(np.median(fl)), 4),
                                                             "p99": round(float(np.percentile(fl, 99)), 4),
                                                             "max": round(float(fl.max()), 4)}
                    worst_logit[(sc, b)] = max(worst_logit[(sc, b)], float(fl.max()) if fl.size else 0.0)
                print(f"{name:12s} sigma {sigma:g} {sc:16s}: {f.size} stills, pattern flicker median "
                      f"{np.median(f):.4f} p99 {np.percentile(f, 99):.4f} max {f.max():.4f}", flush=True)
            res["sets"][f"{name}@sigma{sigma:g}"] = ent
    res["max_pattern_flicker"] = {sc: round(w, 4) for sc, w in worst.items()}
    res["max_logit_pattern_flicker"] = {
        sc: {("any earlier frame" if b is None else f"earlier frame below {b:g}"): round(worst_logit[(sc, b)], 4)
             for b in LOGIT_BELOW} for sc in scales}
    res["smallest_grid_delta_above_max"] = {sc: round(math.floor(w / 0.05 + 1) * 0.05, 2) for sc, w in worst.items()}
    if pp is not None:
        res["smile_probe"] = {"weight": pp.probe_weight, "burst_min_delta": pp.burst_min_delta}
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"largest logit-scale pattern flicker {res['max_logit_pattern_flicker']}")
    print(f"largest pattern flicker {res['max_pattern_flicker']}: a required rise of at least "
          f"{res['smallest_grid_delta_above_max']} (grid 0.05) is above it")
    C.write_json(a.out, res)
    print(f"wrote {a.out}")
    return res


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
