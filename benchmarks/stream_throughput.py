"""Live till throughput (issue 8): frames/s a stream session sustains (push, 640x480, 1 and 2
onnxruntime threads), then a 30 fps producer for 60 s through offer() (latest frame wins) with RSS
sampled every second. A thin wrapper over :func:`smile2pay_tools.bench.stream.run_throughput`:

    python benchmarks/stream_throughput.py [--seconds 60] [--out benchmarks/results/stream_throughput.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import stream  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models")))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--offer-fps", type=float, default=30.0, help="producer rate of the offer() run")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "stream_throughput.json"))
    args = ap.parse_args(argv)
    res = stream.run_throughput(Path(args.data), args.models, n_push=args.frames, offer_s=args.seconds,
                                offer_fps=args.offer_fps)
    res["command"] = "python benchmarks/stream_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    stream.write(res, Path(args.out))
    short = {k: v for k, v in res.items() if k != "offer"}
    short["offer"] = {k: v for k, v in res["offer"].items() if k != "samples"}
    print(json.dumps(short, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
