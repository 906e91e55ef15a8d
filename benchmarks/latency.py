"""Per-stage latency of one verify frame (decode, detect, align, quality, embed[, AU]) on 1 and 2 threads.

A thin wrapper over :mod:`smile2pay_tools.bench.latency` (the same as ``smile2pay bench latency``):

    python benchmarks/latency.py [--frame IMG] [--runs 100]

Writes benchmarks/results/latency.json (+ .md/.html report) and docs/plots/latency.png.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import latency  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    latency.configure(ap)
    ap.set_defaults(out=str(REPO / "benchmarks" / "results"), plots_dir=str(REPO / "docs" / "plots"), name="latency")
    args = ap.parse_args(argv)
    res = latency.run(args)
    print(latency.summary(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
