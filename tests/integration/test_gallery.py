"""Gallery storage on real embeddings (LFW via the real pipeline, computed once)."""
from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from smile2pay.errors import GalleryError
from smile2pay.gallery import DuplicateIdentityError, Gallery, generate_key

from helpers import FP

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def lfw_people(pipeline, data_dir):
    """{subject: (n, 512) real embeddings} for 12 LFW people with >= 3 images."""
    rows = list(csv.DictReader(open(data_dir / "lfw" / "manifest.csv")))
    by = defaultdict(list)
    for r in rows:
        by[r["subject"]].append(r["path"])
    people = sorted(s for s, p in by.items() if len(p) >= 3)[:12]
    out = {}
    for s in people:
        out[s] = np.stack([pipeline.single(str(data_dir / p), pick="center").embedding for p in by[s][:3]])
    return out


def _scan(folder: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for p in folder.iterdir():
        if p.is_file():
            blob = p.read_bytes()
            hits += [f"{p.name}:{i}" for i, n in enumerate(needles) if n in blob]
    return hits


def _needles(vec: np.ndarray) -> list[bytes]:
    """The whole float32 vector and 8 of its 32-byte slices (catches partial leftovers)."""
    b = np.asarray(vec, "<f4").tobytes()
    return [b] + [b[i:i + 32] for i in range(0, len(b), 256)]


def test_enroll_identify_verify_remove(tmp_path, lfw_people):
    names = list(lfw_people)
    g = Gallery(tmp_path / "g", fingerprint=FP)
    for s in names:
        g.enroll(s, lfw_people[s][0], kind="neutral")
    assert g.count() == len(names) and sorted(g.list()) == sorted(names)
    # probes: the people's other images
    correct = sum(g.identify(lfw_people[s][1], k=3)[0].user_id == s for s in names)
    assert correct >= len(names) - 1
    top = g.identify(lfw_people[names[0]][1], k=3)
    assert len(top) == 3 and top[0].score >= top[1].score >= top[2].score
    r = g.verify_identity(names[0], lfw_people[names[0]][2])
    assert r.user_id == names[0] and r.kind == "neutral"
    assert r.score == pytest.approx(float(lfw_people[names[0]][0] @ lfw_people[names[0]][2]), abs=1e-5)
    impostor = g.verify_identity(names[0], lfw_people[names[1]][0])
    assert not impostor.match and impostor.score < 0.42
    assert g.remove(names[0]) == 1
    assert names[0] not in g and g.count() == len(names) - 1
    assert all(m.user_id != names[0] for m in g.identify(lfw_people[names[0]][1], k=5))
    with pytest.raises(GalleryError) as e:
        g.remove(names[0])
    assert e.value.code == "GALLERY_USER_NOT_FOUND"
    with pytest.raises(GalleryError) as e:
        g.verify_identity(names[0], lfw_people[names[0]][1])
    assert e.value.code == "GALLERY_USER_NOT_FOUND"
    assert g.check()["ok"]
    g.close()
    # reopen: the index is rebuilt from SQLite
    g2 = Gallery(tmp_path / "g", fingerprint=FP)
    assert g2.count() == len(names) - 1 and g2.check()["index"] == len(names) - 1
    assert g2.identify(lfw_people[names[1]][1], k=1)[0].user_id == names[1]


def test_several_templates_best_score_and_modes(tmp_path, lfw_people):
    a, b = list(lfw_people)[:2]
    g = Gallery(tmp_path / "g", fingerprint=FP)
    res = g.enroll(a, lfw_people[a][:2], kind=["neutral", "smile"])
    assert res.created and len(res.template_ids) == 2
    probe = lfw_people[a][2]
    r = g.verify_identity(a, probe)
    assert r.score == pytest.approx(float(np.max(lfw_people[a][:2] @ probe)), abs=1e-5)
    assert [t.kind for t in g.get(a).templates] == ["neutral", "smile"]
    with pytest.raises(GalleryError) as e:
        g.enroll(a, lfw_people[a][2])
    assert e.value.code == "GALLERY_USER_EXISTS"
    assert not g.enroll(a, lfw_people[a][2], mode="append").created
    assert len(g.get(a).templates) == 3
    res = g.enroll(a, lfw_people[a][0], mode="replace", kind="neutral")
    assert res.replaced == 3 and len(g.get(a).templates) == 1 and g.template_count() == 1
    assert g.check()["index"] == 1
    # a second person is not a duplicate; the same face under another name is
    g.enroll(b, lfw_people[b][0])
    with pytest.raises(DuplicateIdentityError) as e:
        g.enroll("someone_else", lfw_people[a][1])
    assert e.value.code == "GALLERY_DUPLICATE" and e.value.details["duplicate_of"] == a
    assert "someone_else" not in g and g.count() == 2
    # explicit override
    g.enroll("someone_else", lfw_people[a][1], check_duplicates=False)
    assert g.count() == 3


def test_encryption_no_plaintext_and_wrong_key(tmp_path, lfw_people):
    key = generate_key()
    g = Gallery(tmp_path / "g", fingerprint=FP, key=key)
    vecs = {s: v[:2] for s, v in lfw_people.items()}
    for s, v in vecs.items():
        g.enroll(s, v, kind=["neutral", "smile"])
    s0 = next(iter(vecs))
    assert g.verify_identity(s0, lfw_people[s0][2]).score == pytest.approx(
        float(np.max(vecs[s0] @ lfw_people[s0][2])), abs=1e-5)
    # the plaintext bytes the gallery would store (it normalises), read back through the decrypting API
    needles = [n for s in vecs for e in g.templates(s)[2] for n in _needles(e)]
    # files as they are while open (WAL not checkpointed) and after close (checkpointed)
    assert _scan(tmp_path / "g", needles) == []
    g.close()
    assert _scan(tmp_path / "g", needles) == []
    # positive control: the scan finds plaintext in an unencrypted gallery
    p = Gallery(tmp_path / "plain", fingerprint=FP, plaintext=True)
    p.enroll(s0, vecs[s0][0])
    assert _scan(tmp_path / "plain", _needles(p.templates(s0)[2][0]))   # the bytes as stored (normalised)
    p.close()
    for bad, code in ((generate_key(), "GALLERY_WRONG_KEY"), (None, "GALLERY_KEY_REQUIRED")):
        with pytest.raises(GalleryError) as e:
            Gallery(tmp_path / "g", fingerprint=FP, key=bad)
        assert e.value.code == code
    with pytest.raises(GalleryError) as e:
        Gallery(tmp_path / "plain", fingerprint=FP, key=key)
    assert e.value.code == "GALLERY_NOT_ENCRYPTED"


def test_key_rotation(tmp_path, lfw_people):
    k1, k2 = generate_key(), generate_key()
    s0, s1 = list(lfw_people)[:2]
    g = Gallery(tmp_path / "g", fingerprint=FP, key=k1)
    g.enroll(s0, lfw_people[s0][0]); g.enroll(s1, lfw_people[s1][0])
    old_ct = [bytes(r[0]) for r in _db_rows(tmp_path / "g", "SELECT vec FROM templates")]
    assert g.rotate_key(k2) == 2
    g.close()
    with pytest.raises(GalleryError) as e:
        Gallery(tmp_path / "g", fingerprint=FP, key=k1)
    assert e.value.code == "GALLERY_WRONG_KEY"
    assert _scan(tmp_path / "g", [c[:48] for c in old_ct]) == []   # old ciphertexts are gone
    g = Gallery(tmp_path / "g", fingerprint=FP, key=k2)
    assert g.identify(lfw_people[s0][1], k=1)[0].user_id == s0 and g.check()["ok"]
    # plaintext gallery -> encrypted, in place
    p = Gallery(tmp_path / "p", fingerprint=FP)
    p.enroll(s0, lfw_people[s0][0])
    p.rotate_key(k1); p.close()
    assert _scan(tmp_path / "p", _needles(lfw_people[s0][0])) == []
    assert Gallery(tmp_path / "p", fingerprint=FP, key=k1).count() == 1


def _db_rows(folder: Path, sql: str, args=()) -> list:
    """Rows read straight from a gallery's SQLite file (what is at rest), on a separate read-only connection."""
    import sqlite3

    con = sqlite3.connect(f"file:{folder / 'gallery.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("index", ["flat", "hnsw", "ivf"])
def test_erasure_bytes_gone_after_compact(tmp_path, lfw_people, encrypted, index):
    key = generate_key() if encrypted else None
    g = Gallery(tmp_path / "g", fingerprint=FP, key=key, index=index)
    names = list(lfw_people)
    for s in names:
        g.enroll(s, lfw_people[s][:2], kind=["neutral", "smile"])
    victim = names[3]
    rows = _db_rows(tmp_path / "g", "SELECT vec FROM templates WHERE user_id=?", (victim,))
    stored = [bytes(r[0]) for r in rows]
    needles = stored + [b[i:i + 32] for b in stored for i in range(0, len(b) - 32, 256)]
    needles += [victim.encode()]
    assert _scan(tmp_path / "g", needles), "positive control: the user's bytes are on disk before erasure"
    g.remove(victim)
    g.compact()
    assert _scan(tmp_path / "g", needles) == []
    assert victim not in g and g.count() == len(names) - 1
    assert all(m.user_id != victim for m in g.identify(lfw_people[victim][0], k=len(names)))
    if index == "hnsw":
        assert not g.search_index.deleted  # compact rebuilt the graph without the erased nodes
    assert g.identify(lfw_people[names[0]][2], k=1)[0].user_id == names[0]
    g.close()
    assert _scan(tmp_path / "g", needles) == []


def test_cross_process_sees_enrolments(tmp_path, lfw_people):
    """Another Gallery handle (another process in real use) picks up changes incrementally."""
    s = list(lfw_people)
    a = Gallery(tmp_path / "g", fingerprint=FP)
    b = Gallery(tmp_path / "g", fingerprint=FP)
    a.enroll(s[0], lfw_people[s[0]][0])
    assert b.identify(lfw_people[s[0]][1], k=1)[0].user_id == s[0]
    a.remove(s[0]); a.enroll(s[1], lfw_people[s[1]][0])
    top = b.identify(lfw_people[s[0]][1], k=5)
    assert [m.user_id for m in top] == [s[1]] and b.check()["index"] == 1
    a.compact()
    assert b.identify(lfw_people[s[1]][1], k=1)[0].user_id == s[1] and b.check()["ok"]


def _crash_module():
    spec = importlib.util.spec_from_file_location("gallery_crash_test", REPO / "benchmarks" / "gallery_crash_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def lfw_npz(tmp_path_factory, pipeline, data_dir):
    """Real embeddings of 60 LFW people x 2 images, in the layout of results/lfw_embeddings.npz."""
    rows = list(csv.DictReader(open(data_dir / "lfw" / "manifest.csv")))
    by = defaultdict(list)
    for r in rows:
        by[r["subject"]].append(r["path"])
    people = sorted(s for s, p in by.items() if len(p) >= 2)[:60]
    subj, emb = [], []
    for s in people:
        for p in by[s][:2]:
            subj.append(s)
            emb.append(pipeline.single(str(data_dir / p), pick="center").embedding)
    path = tmp_path_factory.mktemp("emb") / "lfw.npz"
    np.savez(path, subjects=np.array(subj), emb=np.stack(emb))
    return path


def test_crash_kill9_short(tmp_path, lfw_npz):
    """5 random kill -9 of an enrolling process (the long run is benchmarks/gallery_crash_test.py)."""
    s = _crash_module().run(5, str(lfw_npz), gallery=str(tmp_path / "g"), key="22" * 32, n_users=60,
                            max_delay=0.08, compact_every=7, seed=3, log=lambda m: None)
    assert s["kills"] >= 3
    for r in s["runs"]:
        assert r["check_ok"] and r["lost"] == 0 and r["extra_is_in_flight"] and r["verify_ok"], r
        assert r["templates"] == 2 * r["count"] == r["index"]


def test_concurrent_verify_while_another_process_enrols(tmp_path, lfw_npz):
    mod = _crash_module()
    ids, vecs = mod.load_users(lfw_npz, 60)
    g = Gallery(tmp_path / "g", fingerprint="crash-test")
    pre = ids[:10]
    for u, v in zip(pre, vecs[:10]):
        g.enroll(u, v, ["neutral", "smile"])
    expected = {u: float(np.max(vecs[i] @ vecs[i, 1])) for i, u in enumerate(pre)}
    rest = os.path.join(tmp_path, "rest.npz")
    np.savez(rest, ids=np.array(ids), vecs=vecs)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "gallery_crash_test.py"), "--worker",
                             "--gallery", str(tmp_path / "g"), "--vecs", rest, "--compact-every", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    errors, calls = [], [0]
    stop = threading.Event()

    def reader(t):
        i = t
        while not stop.is_set():
            u = pre[i % len(pre)]
            try:
                r = g.verify_identity(u, vecs[i % len(pre), 1])
                if abs(r.score - expected[u]) > 1e-5:
                    errors.append(f"torn verify {u}: {r.score} != {expected[u]}")
                top = g.identify(vecs[i % len(pre), 0], k=2)
                if top[0].user_id != u or top[0].score < 0.999:
                    errors.append(f"identify {u} -> {top[0]}")
            except Exception as e:  # any error is a failure
                errors.append(repr(e))
            calls[0] += 1
            i += 1

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    out, err = proc.communicate(timeout=120)
    stop.set()
    for t in threads:
        t.join()
    assert proc.returncode == 0, err[-2000:]
    assert "finished" in out
    assert errors == [] and calls[0] > 0
    assert g.count() == len(ids) and g.check()["templates"] == 2 * len(ids)
