"""Live till: ``watch --video`` on clips assembled from real CK+ and LFW stills (issue 8).

A thin wrapper over :func:`smile2pay_tools.bench.stream.run_clips` (the protocol is described there):

    python benchmarks/stream_watch.py [--fps 15] [--max-lfw 60] [--max-other N] [--no-realtime]
                                      [--out benchmarks/results/stream_watch.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from smile2pay_tools.bench import stream  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SMILE2PAY_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--models", default=os.environ.get("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models")))
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--max-lfw", type=int, default=60)
    ap.add_argument("--max-other", type=int, default=None, help="cap on CK+ non-smile expression clips")
    ap.add_argument("--kinds", help="comma-separated clip kinds to run (genuine_smile, impostor_smile, "
                    "other_expression, no_smile); default all")
    ap.add_argument("--no-realtime", action="store_true", help="skip the 30 fps wall-clock replay of genuine clips")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "stream_watch.json"))
    ap.add_argument("--no-burst-check", action="store_true",
                    help="skip verify() on the same stills (agreement of burst and stream outcomes)")
    ap.add_argument("--resummarize", action="store_true",
                    help="do not run clips: recompute the summary (and the burst check) of the --out file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    cmd = "python benchmarks/stream_watch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.resummarize:
        res = json.loads(Path(args.out).read_text())
        res["summary"] = stream.summarize(res["clips"], res["realtime"])
        res["resummarized_by"] = cmd
    else:
        res = stream.run_clips(Path(args.data), args.models, fps=args.fps, max_lfw=args.max_lfw,
                               max_other=args.max_other, realtime=not args.no_realtime,
                               kinds=tuple(args.kinds.split(",")) if args.kinds else None)
        res["command"] = cmd
        stream.write(res, Path(args.out))          # the clips' results are kept even if the burst check fails
    if not args.no_burst_check:
        res["burst_agreement"] = stream.burst_agreement(Path(args.data), args.models, res["clips"])
        res["summary"]["burst_agreement"] = res["burst_agreement"]
    stream.write(res, Path(args.out))
    print(json.dumps({"summary": res["summary"], "elapsed_s": res.get("elapsed_s"), "loadavg": res.get("loadavg"),
                      "out": args.out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
