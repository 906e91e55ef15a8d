"""Gallery storage on small synthetic arrays: typed errors, fingerprint mismatch, HNSW/IVF indexes, settings."""
from __future__ import annotations

import numpy as np
import pytest

from smile2pay.config import ConfigError, GallerySettings, parse_gallery_key
from smile2pay.errors import GalleryError
from smile2pay.gallery import Gallery, generate_key

from helpers import FP


def test_missing_and_corrupt_sqlite_galleries_are_typed(tmp_path):
    """SQLite only (bad enrolment / identify inputs: tests/unit/test_gallery_backends.py, on both backends)."""
    with pytest.raises(GalleryError) as e:
        Gallery(tmp_path / "missing", create=False)
    assert e.value.code == "GALLERY_NOT_FOUND"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "gallery.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError) as e:
        Gallery(tmp_path / "junk")
    assert e.value.code == "GALLERY_CORRUPT"


def test_model_fingerprint_mismatch(tmp_path):
    Gallery(tmp_path / "g", fingerprint="w600k_mbf:aaa", dim=8).close()
    with pytest.raises(GalleryError) as e:
        Gallery(tmp_path / "g", fingerprint="sface:bbb", dim=8)
    assert e.value.code == "GALLERY_MODEL_MISMATCH"
    assert e.value.details["gallery_model"] == "w600k_mbf:aaa"
    Gallery(tmp_path / "g", fingerprint="w600k_mbf:aaa", dim=8).close()


def test_hnsw_soft_delete_and_rebuild(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 64)).astype(np.float32)
    g = Gallery(tmp_path / "g", fingerprint=FP, dim=64, index="hnsw")
    for i in range(200):
        g.enroll(f"u{i:03d}", X[i], check_duplicates=False)
    for i in range(0, 30):
        g.remove(f"u{i:03d}")
    assert g.search_index.deleted  # soft-deleted, below the rebuild fraction
    for i in range(30, 200):
        assert g.identify(X[i], k=1)[0].user_id == f"u{i:03d}"
    assert all(m.user_id >= "u030" for i in range(30) for m in g.identify(X[i], k=5))
    for i in range(30, 60):
        g.remove(f"u{i:03d}")
    assert len(g.search_index.deleted) < 30  # passed 20%: rebuilt
    assert g.check()["index"] == 140


