"""A fleet of verify servers sharing one PostgreSQL gallery: server processes for the tests and the
benchmarks (benchmarks/fleet.py): propagation, faults, start-up.

``python -m smile2pay_tools.bench.fleet serve --gallery postgresql://... --port P`` runs one real verify
server (uvicorn on 127.0.0.1) with the relaxed face-size gate the CK+ 48x48 crops need; the API key
comes from SMILE2PAY_API_KEY, the gallery key from SMILE2PAY_GALLERY_KEY.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

CK_QUALITY = dict(min_interocular_px=12, max_brightness=235, max_clipped_fraction=0.4)
API_KEY = "fleet-key-0123456789abcdef"


def _free_port() -> int:
    from ..pg_cluster import free_port

    return free_port()


# ------------------------------------------------------------------------------------ server process
def serve_main(argv: list[str] | None = None) -> None:
    import logging

    import uvicorn

    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings, api_key_from_env
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.server.app import Limits, create_app

    ap = argparse.ArgumentParser()
    ap.add_argument("--gallery", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--max-failures", type=int, default=5)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    s2p = Smile2Pay(a.gallery, settings=Settings.from_env(quality=QualitySettings(**CK_QUALITY)),
                    guard_settings=GuardSettings(max_failures=a.max_failures))
    # the load clients share one key and address: no per-client rate limit on this benchmark server
    app = create_app(s2p, api_key_from_env(), Limits(verify_per_minute=0))
    sys.stderr.write(json.dumps({"ready_s": time.perf_counter() - t0,
                                 "gallery_open_s": getattr(s2p.gallery, "startup_s", None)}) + "\n")
    sys.stderr.flush()
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


class ServerProc:
    """One verify server in its own process (real uvicorn on 127.0.0.1)."""

    def __init__(self, gallery_url: str, *, env: dict[str, str] | None = None, max_failures: int = 5,
                 log_path: str | os.PathLike | None = None, port: int | None = None) -> None:
        self.url, self.max_failures = gallery_url, max_failures
        self.port = port or _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SMILE2PAY_API_KEY": API_KEY, **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> "ServerProc":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "smile2pay_tools.bench.fleet", "serve", "--gallery", self.url,
                                      "--port", str(self.port), "--max-failures", str(self.max_failures)],
                                     env=self.env, stdout=out, stderr=out)
        return self

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Seconds from start() to the first healthy /healthz."""
        from .common import wait_healthy

        def alive():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server on port {self.port} exited with {self.proc.returncode}")

        if wait_healthy(self.base, timeout, check=alive):
            return time.perf_counter() - self.started_at
        raise TimeoutError(f"server on port {self.port} not ready after {timeout} s")

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def client(self, timeout: float = 120.0):
        import httpx

        return httpx.Client(base_url=self.base, headers={"X-API-Key": API_KEY}, timeout=timeout)


