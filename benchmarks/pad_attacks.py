"""Passive PAD against presentation attacks built at run time: see tools/smile2pay_tools/bench/pad_attacks.py.

    python benchmarks/pad_attacks.py [--lfw 800] [--ferplus 500] [--seed 0] [--examples /tmp/pad_examples]
"""

from smile2pay_tools.bench.pad_attacks import main

if __name__ == "__main__":
    main()
