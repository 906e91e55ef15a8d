"""Smile-to-pay simulation on CK+ (the headline table of the verify issue).

A thin wrapper over :mod:`smile2pay_tools.bench.smile_to_pay` (the same as ``smile2pay bench smile-to-pay``;
the protocol is described there):

    python benchmarks/smile_to_pay.py [--far 1e-4] [--out benchmarks/results/smile_to_pay.json]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import smile_to_pay as s2p  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s2p.configure(ap)
    ap.set_defaults(cv_dir=str(REPO / "results" / "au_train24" / "cv"),
                    gt_cache=str(REPO / "results" / "au_train24" / "cache" / "gt.npz"),
                    out=str(REPO / "benchmarks" / "results" / "smile_to_pay.json"))
    args = ap.parse_args(argv)
    args.command_line = "python benchmarks/smile_to_pay.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(s2p.summary(s2p.run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
