"""Would a PAD head learned on the attacks built here fix what MiniFASNet misses? Leave-one-species-out test:
see tools/smile2pay_tools/bench/pad_texture_head.py.

    python benchmarks/pad_texture_head.py [--lfw 800] [--ferplus 500] [--seed 0] [--C 0.1]
"""

from smile2pay_tools.bench.pad_texture_head import main

if __name__ == "__main__":
    main()
