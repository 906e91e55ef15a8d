"""Where a burst's time goes: Smile2Pay.verify on 4-frame camera-like CK+ bursts, timed by stage.

    python benchmarks/burst_stages.py [--subjects 4] [--rounds 30] [--pad report|off] [--core 1]

The stages are timed by wrapping the product's own functions (detection, quality, AU, FER, identity, PAD, the
engine, the guard); a stage's time is summed over one burst, and the median and p95 over all bursts are reported
with the whole verify() call. One thread, one pinned core. A breakdown, not a comparison: for ratios against
InsightFace use benchmarks/latency_vs_insightface.py. Writes benchmarks/results/burst_stages.json.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

STAGES = [  # (module, qualified name, label)
    ("smile2pay.vision.detect", "SCRFDDetector._detect_at", "detection (SCRFD, every call)"),
    ("smile2pay.pipeline", "FacePipeline.faces", "align + quality (identity crop)"),
    ("smile2pay.vision.au", "AUModel.run", "AU model"),
    ("smile2pay.vision.fer", "FERClassifier.run", "FER classifier"),
    ("smile2pay.vision.au", "AUAnalyzer.analyze", "AU stage (crops + AU model + FER)"),
    ("smile2pay.vision.identity", "IdentityEmbedder.embed", "identity embedding"),
    ("smile2pay.vision.pad", "PresentationAttackDetector.probabilities", "PAD"),
    ("smile2pay.decision.engine", "decide", "decision engine"),
    ("smile2pay.api", "Smile2Pay.begin", "begin (policy, lockout reserve, nonce)"),
    ("smile2pay.attempt", "PaymentAttempt.finish", "finish (guard record, audit)"),
]


def _wrap(acc: dict, module: str, qual: str, label: str) -> None:
    obj = importlib.import_module(module)
    *path, name = qual.split(".")
    for p in path:
        obj = getattr(obj, p)
    f = getattr(obj, name)

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            acc[label] += time.perf_counter() - t0

    setattr(obj, name, timed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--pad", choices=("report", "off", "enforce"), default="report")
    ap.add_argument("--core", type=int, default=None)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "burst_stages.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("SMILE2PAY_THREADS", "1")
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})

    from smile2pay_tools.bench import clips
    from smile2pay_tools.bench import common as C

    acc: dict = collections.defaultdict(float)
    for m, q, label in STAGES:
        _wrap(acc, m, q, label)
    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings, data_dir
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.pipeline import FacePipeline

    quality = QualitySettings(min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)
    pipe = FacePipeline(Settings.from_env(quality=quality, threads=1))
    people = clips.smiling_people(data_dir(), args.subjects)
    tmp = Path(tempfile.mkdtemp(prefix="s2p_stages_"))
    per: dict = collections.defaultdict(list)
    with Smile2Pay(tmp / "g", pipeline=pipe, pad=args.pad, guard_settings=GuardSettings(max_failures=10 ** 6)) as s:
        for subj, neutral, _ in people:
            s.enroll(subj, [clips.compose(neutral)], kind="neutral")
        bursts = {subj: clips.clip_frames([(n, 2), (pk, 2)], seed=i) for i, (subj, n, pk) in enumerate(people)}
        for subj in bursts:                       # warm-up
            s.verify(subj, bursts[subj])
        for _ in range(args.rounds):
            for subj in bursts:
                acc.clear()
                t0 = time.perf_counter()
                s.verify(subj, bursts[subj])
                per["verify (whole call)"].append((time.perf_counter() - t0) * 1000.0)
                for _, _, label in STAGES:
                    per[label].append(acc[label] * 1000.0)
    stats = {k: {"median_ms": round(float(np.median(v)), 3), "p95_ms": round(float(np.percentile(v, 95)), 3)}
             for k, v in per.items()}
    res = {"benchmark": "burst stages", "date": time.strftime("%Y-%m-%d"), "machine": C.machine(), "core": core,
           "threads": 1, "pad": args.pad, "bursts": len(per["verify (whole call)"]), "frames_per_burst": 4,
           "command": "python benchmarks/burst_stages.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "note": "per burst; the AU stage includes the AU model and the FER classifier rows",
           "per_burst": stats}
    C.write_json(args.out, res)
    for k, v in stats.items():
        print(f"{k:42s} median {v['median_ms']:7.2f} ms  p95 {v['p95_ms']:7.2f} ms")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
