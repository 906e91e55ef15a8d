"""Per-stage latency of one verify frame (decode, detect, align, quality, embed[, AU]).

Usage:
    python benchmarks/latency.py [--frame IMG] [--runs 100] [--out benchmarks/results/latency.json]

Reports median and p95 per stage on 1 thread, the pipeline overhead beyond the models' own
forward time, detection-size ladders compared as ratios within the same run, and 1 vs 2 threads.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smile2pay.config import Settings  # noqa: E402
from smile2pay.perf import stage_latency, time_call  # noqa: E402
from smile2pay.pipeline import FacePipeline  # noqa: E402


def main() -> int:
    data = Path(os.environ.get("SMILE2PAY_DATA", REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frame", default=str(data / "samples" / "deepface" / "img2.jpg"),
                    help="a 640x480 camera-like frame with one large face")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "latency.json"))
    args = ap.parse_args()

    res: dict = {"date": time.strftime("%Y-%m-%d"), "machine": {"cpus": os.cpu_count(),
                                                                "platform": platform.platform()},
                 "frame_file": Path(args.frame).name, "runs": args.runs}
    pipe = FacePipeline(Settings.from_env(threads=1))
    res["one_thread"] = stage_latency(pipe, args.frame, runs=args.runs)
    img = pipe.load(args.frame)
    ladders = {}
    for sizes in [(160,), (192,), (256,), (320,), (640,)]:
        p = FacePipeline(Settings.from_env(threads=1, det_sizes=sizes))
        found = len(p.detect(img))
        ladders[str(sizes[0])] = {"faces": found, **time_call(lambda: p.detect(img), args.runs)}
    base = ladders["320"]["median_ms"]
    for v in ladders.values():
        v["ratio_to_320"] = v["median_ms"] / base
    res["detect_by_size"] = ladders
    two = FacePipeline(Settings.from_env(threads=2))
    t1 = time_call(lambda: pipe.analyze(img), args.runs)
    t2 = time_call(lambda: two.analyze(img), args.runs)
    res["threads"] = {"1": t1, "2": t2, "ratio_2_over_1": t2["median_ms"] / t1["median_ms"]}

    one = res["one_thread"]
    print(f"frame {one['frame']}")
    for k, v in one["stages"].items():
        print(f"  {k:16s} median {v['median_ms']:7.2f} ms   p95 {v['p95_ms']:7.2f} ms")
    print(f"  models' own forward: {one['models_forward_ms']:.2f} ms; pipeline overhead "
          f"{100 * one['overhead']:.1f}%")
    for k, v in ladders.items():
        print(f"  detect@{k:>3s}: {v['median_ms']:6.2f} ms (x{v['ratio_to_320']:.2f} of 320), faces={v['faces']}")
    print(f"  analyze 1 thread {t1['median_ms']:.2f} ms, 2 threads {t2['median_ms']:.2f} ms "
          f"(ratio {res['threads']['ratio_2_over_1']:.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
