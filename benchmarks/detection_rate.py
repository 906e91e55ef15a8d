"""Face detection rate of the pipeline's detector ladder on LFW and CK+ 48x48.

For every image: is a face found, and by which pass of the ladder ("320", "640", "pad:320",
"pad:640", or "none"). Target: >= 99% on LFW (7,701 images of the official pairs) and on
CK+48 (981). The 890 ckplus_neutral_peak48 images are reported too.

    SMILE2PAY_THREADS=1 nice python benchmarks/detection_rate.py
    # prototype other detection settings (does not change the SDK defaults):
    python benchmarks/detection_rate.py --det-sizes 320,640 --pad 0.5 --threshold 0.5 --out /tmp/x.json

Detections are cached in results/cache/ (git-ignored) and shared with lfw_verify.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

import _common as C  # noqa: E402

DATASETS = {
    "lfw": ("lfw/manifest.csv", 0.99),
    "ckplus48": ("ckplus48/manifest.csv", 0.99),
    "ckplus_neutral_peak48": ("ckplus_neutral_peak48/manifest.csv", None),
}


def summarize(name: str, rel_paths: list[str], dets: dict, target: float | None, seconds: float) -> dict:
    passes = Counter(dets[p]["attempt"] for p in rel_paths)
    found = [p for p in rel_paths if dets[p]["attempt"] not in ("none", "error")]
    failures = [p for p in rel_paths if dets[p]["attempt"] in ("none", "error")]
    nfaces = Counter(min(len(dets[p]["scores"]), 3) for p in found)
    scores = np.array([float(np.max(dets[p]["scores"])) for p in found]) if found else np.zeros(0)
    n = len(rel_paths)
    rate = len(found) / n if n else float("nan")
    out = {
        "images": n,
        "found": len(found),
        "missed": len(failures),
        "rate": round(rate, 6),
        "target": target,
        "target_met": None if target is None else bool(rate >= target),
        "by_pass": dict(sorted(passes.items())),
        "faces_per_image": {("3+" if k == 3 else str(k)): v for k, v in sorted(nfaces.items())},
        "best_det_score": {"median": round(float(np.median(scores)), 4) if len(scores) else None,
                           "p01": round(float(np.quantile(scores, 0.01)), 4) if len(scores) else None},
        "failures": failures,
    }
    if seconds > 0:
        out["detect_ms_per_image"] = round(1000 * seconds / max(n, 1), 2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=C.DEFAULT_DATA)
    ap.add_argument("--models", default=C.DEFAULT_MODELS)
    ap.add_argument("--detector", choices=["scrfd", "yunet"], default="scrfd")
    ap.add_argument("--det-sizes", help="comma-separated, e.g. 320,640 (default: the SDK's)")
    ap.add_argument("--pad", type=float, help="pad_retry fraction (default: the SDK's)")
    ap.add_argument("--threshold", type=float, help="det_threshold (default: the SDK's)")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--limit", type=int, default=0, help="first N images per dataset (quick run)")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--out", default=str(C.RESULTS_DIR / "detection_rate.json"))
    args = ap.parse_args(argv)

    overrides = {}
    if args.det_sizes:
        overrides["det_sizes"] = tuple(int(x) for x in args.det_sizes.split(","))
    if args.pad is not None:
        overrides["pad_retry"] = args.pad
    if args.threshold is not None:
        overrides["det_threshold"] = args.threshold
    data = Path(args.data)
    pipe = C.make_pipeline(args.models, detector=args.detector, **overrides)
    t_all = time.perf_counter()
    report = {"benchmark": "detection_rate", "date": time.strftime("%Y-%m-%d"),
              "command": "python benchmarks/" + Path(__file__).name + (" " + " ".join(argv or sys.argv[1:])).rstrip(),
              "settings": C.settings_summary(pipe), "machine": C.machine(), "limit": args.limit or None,
              "datasets": {}}
    for name in args.datasets.split(","):
        manifest, target = DATASETS[name]
        rel = [r["path"] for r in C.read_csv(data / manifest)]
        if args.limit:
            rel = rel[: args.limit]
        dets, secs = C.detect_all(pipe, rel, data, dataset=name, desc=f"detect {name}", use_cache=not args.no_cache)
        s = summarize(name, rel, dets, target, secs)
        report["datasets"][name] = s
        print(f"{name:>24}: {s['found']}/{s['images']} = {100 * s['rate']:.2f}%  passes {s['by_pass']}"
              + ("" if target is None else f"  target {100 * target:.0f}% {'met' if s['target_met'] else 'MISSED'}"),
              flush=True)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    C.write_json(Path(args.out), report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
