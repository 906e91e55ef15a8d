"""Calibrate identity thresholds at target FARs on real populations; write the policy file.

A thin wrapper over :mod:`smile2pay_tools.bench.calibrate` (``smile2pay calibrate``), with this repository's
defaults: populations LFW (7,701 images -> ~29.6M impostor pairs) and CK+ (ckplus48 + neutral/peak,
~1.7M), FAR 1e-3 1e-4 1e-5, output the shipped ``smile2pay/decision/calibration/mobile.json`` (its
``au`` section is kept unless --au-data/--au-oof is given). The default operating point takes, at each
FAR, the **strictest** threshold over the populations and records each population's own value.

    python benchmarks/calibrate.py [--far 1e-3 --far 1e-4] [--bootstrap 100] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import calibrate  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    calibrate.configure(ap)
    for a in ap._actions:  # --out is optional here
        if a.dest == "out":
            a.required = False
            a.default = str(REPO / "smile2pay" / "decision" / "calibration" / "mobile.json")
    args = ap.parse_args(argv)
    if not args.dataset and not args.pairs:
        args.dataset = ["lfw", "ckplus"]
    args.far = args.far or [1e-3, 1e-4, 1e-5]
    if args.cache is None:
        args.cache = str(REPO / "results" / "cache")
    print(calibrate.summary(calibrate.run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
