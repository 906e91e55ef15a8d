"""Two public photos of the victim (LFW) as a burst and as a clip, and same-session CK+ bona fide, with the
capture-continuity check, plain and cross-faded; see tools/smile2pay_tools/bench/two_photo_attack.py.

    python benchmarks/two_photo_attack.py [--max-victims 200]
"""

from smile2pay_tools.bench.two_photo_attack import main

if __name__ == "__main__":
    main()
