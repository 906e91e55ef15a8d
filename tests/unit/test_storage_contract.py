"""The storage contract: every registered backend implements it, and the same behavioural checks pass on
each (SQLite in a temporary folder; PostgreSQL in a fresh schema of the session's throwaway cluster).

Embeddings here are small synthetic unit vectors (dim 8): this is storage maths (cosine, top-k, sealing),
not face recognition, so the expected scores are exact."""
from __future__ import annotations

import abc
import uuid

import numpy as np
import pytest

from smile2pay.decision.lockout import GuardSettings
from smile2pay.errors import GalleryError
from smile2pay.gallery import (BACKENDS, BaseGallery, BaseGuard, DuplicateIdentityError, GalleryStore, GuardStore,
                               WriteTxn, backend_kind, open_gallery, open_guard)

FP = "contract:test"
DIM = 8
KEY = bytes.fromhex("5a" * 32)
KEY2 = bytes.fromhex("a5" * 32)


def unit(*weights) -> np.ndarray:
    """A unit vector from its first coordinates (the rest zero)."""
    v = np.zeros(DIM, np.float32)
    v[:len(weights)] = weights
    return v / np.linalg.norm(v)


E = [unit(*([0] * i + [1])) for i in range(DIM)]          # the basis: mutually orthogonal "people"


def code_of(fn) -> str:
    with pytest.raises(GalleryError) as e:
        fn()
    return e.value.code


# -------------------------------------------------------------------------------- declared contract
def _abstract_members(*bases: type) -> set[str]:
    return set().union(*(b.__abstractmethods__ for b in bases))


@pytest.mark.parametrize("kind", sorted(BACKENDS))
def test_backend_classes_implement_the_whole_contract(kind):
    b = BACKENDS[kind]
    gallery, guard = b.gallery_class(), b.guard_class()
    assert issubclass(gallery, GalleryStore) and issubclass(guard, GuardStore)
    assert gallery.backend == kind and backend_kind(f"{b.schemes[-1]}://x") == kind
    for cls, contract in ((gallery, (GalleryStore, BaseGallery)), (guard, (GuardStore, BaseGuard))):
        assert not cls.__abstractmethods__, f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} abstract"
        for name in _abstract_members(*contract):
            member = getattr(cls, name)
            assert not getattr(member, "__isabstractmethod__", False), f"{cls.__name__}.{name} is not implemented"
    # the write transaction each gallery yields implements WriteTxn
    txn = {"sqlite": "SqliteWriteTxn", "postgresql": "PgWriteTxn"}[kind]
    txn_cls = getattr(__import__(gallery.__module__, fromlist=[txn]), txn)
    assert issubclass(txn_cls, WriteTxn) and not txn_cls.__abstractmethods__


def test_contract_declares_the_public_api():
    """The contract lists the gallery API that callers use (so a new backend cannot miss one)."""
    expected = {"enroll", "remove", "get", "templates", "verify_identity", "identify", "set_au_baseline",
                "au_baseline", "list", "count", "template_count", "__contains__", "__len__", "check", "compact",
                "rotate_key", "close", "encrypted", "check_user_id"}
    assert expected <= GalleryStore.__abstractmethods__
    assert {"locked_until", "reserve", "release", "record", "reset", "use_nonce", "audit", "audit_records",
            "forget_user", "close", "for_gallery"} <= GuardStore.__abstractmethods__


def test_a_backend_missing_an_operation_cannot_be_instantiated(tmp_path):
    """The check above can fail: drop one backend operation and the class is abstract."""
    from smile2pay.gallery.store import Gallery

    class Broken(Gallery):
        @abc.abstractmethod
        def _read_baseline(self, user_id): ...             # the operation declared but not implemented

    assert Broken.__abstractmethods__ == {"_read_baseline"}
    with pytest.raises(TypeError):
        Broken(tmp_path / "g", fingerprint=FP, dim=DIM, key=KEY)