def _clustered(n_id: int, dim: int = 64, per_id: int = 2, genuine_cos: float = 0.7, seed: int = 0):
    """Identities = random centres; samples = normalise(centre + noise) with the given mean genuine
    cosine (a stand-in for real embeddings at this small scale: the 1M figures use real statistics)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(n_id, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    s = np.sqrt((1 - genuine_cos) / genuine_cos)       # noise norm giving E[cos(a, b)] ~ genuine_cos
    out = c[:, None, :] + s * rng.normal(size=(n_id, per_id, dim)) / np.sqrt(dim)
    out /= np.linalg.norm(out, axis=2, keepdims=True)
    return out.astype(np.float32)


def test_ivf_index_exact_until_trained_then_ivf_with_real_removal():
    from smile2pay.gallery.index import FlatIndex, IVFIndex

    X = _clustered(3000)
    ids = np.arange(3000, dtype=np.int64) * 3 + 7           # sparse 64-bit ids like template ids
    idx = IVFIndex(64, train_min=2000, probe_fraction=0.25, min_probe=1, refine=16)
    idx.add(ids[:1000], X[:1000, 0])
    D, I = idx.search(X[:5, 1], 3)
    assert not idx.trained and I.shape == (5, 3) and list(I[:, 0]) == list(ids[:5])   # exact below train_min
    idx.add(ids[1000:], X[1000:, 0])
    exact = FlatIndex(64)
    exact.add(ids, X[:, 0])
    _, IE = exact.search(X[:, 1], 1)
    D, I = idx.search(X[:, 1], 5)
    assert idx.trained and idx.ivf.ntotal == 3000 and idx.ivf.nprobe == int(np.ceil(0.25 * idx.ivf.nlist))
    assert np.mean(I[:, 0] == IE[:, 0]) >= 0.97                                     # recall@1 vs exact
    assert np.all(np.diff(D, axis=1) <= 1e-6)                                       # sorted, exact scores
    assert np.allclose(D[:, 0], np.einsum("ij,ij->i", X[(I[:, 0] - 7) // 3, 0], X[:, 1]), atol=1e-5)
    # removal: real in the exact store, soft in the lists (never returned), refilled past 20%
    gone = ids[:100]
    assert idx.remove(gone) == 100 and idx.ntotal == 2900 and idx.ivf.ntotal == 3000
    assert idx.deleted == set(gone.tolist())
    _, I = idx.search(X[:100, 1], 10)
    assert not np.isin(I, gone).any()
    # an enrolment after training (and after a removal) goes into the lists and is found
    new = _clustered(1, seed=9)[0]
    idx.add(np.array([10**12]), new[:1])
    assert idx.search(new[:1], 1)[1][0, 0] == 10**12         # its own list is always probed
    assert sorted(idx.live_ids().tolist()) == sorted(ids[100:].tolist() + [10**12])
    idx.remove(ids[100:700])                                  # 700 deleted > 20% of 3001: lists refilled
    assert not idx.deleted and idx.ivf.ntotal == idx.ntotal == 2301
    assert idx.search(new[:1], 1)[1][0, 0] == 10**12
    _, I = idx.search(X[:700, 1], 10)
    assert not np.isin(I, ids[:700]).any()
    idx.remove(ids[700:710])
    idx.rebuild()                               # compact: drops the soft-deleted; no retrain below 4x growth
    assert not idx.deleted and idx.ivf.ntotal == 2291 and idx.trained_on == 3000


def test_gallery_ivf_index(tmp_path):
    X = _clustered(400, seed=3)
    g = Gallery(tmp_path / "g", fingerprint=FP, dim=64, index="ivf", index_params={"train_min": 300})
    for i in range(400):
        g.enroll(f"u{i:03d}", X[i, 0], check_duplicates=False)
    hits = sum(g.identify(X[i, 1], k=1)[0].user_id == f"u{i:03d}" for i in range(400))
    assert g.search_index.trained and hits >= 390
    for i in range(20):
        g.remove(f"u{i:03d}")
    assert g.search_index.ntotal == 380 and len(g.search_index.deleted) == 20
    assert all(m.user_id >= "u020" for i in range(20) for m in g.identify(X[i, 1], k=5))
    g.compact()                 # fresh index from SQLite (no deleted entries), trained again on first use
    assert g.identify(X[300, 1], k=1)[0].user_id == "u300"
    assert not g.search_index.deleted and g.search_index.ivf.ntotal == 380
    assert g.check()["ok"] and g.check()["index"] == 380 and g.check()["index_kind"] == "ivf"
    g.close()
    g = Gallery(tmp_path / "g", fingerprint=FP, dim=64, index_params={"train_min": 300})   # reopen: kind from meta
    assert g.index_kind == "ivf" and g.identify(X[200, 1], k=1)[0].user_id == "u200" and g.search_index.trained
    g.close()
    assert GallerySettings.from_env({"SMILE2PAY_GALLERY_INDEX": "ivf"}).index == "ivf"


def test_gallery_settings_from_env(tmp_path):
    key = generate_key()
    assert GallerySettings.from_env({"SMILE2PAY_GALLERY_KEY": key.hex()}).key == key
    import base64
    assert GallerySettings.from_env({"SMILE2PAY_GALLERY_KEY": base64.b64encode(key).decode()}).key == key
    kf = tmp_path / "k"
    kf.write_bytes(key)
    assert GallerySettings.from_env({"SMILE2PAY_GALLERY_KEY_FILE": str(kf)}).key == key
    assert GallerySettings.from_env({}).key is None
    assert GallerySettings.from_env({"SMILE2PAY_IDENTITY_THRESHOLD": "0.5"}).identity_threshold == 0.5
    for env in ({"SMILE2PAY_GALLERY_KEY": "abcd"}, {"SMILE2PAY_GALLERY_KEY_FILE": str(tmp_path / "nope")},
                {"SMILE2PAY_IDENTITY_THRESHOLD": "2"}, {"SMILE2PAY_GALLERY_INDEX": "annoy"}):
        with pytest.raises(ConfigError):
            GallerySettings.from_env(env)
    with pytest.raises(ConfigError):
        parse_gallery_key(b"x" * 31)
