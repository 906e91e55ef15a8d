"""A fleet: two real verify servers (separate processes, uvicorn on 127.0.0.1) sharing one real
PostgreSQL gallery. Enrol through one, verify/identify through the other; erasure, nonce replay and
lockout across servers; kill -9 and restart of a server; PostgreSQL down and back (clean 503s)."""
from __future__ import annotations

import time
import uuid

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

from smile2pay_tools.bench.fleet import ServerProc, b64, ck_smile_pairs  # noqa: E402


def _wait(cond, timeout=15.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def fleet(pg_cluster, tmp_path_factory):
    url = pg_cluster.url(schema="fleet_" + uuid.uuid4().hex[:8])
    logs = tmp_path_factory.mktemp("fleet")
    env = {"SMILE2PAY_GALLERY_KEY": "5a" * 32, "SMILE2PAY_PG_POLL_S": "0.5", "SMILE2PAY_PG_RETRY_AFTER_S": "2"}
    # the first server creates the schema; the second opens it
    a = ServerProc(url, env=env, max_failures=3, log_path=logs / "a.log").start()
    a.wait_ready()
    b = ServerProc(url, env=env, max_failures=3, log_path=logs / "b.log").start()
    b.wait_ready()
    yield a, b
    for s in (a, b):
        s.stop()


@pytest.fixture(scope="module")
def people(data_dir):
    return ck_smile_pairs(data_dir)[:4]


def _burst(data_dir, r):
    return [b64(data_dir / r["neutral_path"]), b64(data_dir / r["peak_path"])]


def _identified(server, data_dir, r):
    with server.client() as c:
        res = c.post("/v1/identify", json={"images": [b64(data_dir / r["peak_path"])], "k": 3})
    assert res.status_code == 200, res.text
    return res.json()["identified"]


def test_enrol_on_a_verify_and_identify_on_b(fleet, people, data_dir):
    a, b = fleet
    r0 = people[0]
    with a.client() as ca:
        res = ca.post("/v1/enroll", json={"user_id": r0["subject"], "images": [b64(data_dir / r0["neutral_path"])]})
    assert res.status_code == 200, res.text
    with b.client() as cb:
        d = cb.post("/v1/verify", json={"user_id": r0["subject"], "frames": _burst(data_dir, r0)}).json()
    assert d["identity"]["all_frames_match"] is True and "NOT_ENROLLED" not in d["reasons"]
    assert _wait(lambda: _identified(b, data_dir, r0) == r0["subject"])
    h = httpx.get(b.base + "/healthz").json()
    assert h["gallery"]["backend"] == "postgresql" and h["gallery"]["lag_changes"] == 0 and h["users"] == 1


def test_nonce_used_on_a_is_refused_on_b(fleet, people, data_dir):
    a, b = fleet
    r0 = people[0]
    body = {"user_id": r0["subject"], "frames": _burst(data_dir, r0), "nonce": "fleet-" + uuid.uuid4().hex}
    with a.client() as ca, b.client() as cb:
        first = ca.post("/v1/verify", json=body).json()
        again = cb.post("/v1/verify", json=body).json()
    assert "REPLAY" not in first["reasons"] and again["reasons"] == ["REPLAY"] and not again["approved"]


def test_lockout_counts_failures_on_every_server(fleet, people, data_dir):
    a, b = fleet
    victim, attacker = people[1], people[2]
    with b.client() as cb:
        assert cb.post("/v1/enroll", json={"user_id": victim["subject"],
                                           "images": [b64(data_dir / victim["neutral_path"])]}).status_code == 200
    bad = {"user_id": victim["subject"], "frames": _burst(data_dir, attacker)}
    with a.client() as ca, b.client() as cb:
        for c in (ca, cb, ca):          # max_failures=3, spread over both servers
            d = c.post("/v1/verify", json=bad).json()
            assert not d["approved"] and "LOCKED_OUT" not in d["reasons"]
        good = {"user_id": victim["subject"], "frames": _burst(data_dir, victim)}
        assert cb.post("/v1/verify", json=good).json()["reasons"] == ["LOCKED_OUT"]
        assert ca.post("/v1/verify", json=good).json()["reasons"] == ["LOCKED_OUT"]


def test_erasure_on_a_reaches_b(fleet, people, data_dir):
    a, b = fleet
    r0 = people[0]
    assert _wait(lambda: _identified(b, data_dir, r0) == r0["subject"])
    with a.client() as ca:
        res = ca.delete(f"/v1/users/{r0['subject']}")
    assert res.status_code == 200 and res.json()["templates"] == 1
    with b.client() as cb:      # 1:1 reads PostgreSQL: refused on B at once
        d = cb.post("/v1/verify", json={"user_id": r0["subject"], "frames": _burst(data_dir, r0)}).json()
    assert d["reasons"] == ["NOT_ENROLLED"]
    # 1:N: once the change has propagated, no server identifies the user
    head = httpx.get(a.base + "/healthz").json()["gallery"]["last_seq"]     # A applied its own erasure
    assert _wait(lambda: httpx.get(b.base + "/healthz").json()["gallery"]["last_seq"] >= head)
    assert _identified(b, data_dir, r0) is None and _identified(a, data_dir, r0) is None


def test_kill9_server_restarts_and_catches_up(fleet, people, data_dir):
    a, b = fleet
    r3 = people[3]
    a.kill9()
    with b.client() as cb:      # the other server keeps serving, and takes enrolments
        assert cb.post("/v1/enroll", json={"user_id": r3["subject"],
                                           "images": [b64(data_dir / r3["neutral_path"])]}).status_code == 200
    head = httpx.get(b.base + "/healthz").json()["gallery"]["last_seq"]
    a.start()
    a.wait_ready()
    assert _identified(a, data_dir, r3) == r3["subject"]
    assert httpx.get(a.base + "/healthz").json()["gallery"]["last_seq"] >= head


def test_postgres_restart_gives_clean_503s_then_recovers(fleet, people, data_dir, pg_cluster):
    a, b = fleet
    r3, r2 = people[3], people[2]
    pg_cluster.stop()
    try:
        with a.client() as ca, b.client() as cb:
            res = ca.post("/v1/enroll", json={"user_id": r2["subject"], "images": [b64(data_dir / r2["neutral_path"])]})
            assert res.status_code == 503 and res.headers["retry-after"] == "2"
            assert res.json()["error"]["code"] == "GALLERY_UNAVAILABLE"
            res = cb.post("/v1/verify", json={"user_id": r3["subject"], "frames": _burst(data_dir, r3),
                                              "nonce": uuid.uuid4().hex})
            assert res.status_code == 503 and res.headers["retry-after"]      # fail closed: no nonce, no pay
            assert res.json()["error"]["code"] == "GUARD_UNAVAILABLE"
            assert _identified(b, data_dir, r3) == r3["subject"]           # 1:N from the cached index
            h = httpx.get(b.base + "/healthz").json()
            assert h["ok"] and h["users"] is None and h["gallery_error"] == "GALLERY_UNAVAILABLE"
    finally:
        pg_cluster.start()
    with a.client() as ca:         # recovers by itself: no server restart
        assert _wait(lambda: ca.post("/v1/enroll", json={
            "user_id": r2["subject"], "images": [b64(data_dir / r2["neutral_path"])],
            "mode": "append"}).status_code == 200)
    assert _wait(lambda: _identified(b, data_dir, r2) == r2["subject"])


def test_identify_endpoint_rejects_bad_requests(fleet, people, data_dir):
    a, _ = fleet
    img = b64(data_dir / people[0]["peak_path"])
    with a.client() as ca:
        for body in ({"images": [img], "k": 0}, {"images": [img, img]}, {"images": [img], "k": "3"}, {"k": 3}):
            r = ca.post("/v1/identify", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "REQUEST_INVALID", (body, r.text)
    assert httpx.post(a.base + "/v1/identify", json={"images": [img]}).status_code == 401
