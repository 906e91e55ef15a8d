"""1:N search at 10k / 100k / 1M synthetic identities drawn from the statistics of REAL embeddings.

Thin wrapper over :mod:`smile2pay_tools.bench.gallery` (data model, indexes, timing and memory are
documented there): parses its options, runs it, prints the figures, writes JSON (also after each
size, so partial results survive a long run).

    python benchmarks/gallery_search.py --sizes 10000 100000 1000000
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smile2pay_tools.bench import gallery as bench

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="gallery 1:N search benchmark")
    bench.configure(ap)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gallery_search.json"),
                    help="where to write the result")
    args = ap.parse_args(argv)
    command = "python benchmarks/gallery_search.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out_path = Path(args.json)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save(result: dict) -> None:
        out_path.write_text(json.dumps({**result, "command": command}, indent=2))

    result = bench.run(args, on_size=save)
    save(result)
    print(json.dumps({**result, "command": command}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
