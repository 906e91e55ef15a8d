"""Load on the HTTP service: N concurrent clients x M verify requests against one real server.

Usage:
    python benchmarks/http_load.py [--clients 8] [--requests 200] [--out benchmarks/results/http_load.json]

The server (uvicorn, 127.0.0.1) runs in its own process; clients are threads with their own
httpx connection. Each client claims one enrolled CK+ subject and sends that subject's real
neutral -> smile burst (2 frames, base64 PNG). Lockout is set out of reach for the run (every
request must reach the full pipeline); the CK+ 48x48 crops need the face-size gate relaxed.
Reports: errors (non-200 or transport), decisions by outcome, latency median / p95 / max, throughput.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
CK_QUALITY = dict(min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)


def _serve(gallery: str, port: int, ready) -> None:
    import uvicorn

    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.server.app import Limits, create_app

    s2p = Smile2Pay(gallery, settings=Settings.from_env(quality=QualitySettings(**CK_QUALITY)),
                    guard_settings=GuardSettings(max_failures=10 ** 9))
    # one load generator = one client: the per-client rate limit would measure itself, not the server
    app = create_app(s2p, KEY, Limits(verify_per_minute=0))
    ready.set()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> int:
    import httpx

    from smile2pay import Smile2Pay
    from smile2pay_tools.bench.common import wait_healthy
    from smile2pay.config import QualitySettings, Settings
    from smile2pay_tools.pg_cluster import free_port

    data = Path(os.environ.get("SMILE2PAY_DATA", REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200, help="per client")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "http_load.json"))
    args = ap.parse_args()

    with open(data / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_smile_au6_au12"] == "1"]
    from smile2pay.errors import FaceError

    users, seen = [], set()
    tmp = tempfile.mkdtemp(prefix="s2p-load-")
    gallery = os.path.join(tmp, "g")
    with Smile2Pay(gallery, settings=Settings.from_env(quality=QualitySettings(**CK_QUALITY))) as s2p:
        for r in rows:
            if r["subject"] in seen or len(users) == args.clients:
                continue
            seen.add(r["subject"])
            try:
                s2p.enroll(r["subject"], [str(data / r["neutral_path"])], kind="neutral")
            except FaceError:   # enrolment image fails the quality gates: take the next subject
                continue
            users.append(r)
    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_serve, args=(gallery, port, ready), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base, timeout=60.0, interval=0.1)
    bodies = [{"user_id": r["subject"],
               "frames": [base64.b64encode((data / r[k]).read_bytes()).decode() for k in ("neutral_path", "peak_path")]}
              for r in users]
    lat: list[float] = []
    outcomes: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=120) as c:
            for _ in range(args.requests):
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/verify", json=bodies[i % len(bodies)])
                    ok = r.status_code == 200
                    key = ("approved" if r.json().get("approved") else "declined:" + ",".join(r.json()["reasons"])) \
                        if ok else f"http_{r.status_code}"
                except Exception as e:  # transport errors are what this benchmark counts
                    ok, key = False, type(e).__name__
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    lat.append(dt)
                    outcomes[key] = outcomes.get(key, 0) + 1
                    if not ok:
                        errors.append(key)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    proc.terminate()
    proc.join(10)
    a = np.asarray(lat)
    res = {"date": time.strftime("%Y-%m-%d"), "clients": args.clients, "requests_per_client": args.requests,
           "requests": int(a.size), "errors": len(errors), "outcomes": outcomes,
           "latency_ms": {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())},
           "throughput_rps": a.size / wall, "wall_s": wall, "frames_per_request": 2,
           "machine_cpus": os.cpu_count()}
    print(json.dumps(res, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
