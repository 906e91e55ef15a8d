"""A fleet of verify servers on one PostgreSQL gallery (issue 9): propagation, faults, start-up.

Usage:
    python benchmarks/fleet.py propagation [--changes 100]        # two galleries, one process
    python benchmarks/fleet.py propagation_http [--changes 100]   # two server processes, over HTTP
    python benchmarks/fleet.py startup [--templates 100000]
    python benchmarks/fleet.py dbpath [--verifies 2000]           # PostgreSQL's share of a verify, no models
    python benchmarks/fleet.py faults [--clients 8] [--requests 200]

Each run starts its own PostgreSQL (Debian's server binaries, initdb on a free port, fsync on) and,
for startup/faults, real verify server processes (uvicorn on 127.0.0.1). Templates are AES-256-GCM
encrypted as in production. Writes benchmarks/results/fleet_<what>.json. Logic: smile2pay_tools.bench.fleet.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    from smile2pay_tools.bench import fleet
    from smile2pay.gallery import generate_key
    from smile2pay_tools.pg_cluster import TempCluster

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["propagation", "propagation_http", "startup", "faults", "dbpath"])
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--templates", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--phases", default="kill9,pg_restart")
    ap.add_argument("--verifies", type=int, default=2000, help="dbpath: verifies (4 threads)")
    ap.add_argument("--out")
    args = ap.parse_args()
    data = Path(os.environ.get("SMILE2PAY_DATA", REPO.parent / "shared" / "data"))
    os.environ.setdefault("SMILE2PAY_MODELS", str(REPO.parent / "shared" / "models"))
    key = generate_key()
    logs = tempfile.mkdtemp(prefix="s2p-fleet-logs-")
    t0 = time.time()
    with TempCluster(fsync=True) as pg:
        if args.what == "propagation":
            res = fleet.propagation(pg.url(schema="propagation"), n=args.changes, key=key)
        elif args.what == "propagation_http":
            res = fleet.propagation_http(pg, data, n=args.changes, key=key, log_dir=logs)
        elif args.what == "dbpath":
            res = fleet.db_path(pg.url(schema="dbpath"), n=args.verifies, key=key)
        elif args.what == "startup":
            res = fleet.run_startup(pg, n=args.templates, key=key, log_dir=logs)
        else:
            res = fleet.run_faults(pg, data, clients=args.clients, requests=args.requests, key=key, log_dir=logs,
                                   phases=tuple(args.phases.split(",")))
    res = {"date": time.strftime("%Y-%m-%d", time.gmtime(t0)), "what": args.what, **res,
           "load_average_at_end": os.getloadavg(), "machine_cpus": os.cpu_count(), "server_logs": logs}
    print(json.dumps(res, indent=2, default=str))
    out = Path(args.out or REPO / "benchmarks" / "results" / f"fleet_{args.what}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
