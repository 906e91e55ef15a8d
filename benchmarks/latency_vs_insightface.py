"""Per-frame cost of Smile2Pay.verify (4-frame burst) and a stream session against InsightFace
FaceAnalysis.get on the same frames, same det_500m + w600k_mbf weights, one thread on one core, alternating.

A thin wrapper over :mod:`smile2pay_tools.bench.latency_vs_insightface`:

    python benchmarks/latency_vs_insightface.py [--subjects 4] [--rounds 8]

Writes benchmarks/results/latency_vs_insightface.json.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import latency_vs_insightface as bench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.configure(ap)
    ap.set_defaults(out=str(REPO / "benchmarks" / "results"), name="latency_vs_insightface")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = bench.run(args)
    print(bench.summary(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