def b64(path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def ck_smile_pairs(data: Path) -> list[dict]:
    """CK+ neutral -> peak pairs labelled AU6+AU12 (one row per subject, first sequence)."""
    with open(data / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_smile_au6_au12"] == "1"]
    out, seen = [], set()
    for r in rows:
        if r["subject"] not in seen:
            seen.add(r["subject"])
            out.append(r)
    return out


# ------------------------------------------------------------------------------------ measurements
def _pct(a, q):
    return float(np.percentile(np.asarray(a, float), q)) if len(a) else None


def propagation(url: str, n: int = 100, key: bytes | None = None, dim: int = 512, seed: int = 0) -> dict[str, Any]:
    """Time from an enrol/remove committed on gallery A to visible on gallery B (both in this process,
    each with its own connections and follower thread, exactly as in two servers): ``n`` changes,
    alternating enrol and remove of synthetic unit vectors. Visible = B's ``identify`` returns (enrol)
    or no longer returns (remove) the user; polled every 0.2 ms."""
    from smile2pay.gallery import open_gallery

    rng = np.random.default_rng(seed)
    a = open_gallery(url, fingerprint="bench:propagation", dim=dim, key=key)
    b = open_gallery(url, fingerprint="bench:propagation", dim=dim, key=key)
    enrol, remove, enrol_call, remove_call = [], [], [], []
    try:
        for i in range(max(1, n // 2)):       # each round: one enrol and one remove
            v = rng.normal(size=dim).astype(np.float32)
            v /= np.linalg.norm(v)
            uid = f"p{i:04d}"
            tc = time.perf_counter()
            a.enroll(uid, v, check_duplicates=False)
            t0 = time.perf_counter()
            while True:
                m = b.identify(v, 1)
                if m and m[0].user_id == uid:
                    break
                time.sleep(0.0002)
            enrol.append((time.perf_counter() - t0) * 1000)
            enrol_call.append((time.perf_counter() - tc) * 1000)
            tc = time.perf_counter()
            a.remove(uid)
            t0 = time.perf_counter()
            while True:
                m = b.identify(v, 1)
                if not m or m[0].user_id != uid:
                    break
                time.sleep(0.0002)
            remove.append((time.perf_counter() - t0) * 1000)
            remove_call.append((time.perf_counter() - tc) * 1000)
    finally:
        a.close()
        b.close()
    both = enrol + remove
    return {"changes": len(both), "enrol_ms": {"median": _pct(enrol, 50), "p95": _pct(enrol, 95), "max": max(enrol)},
            "remove_ms": {"median": _pct(remove, 50), "p95": _pct(remove, 95), "max": max(remove)},
            "all_ms": {"median": _pct(both, 50), "p95": _pct(both, 95), "max": max(both)},
            "measured_from": "enroll()/remove() returned on A (committed) to visible in B's identify()",
            "from_call_ms": {"enrol_median": _pct(enrol_call, 50), "enrol_p95": _pct(enrol_call, 95),
                             "remove_median": _pct(remove_call, 50), "remove_p95": _pct(remove_call, 95),
                             "note": "upper bound: from calling enroll()/remove() on A (write + commit "
                                     "included) to visible on B"},
            "setup": "A and B: two PostgresGallery objects in one process, each with its own connections and "
                     "follower thread (LISTEN/NOTIFY + sequence), exactly the code a server runs"}


def propagation_http(pg, data: Path, n: int = 100, key: bytes | None = None, log_dir: str | None = None
                     ) -> dict[str, Any]:
    """Propagation between two real server processes: enrol (then erase) a CK+ subject through server
    A's HTTP API; from A's response (committed) to server B's ``/healthz`` showing the new index size
    (polled back to back, ~1-3 ms per poll, so this is an upper bound that includes HTTP polling)."""
    import httpx

    url = pg.url(schema="propagation_http")
    env = {"SMILE2PAY_GALLERY_KEY": key.hex()} if key else {}
    lg = (lambda name: os.path.join(log_dir, name)) if log_dir else (lambda name: None)
    a = ServerProc(url, env=env, log_path=lg("prop_a.log")).start()
    a.wait_ready(600)
    b = ServerProc(url, env=env, log_path=lg("prop_b.log")).start()
    b.wait_ready(600)
    with open(data / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv") as fh:
        subjects, seen = [], set()
        for r in csv.DictReader(fh):
            if r["subject"] not in seen:
                seen.add(r["subject"])
                subjects.append(r)
    enrol, remove, skipped = [], [], 0
    hb = httpx.Client(base_url=b.base, timeout=10)

    def b_count() -> int:
        return hb.get("/healthz").json()["gallery"]["index_templates"]

    try:
        with a.client() as ca:
            base_n = b_count()
            for r in subjects:
                if len(enrol) >= n // 2:
                    break
                res = ca.post("/v1/enroll", json={"user_id": "h_" + r["subject"],
                                                  "images": [b64(data / r["neutral_path"])]})
                t0 = time.perf_counter()
                if res.status_code != 200:
                    skipped += 1
                    continue
                while b_count() != base_n + 1:
                    pass
                enrol.append((time.perf_counter() - t0) * 1000)
                ca.delete(f"/v1/users/h_{r['subject']}")
                t0 = time.perf_counter()
                while b_count() != base_n:
                    pass
                remove.append((time.perf_counter() - t0) * 1000)
    finally:
        hb.close()
        a.stop()
        b.stop()
    both = enrol + remove
    return {"changes": len(both), "skipped_enrolments": skipped,
            "enrol_ms": {"median": _pct(enrol, 50), "p95": _pct(enrol, 95), "max": max(enrol)},
            "remove_ms": {"median": _pct(remove, 50), "p95": _pct(remove, 95), "max": max(remove)},
            "all_ms": {"median": _pct(both, 50), "p95": _pct(both, 95), "max": max(both)},
            "measured_from": "HTTP response of POST /v1/enroll or DELETE /v1/users on server A to server B's "
                             "/healthz index size reflecting it (two server processes, polling B over HTTP)"}


def db_path(url: str, n: int = 2000, threads: int = 4, key: bytes | None = None, users: int = 1000,
            dim: int = 512) -> dict[str, Any]:
    """PostgreSQL's share of a payment verify, without the models: lockout check, nonce, the claimed
    user's templates (decrypt), AU baseline, failure/success record, audit record: ``n`` verifies from
    ``threads`` threads on one gallery + guard (one server's connection pool)."""
    from smile2pay.gallery import open_gallery, open_guard

    rng = np.random.default_rng(2)
    g = open_gallery(url, fingerprint="bench:dbpath", dim=dim, key=key)
    guard = open_guard(g)
    populate_n = users
    X = rng.normal(size=(populate_n, dim)).astype(np.float32)
    for i in range(populate_n):
        g.enroll(f"d{i:05d}", X[i], check_duplicates=False)
        g.set_au_baseline(f"d{i:05d}", {"AU6": 0.1, "AU12": 0.1})
    lat: list[float] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for j in range(n // threads):
            uid = f"d{(t * 7919 + j * 104729) % populate_n:05d}"
            t0 = time.perf_counter()
            guard.locked_until(uid)
            guard.use_nonce(f"dbpath-{t}-{j}-{time.time_ns()}")
            _, _, tpl = g.templates(uid)
            g.au_baseline(uid)
            guard.record(uid, True)
            guard.audit({"request_id": f"{t}-{j}", "user_id": uid, "approved": True, "reasons": []})
            with lock:
                lat.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    ths = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    wall = time.perf_counter() - t0
    g.close()
    return {"verifies": len(lat), "threads": threads, "enrolled_users": populate_n,
            "db_part_ms": {"median": _pct(lat, 50), "p95": _pct(lat, 95), "max": max(lat)},
            "verifies_per_s": len(lat) / wall, "wall_s": wall,
            "what": "per verify: locked_until, use_nonce (txn), templates (decrypt), au_baseline, record, audit: "
                    "the PostgreSQL work of one payment decision, no models; client and PostgreSQL share the machine"}


def populate(url: str, n: int, key: bytes | None, fingerprint: str, dim: int = 512, seed: int = 1,
             batch: int = 5000) -> float:
    """Insert ``n`` synthetic unit vectors as ``n`` users (one template each), sealed exactly as
    ``enroll`` seals them, in bulk (``PostgresGallery.bulk_enroll``: COPY). Returns seconds."""
    from smile2pay.gallery.postgres import PostgresGallery

    rng = np.random.default_rng(seed)
    g = PostgresGallery(url, fingerprint=fingerprint, dim=dim, key=key, follow=False)
    t0 = time.perf_counter()
    try:
        done = 0
        while done < n:
            m = min(batch, n - done)
            X = rng.normal(size=(m, dim)).astype(np.float32)
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            g.bulk_enroll([(f"u{done + i:07d}", X[i]) for i in range(m)])
            done += m
    finally:
        g.close()
    return time.perf_counter() - t0


def rss_mb(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Load:
    """``clients`` threads x ``requests`` verify requests spread round-robin over ``servers`` (each
    client sends its own enrolled subject's real neutral -> smile burst). Every response is classified:
    200 with the expected decision, 200 with a wrong decision, 503 with Retry-After (clean), other
    errors (status or transport). A transport error to a killed server is retried once on another
    server (what a load balancer does); after a 503 the client waits ``Retry-After`` before its next
    request."""

    def __init__(self, servers: list[ServerProc], bodies: list[dict], expected: list[bool], clients: int = 8,
                 requests: int = 200) -> None:
        self.servers, self.bodies, self.expected = servers, bodies, expected
        self.clients, self.requests = clients, requests
        self.lock = threading.Lock()
        self.outcomes: dict[str, int] = {}
        self.by_server: dict[int, int] = {}
        self.lat: list[float] = []
        self.events: list[tuple[float, str]] = []
        self.t0 = 0.0

    def _count(self, key: str) -> None:
        with self.lock:
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            self.events.append((time.perf_counter() - self.t0, key))

    def _client(self, i: int) -> None:
        import httpx

        body, want = self.bodies[i % len(self.bodies)], self.expected[i % len(self.bodies)]
        clients = [s.client(timeout=60) for s in self.servers]
        try:
            for j in range(self.requests):
                s = (i + j) % len(self.servers)
                t0 = time.perf_counter()
                key = None
                retry_after = 0.0
                for attempt in range(2):
                    try:
                        r = clients[s].post("/v1/verify", json=body)
                    except httpx.TransportError as e:
                        if attempt == 0:          # the load balancer fails over to another server
                            s = (s + 1) % len(self.servers)
                            with self.lock:
                                self.outcomes["failover_retries"] = self.outcomes.get("failover_retries", 0) + 1
                            continue
                        key = "transport_error:" + type(e).__name__
                        break
                    if r.status_code == 200:
                        d = r.json()
                        key = "ok" if bool(d["approved"]) == want else "WRONG_DECISION"
                        if key == "ok" and not d["approved"]:
                            key = "ok_declined:" + ",".join(d["reasons"])
                    elif r.status_code == 503 and r.headers.get("retry-after"):
                        key = "503_retry_after:" + r.json()["error"]["code"]
                        retry_after = float(r.headers["retry-after"])
                    else:
                        key = f"http_{r.status_code}:" + str(r.json().get("error", {}).get("code"))
                    break
                with self.lock:
                    self.lat.append((time.perf_counter() - t0) * 1000)
                    self.by_server[s] = self.by_server.get(s, 0) + 1
                self._count(key)
                if retry_after:           # a well-behaved client honours the advice
                    time.sleep(retry_after)
        finally:
            for c in clients:
                c.close()

    def run(self, during=None) -> dict[str, Any]:
        """Run the load; ``during(load)`` runs in its own thread alongside (the fault injection)."""
        self.t0 = time.perf_counter()
        ths = [threading.Thread(target=self._client, args=(i,)) for i in range(self.clients)]
        for t in ths:
            t.start()
        fault = None
        if during is not None:
            fault = threading.Thread(target=during, args=(self,))
            fault.start()
        for t in ths:
            t.join()
        if fault is not None:
            fault.join()
        wall = time.perf_counter() - self.t0
        n = sum(v for k, v in self.outcomes.items() if k != "failover_retries")
        return {"requests": n, "outcomes": dict(sorted(self.outcomes.items())), "by_server": self.by_server,
                "wrong_decisions": self.outcomes.get("WRONG_DECISION", 0),
                "latency_ms": {"median": _pct(self.lat, 50), "p95": _pct(self.lat, 95),
                               "max": max(self.lat) if self.lat else None},
                "wall_s": wall, "throughput_rps": n / wall if wall else None}


def _health(server: ServerProc) -> dict:
    import httpx

    return httpx.get(server.base + "/healthz", timeout=5).json()


def run_startup(pg, n: int = 100_000, key: bytes | None = None, log_dir: str | None = None) -> dict[str, Any]:
    """``n`` encrypted synthetic templates in PostgreSQL, then: the gallery rebuild in this process
    (time, RSS growth) and a real verify server process from launch to healthy (models included)."""
    import gc

    from smile2pay.gallery.postgres import PostgresGallery
    from smile2pay.pipeline import FacePipeline
    from smile2pay.config import Settings

    fp = FacePipeline(Settings.from_env()).model_fingerprint
    url = pg.url(schema="startup")
    fill_s = populate(url, n, key, fp)
    import psycopg

    from smile2pay.gallery.postgres import parse_url

    with psycopg.connect(parse_url(url)[0], autocommit=True) as c:
        c.execute("VACUUM ANALYZE startup.templates")
        tpl_bytes = c.execute("SELECT pg_total_relation_size('startup.templates')").fetchone()[0]
        db_bytes = c.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    rss0 = rss_mb(os.getpid())
    t0 = time.perf_counter()
    g = PostgresGallery(url, fingerprint=fp, key=key, follow=False)
    open_s = time.perf_counter() - t0
    rss1 = rss_mb(os.getpid())
    ntot = g.indexed_templates
    g.close()
    del g
    gc.collect()
    env = {"SMILE2PAY_GALLERY_KEY": key.hex()} if key else {}
    runs = []
    for i in range(2):
        s = ServerProc(url, env=env, log_path=os.path.join(log_dir, f"startup{i}.log") if log_dir else None).start()
        ready = s.wait_ready(600)
        h = _health(s)
        runs.append({"ready_s": ready, "rss_mb": rss_mb(s.proc.pid), "index_templates": h["gallery"]["index_templates"]})
        s.stop()
    # the same server on an empty gallery: what the models alone cost
    s = ServerProc(pg.url(schema="startup_empty"), env=env).start()
    empty_ready = s.wait_ready(600)
    empty_rss = rss_mb(s.proc.pid)
    s.stop()
    return {"templates": n, "indexed": ntot, "encrypted": key is not None, "populate_s": fill_s,
            "pg_templates_table_mb": tpl_bytes / 2**20, "pg_bytes_per_template": tpl_bytes / n,
            "pg_database_mb": db_bytes / 2**20,
            "gallery_open_in_process_s": open_s, "gallery_rss_growth_mb": (rss1 - rss0) if rss0 and rss1 else None,
            "flat_index_bytes_theory_mb": n * 512 * 4 / 2**20,
            "server_ready_s": [r["ready_s"] for r in runs], "server_rss_mb": [r["rss_mb"] for r in runs],
            "empty_gallery_server_ready_s": empty_ready, "empty_gallery_server_rss_mb": empty_rss}


def _enrol_people(url: str, data: Path, n: int, key: bytes | None) -> list[dict]:
    from smile2pay import Smile2Pay
    from smile2pay.config import QualitySettings, Settings
    from smile2pay.errors import FaceError, GalleryError

    users = []
    with Smile2Pay(url, settings=Settings.from_env(quality=QualitySettings(**CK_QUALITY)), key=key) as s2p:
        for r in ck_smile_pairs(data):
            if len(users) == n:
                break
            try:
                s2p.enroll(r["subject"], [str(data / r["neutral_path"])], kind="neutral")
            except (FaceError, GalleryError):
                continue
            users.append(r)
    return users


def _audit_rows(url: str) -> int:
    import psycopg

    from smile2pay.gallery.postgres import parse_url

    conninfo, schema = parse_url(url)
    with psycopg.connect(conninfo) as c:
        return int(c.execute(f"SELECT COUNT(*) FROM {schema}.audit").fetchone()[0])


def run_faults(pg, data: Path, clients: int = 8, requests: int = 200, key: bytes | None = None,
               log_dir: str | None = None, phases=("kill9", "pg_restart")) -> dict[str, Any]:
    """Two servers, ``clients`` x ``requests`` verify requests over both; kill -9 of one server (then its
    restart and catch-up), and a PostgreSQL restart, each during its own load run."""
    url = pg.url(schema="faults")
    env = {"SMILE2PAY_GALLERY_KEY": key.hex()} if key else {}
    env["SMILE2PAY_PG_RETRY_AFTER_S"] = "1"
    users = _enrol_people(url, data, clients, key)
    lg = (lambda name: os.path.join(log_dir, name)) if log_dir else (lambda name: None)
    servers = [ServerProc(url, env=env, max_failures=10 ** 9, log_path=lg(f"server{i}.log")).start() for i in range(2)]
    for s in servers:
        s.wait_ready(600)
    bodies = [{"user_id": r["subject"], "frames": [b64(data / r["neutral_path"]), b64(data / r["peak_path"])]}
              for r in users]
    expected = []
    with servers[0].client() as c:       # the reference decision of each body, on a calm fleet
        for bd in bodies:
            expected.append(bool(c.post("/v1/verify", json=bd).json()["approved"]))
    out: dict[str, Any] = {"users": len(users), "expected_approved": sum(expected), "clients": clients,
                           "requests_per_client": requests}
    total = clients * requests
    try:
        if "kill9" in phases:
            info: dict[str, Any] = {}
            extra = next(r for r in ck_smile_pairs(data)[len(users) + 5:] if r["subject"] not in
                         {u["subject"] for u in users})

            def kill_and_restart(load: Load) -> None:
                while sum(load.outcomes.values()) < total * 0.2:
                    time.sleep(0.05)
                victim = servers[0]
                victim.kill9()
                info["killed_at_s"] = time.perf_counter() - load.t0
                # while it is down, the other server takes an enrolment the victim must catch up on
                with servers[1].client() as c:
                    r = c.post("/v1/enroll", json={"user_id": "late_" + extra["subject"],
                                                   "images": [b64(data / extra["neutral_path"])]})
                    info["enrol_while_down"] = r.status_code
                time.sleep(2.0)
                victim.start()
                info["restart_ready_s"] = victim.wait_ready(600)
                t0 = time.perf_counter()
                head = _health(servers[1])["gallery"]["last_seq"]
                while _health(victim)["gallery"]["last_seq"] < head:
                    time.sleep(0.05)
                info["caught_up_after_ready_s"] = time.perf_counter() - t0
                info["victim_last_seq"] = _health(victim)["gallery"]["last_seq"]
                info["fleet_head_seq"] = head
                with victim.client() as c:
                    m = c.post("/v1/identify", json={"images": [b64(data / extra["peak_path"])], "k": 1}).json()
                    info["victim_identifies_late_enrolment"] = m["identified"] == "late_" + extra["subject"]

            res = Load(servers, bodies, expected, clients, requests).run(during=kill_and_restart)
            out["kill9"] = {**res, **info}
        if "pg_restart" in phases:
            info = {}
            audit0 = _audit_rows(url)
            marker = f"durable_{int(time.time())}"

            def restart_pg(load: Load) -> None:
                while sum(load.outcomes.values()) < total * 0.3:
                    time.sleep(0.05)
                # an enrolment committed just before the restart must survive it
                with servers[1].client() as c:
                    cand = [r for r in ck_smile_pairs(data) if r["subject"] not in {u["subject"] for u in users}]
                    for r in cand[10:]:
                        res = c.post("/v1/enroll", json={"user_id": marker, "images": [b64(data / r["neutral_path"])]})
                        if res.status_code == 200:
                            info["committed_before_restart"] = marker
                            break
                info["restart_at_s"] = time.perf_counter() - load.t0
                info["pg_down_s"] = pg.restart("fast")
                info["pg_up_at_s"] = time.perf_counter() - load.t0

            load = Load(servers, bodies, expected, clients, requests)
            res = load.run(during=restart_pg)
            out["pg_restart"] = {**res, **info}
            out["pg_restart"]["recovery"] = _recovery(load.events, info.get("restart_at_s", 0.0),
                                                      info.get("pg_up_at_s", 0.0))
            out["pg_restart"]["audit_rows_added"] = _audit_rows(url) - audit0
            out["pg_restart"]["durable_enrolment_present"] = _user_exists(url, info.get("committed_before_restart"))
    finally:
        for s in servers:
            s.stop()
    return out


def _recovery(events, down_at: float, up_at: float) -> dict[str, Any]:
    """From the (completion time, outcome) events of a load: when errors started and stopped relative to
    the PostgreSQL restart, and how long after PostgreSQL was back the first success came."""
    bad = [t for t, k in events if not k.startswith("ok")]
    ok_after = [t for t, k in events if k.startswith("ok") and t >= up_at]
    return {"pg_stop_at_s": down_at, "pg_up_at_s": up_at,
            "first_non_ok_s": min(bad) if bad else None, "last_non_ok_s": max(bad) if bad else None,
            "first_ok_after_pg_up_s": (min(ok_after) - up_at) if ok_after else None,
            "non_ok_after_pg_up": sum(1 for t in bad if t > up_at),
            "last_non_ok_after_pg_up_s": (max(bad) - up_at) if bad and max(bad) > up_at else 0.0}


def _user_exists(url: str, user_id: str | None) -> bool:
    if not user_id:
        return False
    import psycopg

    from smile2pay.gallery.postgres import parse_url

    conninfo, schema = parse_url(url)
    with psycopg.connect(conninfo) as c:
        return c.execute(f"SELECT 1 FROM {schema}.users WHERE user_id=%s", (user_id,)).fetchone() is not None


if __name__ == "__main__":  # pragma: no cover - process entry point
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m smile2pay_tools.bench.fleet serve --gallery URL --port P")
