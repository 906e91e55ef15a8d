"""The same gallery API on both backends (embedded SQLite, PostgreSQL), on real embeddings (LFW via the
real pipeline); then what only the shared PostgreSQL gallery does: change following between two
galleries, missed notifications, compacted change log, PostgreSQL down (cached index, typed errors),
migrations, and no plaintext embedding anywhere in the database files or a pg_dump."""
from __future__ import annotations

import csv
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from smile2pay.errors import GalleryError
from smile2pay.gallery import DuplicateIdentityError, generate_key, open_guard

from helpers import KEY, _open


@pytest.fixture(scope="session")
def faces(pipeline, data_dir):
    """{subject: (3, 512) real embeddings} for 8 LFW people with >= 3 images."""
    by = defaultdict(list)
    for r in csv.DictReader(open(data_dir / "lfw" / "manifest.csv")):
        by[r["subject"]].append(r["path"])
    people = sorted(s for s, p in by.items() if len(p) >= 3)[:8]
    return {s: np.stack([pipeline.single(str(data_dir / p), pick="center").embedding for p in by[s][:3]])
            for s in people}


def _top(g, v):
    m = g.identify(v, k=1)
    return m[0].user_id if m else None


def _wait(cond, timeout=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        time.sleep(0.005)
    return False


# ------------------------------------------------------------------------------------ both backends
def test_enroll_identify_verify_remove_reopen(url, faces):
    names = list(faces)
    g = _open(url)
    for s in names:
        g.enroll(s, faces[s][0], kind="neutral")
    assert g.count() == len(names) and g.list() == sorted(names) and g.template_count() == len(names)
    assert sum(g.identify(faces[s][1], k=3)[0].user_id == s for s in names) >= len(names) - 1
    r = g.verify_identity(names[0], faces[names[0]][2])
    assert r.user_id == names[0] and r.kind == "neutral"
    assert r.score == pytest.approx(float(faces[names[0]][0] @ faces[names[0]][2]), abs=1e-5)
    assert not g.verify_identity(names[0], faces[names[1]][0]).match
    assert g.remove(names[0]) == 1 and names[0] not in g
    assert all(m.user_id != names[0] for m in g.identify(faces[names[0]][1], k=5))
    for call in (lambda: g.remove(names[0]), lambda: g.verify_identity(names[0], faces[names[0]][1]),
                 lambda: g.get(names[0])):
        with pytest.raises(GalleryError) as e:
            call()
        assert e.value.code == "GALLERY_USER_NOT_FOUND"
    assert g.check()["ok"]
    g.close()
    g2 = _open(url)     # the index is rebuilt from the store
    assert g2.count() == len(names) - 1 and g2.check()["index"] == len(names) - 1
    assert g2.identify(faces[names[1]][1], k=1)[0].user_id == names[1]
    g2.close()


def test_modes_duplicates_and_baseline(url, faces):
    a, b = list(faces)[:2]
    g = _open(url)
    res = g.enroll(a, faces[a][:2], kind=["neutral", "smile"])
    assert res.created and len(res.template_ids) == 2
    probe = faces[a][2]
    assert g.verify_identity(a, probe).score == pytest.approx(float(np.max(faces[a][:2] @ probe)), abs=1e-5)
    assert [t.kind for t in g.get(a).templates] == ["neutral", "smile"]
    with pytest.raises(GalleryError) as e:
        g.enroll(a, faces[a][2])
    assert e.value.code == "GALLERY_USER_EXISTS"
    assert not g.enroll(a, faces[a][2], mode="append").created and len(g.get(a).templates) == 3
    res = g.enroll(a, faces[a][0], mode="replace", kind="neutral")
    assert res.replaced == 3 and g.template_count() == 1 and g.check()["index"] == 1
    g.enroll(b, faces[b][0])
    with pytest.raises(DuplicateIdentityError) as e:
        g.enroll("someone_else", faces[a][1])
    assert e.value.details["duplicate_of"] == a and "someone_else" not in g
    g.set_au_baseline(a, {"AU6": 0.1, "AU12": 0.2}, embedding=np.ones(4))
    assert g.au_baseline(a)["probs"] == {"AU6": 0.1, "AU12": 0.2} and g.au_baseline(b) is None
    with pytest.raises(GalleryError) as e:
        g.set_au_baseline("nobody", {"AU6": 0.1})
    assert e.value.code == "GALLERY_USER_NOT_FOUND"
    g.remove(a)
    assert g.au_baseline(a) is None
    g.close()


def test_keys_wrong_key_and_rotation(url, faces):
    k1, k2 = generate_key(), generate_key()
    s0, s1 = list(faces)[:2]
    g = _open(url, key=k1)
    g.enroll(s0, faces[s0][0])
    g.enroll(s1, faces[s1][0])
    g.close()
    for bad, code in ((generate_key(), "GALLERY_WRONG_KEY"), (None, "GALLERY_KEY_REQUIRED")):
        with pytest.raises(GalleryError) as e:
            _open(url, key=bad)
        assert e.value.code == code
    g = _open(url, key=k1)
    assert g.rotate_key(k2) == 2
    g.close()
    with pytest.raises(GalleryError) as e:
        _open(url, key=k1)
    assert e.value.code == "GALLERY_WRONG_KEY"
    g = _open(url, key=k2)
    assert g.identify(faces[s0][1], k=1)[0].user_id == s0 and g.check()["ok"]
    g.close()


def test_facade_and_guard_on_both_backends(url, pipeline, data_dir):
    """The Smile2Pay facade on real CK+ photos: enrol, verify (a real neutral -> smile burst), nonce
    replay, lockout, erasure; the guard lives in the same backend."""
    from smile2pay import Smile2Pay
    from smile2pay_tools.bench.fleet import ck_smile_pairs
    from smile2pay.config import QualitySettings, Settings
    from smile2pay.decision.lockout import GuardSettings
    from smile2pay.pipeline import FacePipeline

    pipe = FacePipeline(Settings.from_env(quality=QualitySettings(min_interocular_px=12, max_brightness=235,
                                                                  max_clipped_fraction=0.4)))
    pairs = ck_smile_pairs(data_dir)
    r0, r1 = pairs[0], pairs[1]
    with Smile2Pay(url, pipeline=pipe, key=KEY, guard_settings=GuardSettings(max_failures=2)) as s2p:
        s2p.enroll(r0["subject"], str(data_dir / r0["neutral_path"]))
        burst = [str(data_dir / r0["neutral_path"]), str(data_dir / r0["peak_path"])]
        d = s2p.verify(r0["subject"], burst, nonce="n-1")
        assert d.identity["all_frames_match"]
        assert s2p.verify(r0["subject"], burst, nonce="n-1").reasons == ["REPLAY"]
        impostor = [str(data_dir / r1["neutral_path"]), str(data_dir / r1["peak_path"])]
        for _ in range(2):
            assert not s2p.verify(r0["subject"], impostor).approved
        assert s2p.verify(r0["subject"], burst).reasons == ["LOCKED_OUT"]
        assert any(a["user_id"] == r0["subject"] for a in s2p.guard.audit_records())
        s2p.remove(r0["subject"])
        assert s2p.verify(r0["subject"], burst).reasons == ["NOT_ENROLLED"]


# ------------------------------------------------------------------------------------ PostgreSQL only
def test_two_galleries_follow_each_other(pg_url, faces):
    names = list(faces)
    a, b = _open(pg_url), _open(pg_url)
    a.enroll(names[0], faces[names[0]][0])
    assert _wait(lambda: _top(b, faces[names[0]][1]) == names[0])
    assert b.verify_identity(names[0], faces[names[0]][2]).match          # 1:1 reads PostgreSQL
    with pytest.raises(DuplicateIdentityError):                             # duplicates across servers
        b.enroll("impostor", faces[names[0]][1])
    a.remove(names[0])
    # 1:1 on B refuses at once (reads PostgreSQL); 1:N on B once the change is applied
    with pytest.raises(GalleryError) as e:
        b.verify_identity(names[0], faces[names[0]][2])
    assert e.value.code == "GALLERY_USER_NOT_FOUND"
    assert _wait(lambda: all(m.user_id != names[0] for m in b.identify(faces[names[0]][1], k=5)))
    h = b.health()
    assert h["backend"] == "postgresql" and h["last_seq"] == h["head_seq"] == 2 and h["follower_alive"]
    a.close()
    b.close()


def test_missed_notifications_and_compacted_log(pg_url, faces, pg_cluster):
    names = list(faces)
    a = _open(pg_url)
    quiet = _open(pg_url, follow=False)       # a server that hears nothing (no follower)
    for s in names[:4]:
        a.enroll(s, faces[s][0])
    a.remove(names[0])
    assert quiet.health()["last_seq"] == 0
    assert quiet.sync() == 5 and quiet.check()["index"] == 3      # catches up exactly from the sequence
    assert all(m.user_id != names[0] for m in quiet.identify(faces[names[0]][1], k=5))
    # a server behind the retained change log rebuilds instead of applying a partial log
    lagging = _open(pg_url, follow=False)
    a.enroll(names[4], faces[names[4]][0])
    a.remove(names[1])
    from smile2pay.config import PostgresSettings

    a.settings = PostgresSettings(change_retention_s=0)
    assert a.compact()["changes_floor"] == 7
    assert lagging.sync() == -1                  # -1: rebuilt from the tables
    assert sorted(m.user_id for m in lagging.identify(faces[names[2]][0], k=10)) == sorted(names[2:5])
    assert lagging.check()["ok"]
    for g in (a, quiet, lagging):
        g.close()


def test_postgres_down_cached_reads_typed_errors_recovery(pg_url, faces, pg_cluster):
    from smile2pay.config import PostgresSettings

    names = list(faces)
    a = _open(pg_url, pg=PostgresSettings(max_staleness_s=3.0, poll_s=0.2))
    guard = open_guard(a)
    a.enroll(names[0], faces[names[0]][0])
    a.set_au_baseline(names[0], {"AU6": 0.3})
    assert a.au_baseline(names[0])["probs"] == {"AU6": 0.3}
    pg_cluster.stop()
    try:
        # reads keep working from the cached index
        assert a.identify(faces[names[0]][1], k=1)[0].user_id == names[0]
        assert a.verify_identity(names[0], faces[names[0]][2]).match
        assert a.au_baseline(names[0])["probs"] == {"AU6": 0.3}
        assert _wait(lambda: a.health()["serving_from_cache"], 5)
        # writes and the guard fail clearly (fail closed)
        for call, code in ((lambda: a.enroll(names[1], faces[names[1]][0]), "GALLERY_UNAVAILABLE"),
                           (lambda: a.remove(names[0]), "GALLERY_UNAVAILABLE"),
                           (lambda: guard.use_nonce("n"), "GUARD_UNAVAILABLE"),
                           (lambda: guard.locked_until(names[0]), "GUARD_UNAVAILABLE")):
            with pytest.raises(GalleryError) as e:
                call()
            assert e.value.code == code and e.value.details["retry_after_s"] > 0
        # ... for a bounded time only
        time.sleep(3.2)
        with pytest.raises(GalleryError) as e:
            a.identify(faces[names[0]][1], k=1)
        assert e.value.code == "GALLERY_UNAVAILABLE"
    finally:
        pg_cluster.start()
    assert _wait(lambda: a.health()["reachable"], 15)
    a.enroll(names[1], faces[names[1]][0])                 # recovers by itself
    assert a.identify(faces[names[1]][1], k=1)[0].user_id == names[1] and guard.use_nonce("n")
    a.close()


def _needles(vec) -> list[bytes]:
    b = np.asarray(vec, "<f4").tobytes()
    return [b] + [b[i:i + 32] for i in range(0, len(b), 256)]


def _scan_tree(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        if p.is_file():
            blob = p.read_bytes()
            hits += [f"{p.relative_to(root)}:{i}" for i, n in enumerate(needles) if n in blob]
    return hits


def test_postgres_never_sees_a_plaintext_embedding(pg_cluster, faces):
    """Scan every file of the cluster (heap, WAL) and a pg_dump for the stored float bytes."""
    import psycopg

    names = list(faces)[:4]
    # vectors no other test stores (other tests keep plaintext galleries in this cluster)
    mixed = {s: np.stack([faces[s][0] + faces[s][2] * 0.5, faces[s][1] + faces[s][2] * 0.25]) for s in names}
    enc_url = pg_cluster.url(schema="t_enc_" + uuid.uuid4().hex[:8])
    g = _open(enc_url, key=generate_key())
    for s in names:
        g.enroll(s, mixed[s], kind=["neutral", "smile"], check_duplicates=False)
    needles = [n for s in names for e in g.templates(s)[2] for n in _needles(e)]
    plain_url = pg_cluster.url(schema="t_plain_" + uuid.uuid4().hex[:8])
    p = _open(plain_url, plaintext=True)
    p.enroll(names[0], faces[names[0]][0] + faces[names[0]][1] * 0.125)
    control = _needles(p.templates(names[0])[2][0])
    with psycopg.connect(parse_conninfo(enc_url), autocommit=True) as c:
        c.execute("CHECKPOINT")
    files = _scan_tree(pg_cluster.data, needles)
    dump = pg_cluster.psql_dump()
    assert files == [] and not any(n in dump for n in needles)
    # positive control: the same scan finds the plaintext gallery's bytes (WAL and/or heap)
    assert _scan_tree(pg_cluster.data, control)
    g.close()
    p.close()


def parse_conninfo(url):
    from smile2pay.gallery.postgres import parse_url

    return parse_url(url)[0]


def test_cli_takes_a_postgres_url(pg_url, data_dir):
    """enroll / identify / gallery info / check / remove through the CLI (subprocesses) on a PostgreSQL URL."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "SMILE2PAY_GALLERY_KEY": "ab" * 32}

    def cli(*args):
        p = subprocess.run([sys.executable, "-m", "smile2pay.cli", *args, "--json"], capture_output=True, text=True,
                           env=env, timeout=300)
        return p.returncode, json.loads(p.stdout)

    lfw = sorted((data_dir / "lfw" / "lfw-deepfunneled").glob("*/*_0001.jpg"))
    person = next(p.parent for p in lfw if (p.parent / (p.parent.name + "_0002.jpg")).exists())
    code, out = cli("enroll", "--gallery", pg_url, "alice", str(person / (person.name + "_0001.jpg")), "--pick", "center",
                    "--kind", "smile", "--create")
    assert code == 0 and out["gallery_users"] == 1
    code, out = cli("identify", "--gallery", pg_url, str(person / (person.name + "_0002.jpg")), "--pick", "center")
    assert code == 0 and out["identified"] == "alice"
    code, out = cli("gallery", "--gallery", pg_url, "info")
    assert code == 0 and out["users"] == 1 and out["encrypted"] and out["model"].startswith("w600k_mbf:")
    assert "postgresql://" in out["path"]
    code, out = cli("gallery", "--gallery", pg_url, "check")
    assert code == 0 and out["ok"]
    code, out = cli("remove", "--gallery", pg_url, "alice")
    assert code == 0 and out["templates"] == 1 and out["gallery_users"] == 0
    code, out = cli("remove", "--gallery", pg_url, "alice")
    assert code == 2 and out["error"]["code"] == "GALLERY_USER_NOT_FOUND"
    dead = pg_url.replace(str(urlsplit_port(pg_url)), str(_closed_port()))
    code, out = cli("gallery", "--gallery", dead, "info")
    assert code == 2 and out["error"]["code"] == "GALLERY_UNAVAILABLE"


def urlsplit_port(url):
    from urllib.parse import urlsplit

    return urlsplit(url).port


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_writers_on_two_servers_stay_consistent(pg_url, faces):
    """Two galleries (two servers) enrol and erase concurrently: the fleet-wide write lock keeps the
    duplicate check exact and the change sequence in commit order, so both indexes end equal to the tables."""
    import threading

    names = list(faces)
    a, b = _open(pg_url), _open(pg_url)
    # the same face under two ids at the same moment on two servers: exactly one is enrolled
    results = []

    def enrol(g, uid):
        try:
            g.enroll(uid, faces[names[0]][0])
            results.append("ok")
        except DuplicateIdentityError:
            results.append("dup")

    ts = [threading.Thread(target=enrol, args=(g, uid)) for g, uid in ((a, "twin_a"), (b, "twin_b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == ["dup", "ok"]
    # a burst of interleaved enrolments and erasures from both servers
    rng = np.random.default_rng(0)

    def churn(g, tag):
        for i in range(15):
            v = rng.normal(size=512).astype(np.float32)
            g.enroll(f"{tag}{i}", v, check_duplicates=False)
            if i % 3 == 0:
                g.remove(f"{tag}{i}")

    ts = [threading.Thread(target=churn, args=(g, tag)) for g, tag in ((a, "a"), (b, "b"))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g in (a, b):
        g.sync()
        rep = g.check()
        assert rep["ok"] and rep["templates"] == 1 + 2 * 10 and rep["last_seq"] == rep["head_seq"]
    a.close()
    b.close()


def test_nonce_race_and_erasure_leaves_no_user_data(pg_url, pg_cluster, faces):
    """A nonce raced from 8 threads on two servers is accepted once; after an erasure the user's id is
    nowhere in the gallery's tables but the audit log (as in the embedded gallery)."""
    import threading

    from smile2pay.gallery.postgres import parse_url

    a, b = _open(pg_url), _open(pg_url)
    ga, gb = open_guard(a), open_guard(b)
    wins = []
    ts = [threading.Thread(target=lambda g=g: wins.append(g.use_nonce("race-1"))) for g in (ga, gb) * 4]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    uid = "erase_me_7f3a"
    a.enroll(uid, faces[list(faces)[1]][:2], kind=["neutral", "smile"])
    a.set_au_baseline(uid, {"AU6": 0.2})
    ga.record(uid, False)
    ga.audit({"user_id": uid, "approved": False})
    b.remove(uid)
    gb.forget_user(uid)
    b.compact()
    dump = pg_cluster.psql_dump(schema=parse_url(pg_url)[1]).decode()
    lines = [ln for ln in dump.splitlines() if uid in ln]
    assert lines and all('"approved": false' in ln for ln in lines)     # the audit record only
    a.close()
    b.close()


def test_outage_mode_local_keeps_payments_deciding_then_flushes(pg_url, pg_cluster, pipeline, data_dir,
                                                               tmp_path, monkeypatch):
    """SMILE2PAY_PG_OUTAGE_VERIFY=local: with PostgreSQL stopped, a real burst is still decided from the
    cached templates (nonce, lockout and audit kept on this server), a second server's nonce reused
    during the outage is caught at the flush, and the spool is written to PostgreSQL and emptied."""
    from smile2pay import Smile2Pay
    from smile2pay_tools.bench.fleet import ck_smile_pairs
    from smile2pay.config import QualitySettings, Settings
    from smile2pay.pipeline import FacePipeline

    monkeypatch.setenv("SMILE2PAY_PG_OUTAGE_VERIFY", "local")
    monkeypatch.setenv("SMILE2PAY_PG_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SMILE2PAY_PG_MAX_STALENESS_S", "20")
    monkeypatch.setenv("SMILE2PAY_PG_POLL_S", "0.2")
    pipe = FacePipeline(Settings.from_env(quality=QualitySettings(min_interocular_px=12, max_brightness=235,
                                                                  max_clipped_fraction=0.4)))
    r0, r1 = ck_smile_pairs(data_dir)[:2]
    burst = [str(data_dir / r0["neutral_path"]), str(data_dir / r0["peak_path"])]
    impostor = [str(data_dir / r1["neutral_path"]), str(data_dir / r1["peak_path"])]
    s2p = Smile2Pay(pg_url, pipeline=pipe, key=KEY)
    monkeypatch.setenv("SMILE2PAY_PG_SPOOL_DIR", str(tmp_path / "spool-other"))   # another machine
    with s2p, Smile2Pay(pg_url, pipeline=pipe, key=KEY) as other:
        s2p.enroll(r0["subject"], burst[0])
        online = s2p.verify(r0["subject"], burst, nonce="before")
        assert other.guard.use_nonce("taken-elsewhere")          # another server, before the outage
        pg_cluster.stop()
        try:
            d = s2p.verify(r0["subject"], burst, nonce="during")  # decided from the cache, same outcome
            assert d.approved == online.approved and d.identity["all_frames_match"]
            assert s2p.verify(r0["subject"], burst, nonce="during").reasons == ["REPLAY"]
            assert not s2p.verify(r0["subject"], impostor, nonce="taken-elsewhere").approved
            with pytest.raises(GalleryError) as e:                 # enrolment still fails clearly
                s2p.enroll(r1["subject"], impostor[0])
            assert e.value.code == "GALLERY_UNAVAILABLE"
            spooled = [r for r in s2p.guard.spool.audit_records() if r.get("user_id") == r0["subject"]]
            assert len(spooled) == 3 and all(r["outage_fallback"] for r in spooled)
        finally:
            pg_cluster.start()
        assert _wait(lambda: s2p.gallery.health()["reachable"], 15)
        assert not s2p.guard.use_nonce("during")                  # flushed: refused fleet-wide now
        assert not other.guard.use_nonce("during")
        assert s2p.guard.spool.audit_records() == []
        recs = other.guard.audit_records()
        assert sum(1 for r in recs if r.get("outage_fallback")) == 3
        assert [r["event"] for r in recs if r.get("event")] == ["NONCE_REUSED_DURING_OUTAGE"]
        assert not any(len(str(v)) > 200 for r in recs for v in r.values())   # no embeddings in the audit