# -------------------------------------------------------------------------------- both backends
@pytest.fixture(params=sorted(BACKENDS))
def location(request, tmp_path):
    """A fresh gallery location for each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "g")
    pg = request.getfixturevalue("pg_cluster")
    return pg.url(schema="c_" + uuid.uuid4().hex[:12])


@pytest.fixture
def opener(location):
    opened = []

    def open_(**kw):
        kw.setdefault("fingerprint", FP)
        kw.setdefault("dim", DIM)
        if not kw.get("plaintext"):
            kw.setdefault("key", KEY)
        g = open_gallery(location, **kw)
        opened.append(g)
        return g

    yield open_
    for g in opened:
        g.close()


def test_enroll_modes_get_list_count(opener):
    g = opener()
    assert isinstance(g, GalleryStore) and g.encrypted and g.dim == DIM and g.fingerprint == FP
    r = g.enroll("alice", np.stack([E[0], unit(1, 0.2)]), kind=["neutral", "smile"])
    assert r.created and r.mode == "new" and len(r.template_ids) == 2 and r.kinds == ["neutral", "smile"]
    g.enroll("bob", E[1])
    assert g.count() == len(g) == 2 and g.template_count() == 3 and g.list() == ["alice", "bob"]
    assert g.list(offset=1) == ["bob"] and g.list(limit=1) == ["alice"]
    assert "alice" in g and "carol" not in g
    rec = g.get("alice")
    assert rec.user_id == "alice" and [t.kind for t in rec.templates] == ["neutral", "smile"]
    assert [t.id for t in rec.templates] == r.template_ids and rec.created <= rec.updated
    assert code_of(lambda: g.enroll("bob", E[2])) == "GALLERY_USER_EXISTS"
    a = g.enroll("bob", E[2], mode="append", check_duplicates=False)
    assert not a.created and a.replaced == 0 and g.template_count() == 4
    rp = g.enroll("bob", E[3], mode="replace")
    assert rp.replaced == 2 and not rp.created and g.templates("bob")[2].shape == (1, DIM)
    ids, kinds, t = g.templates("alice", kind="smile")
    assert kinds == ["smile"] and ids == [r.template_ids[1]] and np.allclose(t[0], unit(1, 0.2), atol=1e-6)
    assert code_of(lambda: g.templates("alice", kind="other")) == "GALLERY_USER_NOT_FOUND"


def test_validation_errors_are_the_same_everywhere(opener):
    g = opener()
    g.enroll("alice", E[0])
    bad = [
        (lambda: g.enroll("", E[1]), "GALLERY_BAD_USER_ID"),
        (lambda: g.enroll("x\n", E[1]), "GALLERY_BAD_USER_ID"),
        (lambda: g.enroll("u" * 257, E[1]), "GALLERY_BAD_USER_ID"),
        (lambda: g.enroll("bad\udcffid", E[1]), "GALLERY_BAD_USER_ID"),   # a non-UTF-8 argv byte
        (lambda: g.templates("bad\udcffid"), "GALLERY_BAD_USER_ID"),
        (lambda: g.enroll("x", E[1], mode="upsert"), "GALLERY_BAD_MODE"),
        (lambda: g.enroll("x", np.stack([E[1], E[2]]), kind=["a"]), "GALLERY_BAD_KIND"),
        (lambda: g.enroll("x", E[1], kind=" "), "GALLERY_BAD_KIND"),
        (lambda: g.enroll("x", E[1], kind="neu\ntral"), "GALLERY_BAD_KIND"),
        (lambda: g.enroll("x", E[1], kind="k" * 100_000), "GALLERY_BAD_KIND"),
        (lambda: g.enroll("x", np.ones(DIM + 1)), "GALLERY_BAD_EMBEDDING"),
        (lambda: g.enroll("x", np.zeros(DIM)), "GALLERY_BAD_EMBEDDING"),
        (lambda: g.enroll("x", np.full(DIM, np.nan)), "GALLERY_BAD_EMBEDDING"),
        (lambda: g.enroll("x", "not numbers"), "GALLERY_BAD_EMBEDDING"),
        (lambda: g.identify(np.stack([E[0], E[1]])), "GALLERY_BAD_EMBEDDING"),
        (lambda: g.verify_identity("alice", np.stack([E[0], E[1]])), "GALLERY_BAD_EMBEDDING"),
        (lambda: g.identify(E[0], k=0), "GALLERY_BAD_K"),
        (lambda: g.remove("nobody"), "GALLERY_USER_NOT_FOUND"),
        (lambda: g.get("nobody"), "GALLERY_USER_NOT_FOUND"),
        (lambda: g.templates("nobody"), "GALLERY_USER_NOT_FOUND"),
        (lambda: g.verify_identity("nobody", E[0]), "GALLERY_USER_NOT_FOUND"),
        (lambda: g.set_au_baseline("nobody", {"AU12": 0.1}), "GALLERY_USER_NOT_FOUND"),
    ]
    for fn, code in bad:
        assert code_of(fn) == code
    assert g.check_user_id("ok-id") == "ok-id"
    assert g.count() == 1 and g.template_count() == 1           # nothing was written by a failed call


def test_duplicate_check_writes_nothing(opener):
    g = opener(identity_threshold=0.9)
    g.enroll("alice", E[0])
    with pytest.raises(DuplicateIdentityError) as e:
        g.enroll("mallory", np.stack([E[4], unit(1, 0.1)]))    # the second image is alice
    assert e.value.code == "GALLERY_DUPLICATE" and e.value.details["duplicate_of"] == "alice"
    assert e.value.details["image_index"] == 1 and e.value.details["score"] == pytest.approx(0.99504, abs=1e-4)
    assert "mallory" not in g and g.template_count() == 1
    g.enroll("alice", unit(1, 0.1), mode="append")               # the user's own templates are no duplicate
    g.enroll("mallory", unit(1, 0.5), threshold=0.95)            # 0.93: below a stricter per-call threshold
    g.enroll("twin", E[0], check_duplicates=False)
    assert g.count() == 3 and g.template_count() == 4


def test_identify_top_k_best_template_per_user(opener):
    g = opener(identity_threshold=0.5)
    g.enroll("a", np.stack([unit(1, 1), unit(1, 0.05)]))        # two templates, the second is the closer one
    g.enroll("b", unit(1, 1, 1), check_duplicates=False)
    g.enroll("c", unit(0.1, 0, 0, 0, 0, 1))
    for i in range(30):                                           # fillers: the search must widen past them
        g.enroll(f"f{i:02d}", unit(*([0] * 6 + [1, 0.01 * (i + 1)])), check_duplicates=False)
    q = E[0]
    m = g.identify(q, k=3)
    assert [x.user_id for x in m] == ["a", "b", "c"]
    assert m[0].score == pytest.approx(float(unit(1, 0.05) @ q), abs=1e-5) and m[0].match
    assert m[0].template_id == g.templates("a")[0][1] and m[1].score == pytest.approx(1 / np.sqrt(3), abs=1e-5)
    assert not m[2].match and m[2].score == pytest.approx(float(unit(0.1, 0, 0, 0, 0, 1) @ q), abs=1e-5)
    assert len({x.user_id for x in g.identify(q, k=50)}) == 33    # every user once, never more than exist
    assert [x.user_id for x in g.identify(E[5], k=1)] == ["c"]
    assert g.identify(E[0], k=1, threshold=0.9999)[0].match is False


def test_verify_identity_is_the_best_template_cosine(opener):
    from smile2pay.scoring import identity_score

    g = opener(identity_threshold=0.8)
    g.enroll("a", np.stack([unit(1, 1), unit(1, 0.3)]), kind=["smile", "neutral"])
    r = g.verify_identity("a", unit(1, 0.2))
    ids, kinds, t = g.templates("a")
    s, j = identity_score(t, unit(1, 0.2))
    assert r.score == pytest.approx(s, abs=1e-6) and r.template_id == ids[j] and r.kind == "neutral" == kinds[j]
    assert r.match and r.threshold == 0.8
    assert not g.verify_identity("a", E[3]).match
    assert g.verify_identity("a", unit(1, 0.2), threshold=0.999).match is False


def test_remove_erases_templates_baseline_and_index(opener):
    g = opener()
    g.enroll("a", E[0], baseline=({"AU12": 0.1}, [0.5, 0.25]))
    g.enroll("b", E[1])
    assert g.au_baseline("a") == {"probs": {"AU12": 0.1}, "embedding": [0.5, 0.25]}
    assert g.remove("a") == 1 and "a" not in g and g.count() == 1
    assert all(m.user_id != "a" for m in g.identify(E[0], k=5))
    assert g.au_baseline("a") is None
    assert code_of(lambda: g.remove("a")) == "GALLERY_USER_NOT_FOUND"
    g.enroll("a", E[0])                                           # the id can be enrolled again
    assert g.au_baseline("a") is None and g.check()["ok"]


def test_baselines_are_sealed_and_replaced(opener):
    g = opener()
    g.enroll("a", E[0])
    assert g.au_baseline("a") is None
    g.set_au_baseline("a", {"AU6": 0.2, "AU12": 0.05})
    assert g.au_baseline("a") == {"probs": {"AU6": 0.2, "AU12": 0.05}, "embedding": None}
    g.set_au_baseline("a", {"AU12": 0.3}, embedding=np.array([1.0, 2.0]))
    assert g.au_baseline("a") == {"probs": {"AU12": 0.3}, "embedding": [1.0, 2.0]}
    g.enroll("a", E[0], mode="replace", baseline=({"AU12": 0.4}, None))
    assert g.au_baseline("a")["probs"] == {"AU12": 0.4}


def test_reopen_check_and_key_rotation(opener):
    g = opener()
    g.enroll("a", np.stack([E[0], E[1]]), baseline=({"AU12": 0.1}, None))
    g.enroll("b", E[2])
    rep = g.check()
    assert rep["ok"] and rep["templates"] == rep["index"] == 3 and rep["users"] == 2 and rep["encrypted"]
    assert rep["missing_in_index"] == rep["extra_in_index"] == rep["users_without_templates"] == 0
    before = g.templates("a")[2]
    assert g.rotate_key(KEY2) == 3
    assert g.encrypted and g.check()["ok"] and np.allclose(g.templates("a")[2], before)
    assert g.au_baseline("a") == {"probs": {"AU12": 0.1}, "embedding": None}
    g.enroll("c", E[3])                                            # writes after a rotation use the new key
    g.close()
    assert code_of(lambda: opener(key=KEY)) == "GALLERY_WRONG_KEY"
    g2 = opener(key=KEY2)
    assert g2.count() == 3 and np.allclose(g2.templates("a")[2], before) and g2.identify(E[3], k=1)[0].user_id == "c"
    assert g2.rotate_key(None) == 4 and not g2.encrypted
    g2.close()
    assert code_of(lambda: opener(key=KEY2)) == "GALLERY_NOT_ENCRYPTED"
    assert code_of(lambda: opener(key=None)) == "GALLERY_PLAINTEXT"
    g3 = opener(key=None, plaintext=True)
    assert g3.verify_identity("a", E[1]).score == pytest.approx(1.0, abs=1e-6)


def test_open_errors(opener):
    opener().close()
    assert code_of(lambda: opener(fingerprint="other:model")) == "GALLERY_MODEL_MISMATCH"
    assert code_of(lambda: opener(dim=DIM * 2)) == "GALLERY_MODEL_MISMATCH"
    assert code_of(lambda: opener(key=KEY, plaintext=True)) == "GALLERY_KEY_CONFLICT"
    with opener() as g:                                            # the context manager closes it
        assert g.count() == 0


# -------------------------------------------------------------------------------- guards
@pytest.fixture
def guard(opener):
    g = opener()
    gd = open_guard(g, GuardSettings(max_failures=2, window_s=100, lockout_s=50))
    yield gd
    gd.close()


def test_guard_lockout_nonces_audit(guard):
    assert isinstance(guard, GuardStore)
    now = 1_000_000.0
    assert guard.locked_until("u", now) is None
    end, r1 = guard.reserve("u", now)
    assert end is None and r1 is not None
    guard.release(r1)                                               # a released attempt does not count
    guard.record("u", False, now)
    assert guard.locked_until("u", now + 1) is None
    end, r2 = guard.reserve("u", now + 2)                            # the second failure: reserved
    assert end is None
    guard.record("u", False, now + 2, reservation=r2)              # already counted by the reservation
    assert guard.locked_until("u", now + 3) == pytest.approx(now + 2 + 50, abs=1e-3)
    assert guard.reserve("u", now + 3)[0] == pytest.approx(now + 2 + 50, abs=1e-3)
    assert guard.locked_until("u", now + 60) is None                # the lockout expired
    guard.reset("u")
    guard.record("v", False, now)
    guard.record("v", False, now + 1)
    assert guard.locked_until("v", now + 2) is not None
    guard.record("v", True, now + 3)                                 # an approval clears the failures
    assert guard.locked_until("v", now + 4) is None
    guard.record("w", False, now)
    guard.record("w", False, now + 1)
    guard.forget_user("w")
    assert guard.locked_until("w", now + 2) is None
    assert guard.use_nonce("n-1") is True and guard.use_nonce("n-1") is False and guard.use_nonce("n-2") is True
    guard.audit({"user_id": "u", "approved": False, "reasons": ["IDENTITY_MISMATCH"]})
    with pytest.raises(ValueError):
        guard.audit({"embedding": np.zeros(DIM)})
    with pytest.raises(ValueError):
        guard.audit({"embedding": list(range(100))})
    recs = guard.audit_records()
    assert len(recs) == 1 and recs[0]["user_id"] == "u" and recs[0]["reasons"] == ["IDENTITY_MISMATCH"]
    assert isinstance(recs[0]["ts"], float)


def test_postgres_bulk_enroll_is_the_fleet_benchmarks_loader(pg_cluster):
    """``bench.fleet.populate`` loads through the public ``PostgresGallery.bulk_enroll``."""
    from smile2pay_tools.bench.fleet import populate

    url = pg_cluster.url(schema="c_" + uuid.uuid4().hex[:12])
    populate(url, 30, KEY, FP, dim=DIM, batch=12)
    with open_gallery(url, fingerprint=FP, dim=DIM, key=KEY, follow=False) as g:
        assert g.count() == 30 and g.indexed_templates == 30 and g.check()["ok"]
        v = g.templates("u0000007")[2][0]
        assert g.identify(v, k=1)[0].user_id == "u0000007"
        assert code_of(lambda: g.bulk_enroll([("bad\n", v)])) == "GALLERY_BAD_USER_ID"
