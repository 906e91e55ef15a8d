"""Capture continuity limits from same-session CK+ pairs, measured against two-photo LFW pairs.
See smile2pay/bench/continuity.py.

    python benchmarks/capture_continuity.py [--write-calibration smile2pay/decision/calibration/mobile.json]
"""

from smile2pay_tools.bench.continuity import main

if __name__ == "__main__":
    main()
