"""The storage contract of a gallery, and the logic every backend shares.

:class:`GalleryStore` is the contract: the public API that :func:`smile2pay.gallery.open_gallery` returns,
whatever the backend. :class:`BaseGallery` implements it once (validation, encryption at rest, the
duplicate check, top-k search, 1:1 scoring, key rotation) on a small set of *backend operations*, which
is all a backend writes:

Reads (called on ``self``)
    ``_read_user(user_id)``          -> ``(user_id, created, updated, [(id, kind, created)])`` or None
    ``_read_templates(user_id)``     -> ``[(id, kind, vector)]`` decrypted (use :meth:`BaseGallery._unseal`)
    ``_read_baseline(user_id)``      -> the baseline dict or None (use :meth:`BaseGallery._open_baseline`)
    ``_owners_of(template_ids)``     -> ``{id: (user_id, kind)}`` for the ids still enrolled
    ``_fresh_index(what)``           -> bring the in-memory index ``self._index`` up to date for a search
    ``list``, ``count``, ``template_count``, ``__contains__``, ``compact``, ``close`` (public, one query each)
Writes
    ``_write_txn(index=False)``      -> a context manager yielding a :class:`WriteTxn`: one serialised write
    transaction (``index=True``: ``self._index`` is current on entry, so the duplicate check sees every
    committed enrolment), committed on exit, after which the index holds the write.
    ``_integrity()``                 -> the backend's half of :meth:`check` (:class:`IntegritySnapshot`)

:class:`WriteTxn` is the contract of the write transaction: ``user_exists``, ``put_user``,
``add_templates``, ``delete_templates``, ``delete_user``, ``put_baseline``, ``sealed_rows``, ``reseal``.
Templates and baselines reach a backend already sealed (AES-256-GCM, bound to the user id and the identity
model), so no backend ever sees a plaintext embedding. The contract test (``tests/unit/test_storage_contract.py``)
runs the same behavioural checks on every registered backend.
"""
from __future__ import annotations

import abc
import hashlib
import json
import logging
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..config import DEFAULT_IDENTITY_THRESHOLD
from ..decision.lockout import GuardSettings, lockout_end
from ..errors import GalleryError, bad_chars
from ..scoring import identity_score
from .crypto import TemplateCipher

log = logging.getLogger(__name__)

MODES = ("new", "append", "replace")
MAX_USER_ID = 256


# -- results ---------------------------------------------------------------------------------------
class DuplicateIdentityError(GalleryError):
    """The face already matches another enrolled user above the identity threshold."""

    code = "GALLERY_DUPLICATE"
    exit_code = 1


@dataclass
class Match:
    user_id: str
    score: float            # best cosine over the user's templates
    template_id: int        # the template that gave the score
    kind: str
    match: bool             # score >= threshold

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = round(float(self.score), 5)
        return d


@dataclass
class IdentityResult:
    """Outcome of a 1:1 check against a claimed user id."""

    user_id: str
    score: float
    threshold: float
    match: bool
    template_id: int
    kind: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = round(float(self.score), 5)
        return d


@dataclass
class TemplateInfo:
    id: int
    kind: str
    created: float


@dataclass
class UserRecord:
    user_id: str
    created: float
    updated: float
    templates: list[TemplateInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EnrollResult:
    user_id: str
    mode: str
    template_ids: list[int]
    kinds: list[str]
    replaced: int = 0          # templates dropped by mode="replace"
    created: bool = True       # a new user (False: templates added to an existing one)
    rejected: list[dict] = field(default_factory=list)   # filled by Smile2Pay (images that failed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- shared pure helpers ---------------------------------------------------------------------------
def check_meta(meta: dict, stored_fp: str, fingerprint: str | None, dim: int, key: bytes | None,
               plaintext: bool = False) -> tuple[str, int, str, TemplateCipher]:
    """Check a gallery's stored metadata (either backend) against the identity model and key:
    ``(fingerprint, dim, index kind, cipher)`` or a typed ``GalleryError``. A plaintext gallery opens
    only when the caller says ``plaintext=True``."""
    if fingerprint and stored_fp != fingerprint:
        raise GalleryError("this gallery was made with another identity model; re-enrol with this model "
                           "or open it with the model that made it", code="GALLERY_MODEL_MISMATCH",
                           gallery_model=stored_fp, current_model=fingerprint)
    stored_dim = int(meta["dim"])
    if fingerprint and dim != stored_dim:
        raise GalleryError(f"gallery holds {stored_dim}-d vectors, model gives {dim}-d",
                           code="GALLERY_MODEL_MISMATCH")
    encrypted = meta["cipher"] != "none"
    if encrypted and key is None:
        raise GalleryError("this gallery is encrypted: set SMILE2PAY_GALLERY_KEY or "
                           "SMILE2PAY_GALLERY_KEY_FILE", code="GALLERY_KEY_REQUIRED")
    if not encrypted and key is not None:
        raise GalleryError("a key was given but this gallery is not encrypted; encrypt it with "
                           "rotate_key (smile2pay gallery-rotate-key)", code="GALLERY_NOT_ENCRYPTED")
    if not encrypted and not plaintext:
        raise GalleryError("this gallery stores templates in PLAINTEXT; open it with plaintext=True "
                           "(SMILE2PAY_GALLERY_PLAINTEXT=1, --plaintext) and encrypt it with "
                           "smile2pay gallery-rotate-key --generate-new-key FILE", code="GALLERY_PLAINTEXT")
    if not encrypted:
        log.warning("gallery templates are stored in PLAINTEXT (plaintext=True)")
    cipher = TemplateCipher(key)
    if encrypted:
        cipher.verify_key_check(bytes(meta["key_check"]))
    return stored_fp, stored_dim, str(meta.get("index", "flat")), cipher


def top_users(index, v: np.ndarray, k: int, owners_of, exclude: str | None = None
              ) -> list[tuple[str, float, int, str]]:
    """The ``k`` best users (best template each) of a FAISS index wrapper: ``(user, score, template id,
    kind)``, highest first. ``owners_of(template_ids)`` maps ids to ``(user, kind)`` (ids it does not
    know are skipped). The search widens until it has ``k`` distinct users or has seen every vector."""
    n = index.ntotal
    if n == 0:
        return []
    kk = min(n, max(4 * k, 16))
    while True:
        D, I = index.search(v[None, :], kk)
        owners = owners_of([int(t) for t in I[0] if t >= 0])
        best: dict[str, tuple[float, int, str]] = {}
        for s, t in zip(D[0], I[0]):
            t = int(t)
            if t < 0 or t not in owners:
                continue
            uid, kind = owners[t]
            if uid == exclude:
                continue
            if uid not in best or s > best[uid][0]:
                best[uid] = (float(s), t, kind)
        if len(best) >= k or kk >= n:
            break
        kk = min(n, kk * 4)
    return sorted(((u, s, t, kd) for u, (s, t, kd) in best.items()), key=lambda r: -r[1])[:k]


def not_enrolled(user_id: str, kind: str | None = None) -> GalleryError:
    return GalleryError(f"user {user_id!r} is not enrolled" + (f" with kind {kind!r}" if kind else ""),
                        code="GALLERY_USER_NOT_FOUND", user_id=user_id)


# -- the contract ----------------------------------------------------------------------------------
class GalleryStore(abc.ABC):
    """The public gallery API every backend offers (what ``open_gallery`` returns). Takes embeddings,
    not images (see ``Smile2Pay``). Attributes: ``backend`` (registry name), ``path`` (what tools print
    as the location), ``fingerprint``, ``dim``, ``index_kind``, ``identity_threshold``."""

    backend: str
    path: Any
    fingerprint: str
    dim: int
    index_kind: str
    identity_threshold: float

    @classmethod
    def open(cls, location: str, **kwargs) -> "GalleryStore":
        """The gallery at ``location`` (what :func:`smile2pay.gallery.open_gallery` calls): by default
        ``cls(location, **kwargs)`` without the keyword arguments this backend does not take."""
        import inspect

        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
        return cls(location, **kwargs)

    @property
    @abc.abstractmethod
    def encrypted(self) -> bool:
        """True when templates are sealed with a key (AES-256-GCM)."""

    @abc.abstractmethod
    def check_user_id(self, user_id: str) -> str:
        """``user_id`` if it is a valid user id, else ``GalleryError(GALLERY_BAD_USER_ID)``."""

    @abc.abstractmethod
    def enroll(self, user_id: str, embeddings, kind: str | Sequence[str] = "neutral", *, mode: str = "new",
               check_duplicates: bool = True, threshold: float | None = None,
               baseline: tuple[dict, Any] | None = None) -> EnrollResult:
        """Store templates for ``user_id`` (modes new/append/replace; duplicate check; optional baseline)."""

    @abc.abstractmethod
    def remove(self, user_id: str) -> int:
        """Erase a user; the number of templates removed."""

    @abc.abstractmethod
    def get(self, user_id: str) -> UserRecord:
        """The user's record (template ids, kinds, times; no vectors)."""

    @abc.abstractmethod
    def templates(self, user_id: str, kind: str | None = None) -> tuple[list[int], list[str], np.ndarray]:
        """The user's decrypted templates: ``(ids, kinds, (n, dim) array)``."""

    @abc.abstractmethod
    def verify_identity(self, user_id: str, embedding, *, threshold: float | None = None) -> IdentityResult:
        """1:1 against the claimed user."""

    @abc.abstractmethod
    def identify(self, embedding, k: int = 5, *, threshold: float | None = None) -> list[Match]:
        """1:N: the ``k`` best users, highest first."""

    @abc.abstractmethod
    def set_au_baseline(self, user_id: str, probs: dict[str, float], embedding=None) -> None:
        """Store the user's neutral AU probabilities (and AU embedding), sealed like templates."""

    @abc.abstractmethod
    def au_baseline(self, user_id: str) -> dict | None:
        """``{"probs": {AU: p}, "embedding": [...] | None}`` or None."""

    @abc.abstractmethod
    def list(self, offset: int = 0, limit: int | None = None) -> list[str]:
        """Enrolled user ids, sorted (byte order)."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of enrolled users."""

    @abc.abstractmethod
    def template_count(self) -> int:
        """Number of stored templates."""

    @abc.abstractmethod
    def __contains__(self, user_id: str) -> bool: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def check(self) -> dict[str, Any]:
        """Integrity report; ``GALLERY_CORRUPT`` when it fails."""

    @abc.abstractmethod
    def compact(self) -> dict[str, Any]:
        """Purge erased data from storage."""

    @abc.abstractmethod
    def rotate_key(self, new_key: bytes | None) -> int:
        """Re-encrypt every template and baseline with ``new_key`` (None decrypts); the template count."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WriteTxn(abc.ABC):
    """One serialised write transaction of a backend (yielded by ``_write_txn``). Blobs arrive sealed.
    A backend's ``_write_txn`` commits it, then calls :meth:`committed` (runs the ``on_commit`` hooks)
    and reads ``templates_changed`` (refresh the index) and ``touched_users`` (drop per-user caches)."""

    def __init__(self) -> None:
        self.templates_changed = False
        self.touched_users: set[str] = set()
        self.hooks: list[Callable[[], None]] = []

    def on_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the transaction committed (SQLite: still under the folder's write lock)."""
        self.hooks.append(fn)

    def committed(self) -> None:
        for fn in self.hooks:
            fn()

    @abc.abstractmethod
    def user_exists(self, user_id: str) -> bool: ...

    @abc.abstractmethod
    def put_user(self, user_id: str, now: float, exists: bool) -> None:
        """Create the user row (``exists`` false) or touch its ``updated`` time."""

    @abc.abstractmethod
    def add_templates(self, user_id: str, rows: Sequence[tuple[str, bytes]], now: float) -> list[int]:
        """Insert ``(kind, sealed vector)`` rows, log them as added; their template ids, in order."""

    @abc.abstractmethod
    def delete_templates(self, user_id: str) -> list[int]:
        """Delete the user's templates, log them as deleted; their ids."""

    @abc.abstractmethod
    def delete_user(self, user_id: str) -> list[int] | None:
        """Delete the user, their templates (logged) and baseline; their template ids, or None (and
        nothing done) when there is no such user."""

    @abc.abstractmethod
    def put_baseline(self, user_id: str, blob: bytes, now: float) -> None:
        """Insert or replace the user's sealed AU baseline."""

    @abc.abstractmethod
    def sealed_rows(self) -> tuple[list[tuple[int, str, bytes]], list[tuple[str, bytes]]]:
        """Every ``(template id, user id, blob)`` and every ``(user id, baseline blob)``."""

    @abc.abstractmethod
    def reseal(self, templates: Iterable[tuple[int, bytes]], baselines: Iterable[tuple[str, bytes]],
               cipher: TemplateCipher) -> None:
        """Replace blobs by id / user id and record ``cipher`` (name, key check) in the metadata."""


@dataclass
class IntegritySnapshot:
    """A backend's half of :meth:`BaseGallery.check`: one consistent read of the stored rows."""

    integrity: str                          # the storage engine's own check ("ok" when it has none)
    rows: list[tuple[int, str, bytes]]       # (template id, user id, sealed vector)
    users: int
    users_without_templates: int
    index_ids: set[int]                      # what the in-memory index holds
    extra: dict[str, Any] = field(default_factory=dict)   # backend fields appended to the report
    settled: bool = True                     # False: the index may be behind; do not call it corrupt


# -- the shared logic --------------------------------------------------------------------------------
class BaseGallery(GalleryStore):
    """:class:`GalleryStore` implemented once over the backend operations listed in the module doc.

    Subclasses call :meth:`_setup` first in ``__init__``, then open their storage and set
    ``fingerprint``, ``dim``, ``index_kind`` and ``_cipher`` (:func:`check_meta` checks stored metadata).
    """

    backend = "abstract"

    def _setup(self, *, key: bytes | None, plaintext: bool, identity_threshold: float | None,
               index_params: dict | None, search_threads: int | None) -> None:
        if plaintext and key is not None:
            raise GalleryError("give a key or plaintext=True, not both", code="GALLERY_KEY_CONFLICT")
        if search_threads:
            # FAISS single queries are fastest on one OpenMP thread (MEASURING.md; here 0.36 ms vs 17 ms
            # for 1.5k templates with 2 threads on a busy 2-core machine). Process-wide: pass None to keep
            # the caller's setting.
            import faiss

            faiss.omp_set_num_threads(int(search_threads))
        self.identity_threshold = (DEFAULT_IDENTITY_THRESHOLD if identity_threshold is None
                                   else float(identity_threshold))
        self._index_params = index_params or {}
        self._lock = threading.RLock()          # the in-memory index (and a backend's caches/handles)
        self._index = None
        self._cipher = TemplateCipher(None)

    # -- backend operations --------------------------------------------------------------------
    @abc.abstractmethod
    def _write_txn(self, index: bool = False) -> AbstractContextManager[WriteTxn]: ...

    @abc.abstractmethod
    def _read_user(self, user_id: str) -> tuple[str, float, float, list[tuple[int, str, float]]] | None: ...

    @abc.abstractmethod
    def _read_templates(self, user_id: str) -> list[tuple[int, str, np.ndarray]]: ...

    @abc.abstractmethod
    def _read_baseline(self, user_id: str) -> dict | None: ...

    @abc.abstractmethod
    def _owners_of(self, tids: Sequence[int]) -> dict[int, tuple[str, str]]: ...

    @abc.abstractmethod
    def _fresh_index(self, what: str) -> None: ...

    @abc.abstractmethod
    def _integrity(self) -> IntegritySnapshot: ...

    # -- validation ----------------------------------------------------------------------------
    def check_user_id(self, user_id: str) -> str:
        """``user_id`` if it is a valid user id, else ``GalleryError(GALLERY_BAD_USER_ID)``."""
        # a lone surrogate (0xD800-0xDFFF: a command-line argument that is not UTF-8) is not text: no database
        # can store it
        if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_USER_ID \
                or bad_chars(user_id):
            raise GalleryError(f"user id must be a non-empty printable string of at most {MAX_USER_ID} "
                               f"characters, got {user_id!r}", code="GALLERY_BAD_USER_ID")
        return user_id

    def _vectors(self, embeddings) -> np.ndarray:
        try:
            v = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError):
            raise GalleryError("embeddings must be a numeric array", code="GALLERY_BAD_EMBEDDING") from None
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.dim or v.shape[0] == 0:
            raise GalleryError(f"embeddings must have shape (n, {self.dim}), got {v.shape}",
                               code="GALLERY_BAD_EMBEDDING")
        if not np.all(np.isfinite(v)):
            raise GalleryError("embeddings contain NaN or inf", code="GALLERY_BAD_EMBEDDING")
        n = np.linalg.norm(v, axis=1, keepdims=True)
        if np.any(n < 1e-6):
            raise GalleryError("an embedding has zero norm", code="GALLERY_BAD_EMBEDDING")
        return np.ascontiguousarray(v / n, dtype=np.float32)

    def _one_vector(self, embedding, what: str) -> np.ndarray:
        v = self._vectors(embedding)
        if len(v) != 1:
            raise GalleryError(f"{what} takes one embedding", code="GALLERY_BAD_EMBEDDING")
        return v[0]

    @staticmethod
    def _kinds(kind: str | Sequence[str], n: int) -> list[str]:
        try:
            kinds = [kind] * n if isinstance(kind, str) else list(kind)
        except TypeError:   # None, a number: not a kind
            kinds = []
        # printable text of at most MAX_USER_ID characters, as for user ids (a lone surrogate is not text: no
        # database can store it; a control character or a 100 kB label is nobody's template kind)
        if len(kinds) != n or not all(isinstance(x, str) and x.strip() and len(x) <= MAX_USER_ID
                                      and not bad_chars(x)
                                      for x in kinds):
            raise GalleryError(f"kind must be one non-empty printable string of at most {MAX_USER_ID} characters, "
                               f"or one per embedding", code="GALLERY_BAD_KIND")
        return kinds

    def _threshold(self, threshold) -> float:
        return self.identity_threshold if threshold is None else float(threshold)

    # -- encryption at rest --------------------------------------------------------------------
    @property
    def encrypted(self) -> bool:
        return self._cipher.enabled

    def _aad(self, user_id: str) -> bytes:
        return f"{user_id}\x00{self.fingerprint}".encode()

    def _seal(self, user_id: str, vec: np.ndarray) -> bytes:
        return self._cipher.seal(np.asarray(vec, dtype="<f4").tobytes(), self._aad(user_id))

    def seal_template(self, user_id: str, vec: np.ndarray) -> bytes:
        """A template sealed exactly as :meth:`enroll` stores it (bulk loaders, benchmarks)."""
        return self._seal(self.check_user_id(user_id), vec)

    def _unseal(self, user_id: str, blob: bytes) -> np.ndarray:
        raw = self._cipher.open(bytes(blob), self._aad(user_id))
        if len(raw) != 4 * self.dim:
            raise GalleryError("a stored template has the wrong size", code="GALLERY_CORRUPT")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)

    def _baseline_aad(self, user_id: str) -> bytes:
        return f"{user_id}\x00au-baseline\x00{self.fingerprint}".encode()

    def _baseline_blob(self, user_id: str, probs: dict[str, float], embedding=None) -> bytes:
        payload = {"probs": {str(k): float(v) for k, v in probs.items()},
                   "embedding": None if embedding is None else [float(x) for x in np.asarray(embedding).ravel()]}
        return self._cipher.seal(json.dumps(payload).encode(), self._baseline_aad(user_id))

    def _open_baseline(self, user_id: str, blob: bytes) -> dict:
        return json.loads(self._cipher.open(bytes(blob), self._baseline_aad(user_id)))

    # -- search --------------------------------------------------------------------------------
    def _search_users(self, v: np.ndarray, k: int, exclude: str | None = None) -> list[tuple[str, float, int, str]]:
        """Top-k users by best template score on the in-memory index."""
        with self._lock:
            return top_users(self._index, v, k, self._owners_of, exclude)

    def _check_duplicates(self, user_id: str, vecs: np.ndarray, thr: float) -> None:
        for i, v in enumerate(vecs):
            hits = self._search_users(v, 1, exclude=user_id)
            if hits and hits[0][1] >= thr:
                raise DuplicateIdentityError(
                    f"image {i} of {user_id!r} matches enrolled user {hits[0][0]!r} "
                    f"(cosine {hits[0][1]:.3f} >= {thr:.3f}); not enrolled",
                    user_id=user_id, duplicate_of=hits[0][0], score=round(hits[0][1], 5),
                    threshold=thr, image_index=i)

    # -- public API ----------------------------------------------------------------------------
    def enroll(self, user_id: str, embeddings, kind: str | Sequence[str] = "neutral", *, mode: str = "new",
               check_duplicates: bool = True, threshold: float | None = None,
               baseline: tuple[dict, Any] | None = None) -> EnrollResult:
        """Store templates for ``user_id``.

        mode: ``"new"`` (the user must not exist: ``GALLERY_USER_EXISTS``), ``"append"`` (add to an
        existing or new user) or ``"replace"`` (drop the user's templates, then add).
        With ``check_duplicates`` a face matching *another* user at or above the threshold raises
        :class:`DuplicateIdentityError` (``GALLERY_DUPLICATE``, details ``duplicate_of``, ``score``)
        and nothing is written. The check runs under the backend's write lock on a current index, so it
        sees every committed enrolment. ``baseline`` = ``(probs, au_embedding)``: the user's neutral AU
        baseline, written in the same transaction as the templates (a crash leaves both or neither).
        """
        self.check_user_id(user_id)
        if mode not in MODES:
            raise GalleryError(f"mode must be one of {MODES}, got {mode!r}", code="GALLERY_BAD_MODE")
        vecs = self._vectors(embeddings)
        kinds = self._kinds(kind, len(vecs))
        thr = self._threshold(threshold)
        with self._write_txn(index=True) as tx:
            exists = tx.user_exists(user_id)
            if exists and mode == "new":
                raise GalleryError(f"user {user_id!r} is already enrolled; use mode 'append' or 'replace'",
                                   code="GALLERY_USER_EXISTS", user_id=user_id)
            if check_duplicates:
                self._check_duplicates(user_id, vecs, thr)
            now = time.time()
            replaced = len(tx.delete_templates(user_id)) if exists and mode == "replace" else 0
            tx.put_user(user_id, now, exists)
            tids = tx.add_templates(user_id, [(kd, self._seal(user_id, v)) for v, kd in zip(vecs, kinds)], now)
            if baseline is not None:
                tx.put_baseline(user_id, self._baseline_blob(user_id, *baseline), now)
        log.info("enrolled %d template(s) (mode=%s)", len(tids), mode)
        return EnrollResult(user_id=user_id, mode=mode, template_ids=tids, kinds=kinds, replaced=replaced,
                            created=not exists)

    def remove(self, user_id: str) -> int:
        """Erase a user: rows deleted and vectors removed from the index (on every server of a shared
        backend as it catches up). Returns the number of templates removed. :meth:`compact` purges
        what the storage engine keeps of erased rows."""
        self.check_user_id(user_id)
        with self._write_txn() as tx:
            tids = tx.delete_user(user_id)
            if tids is None:
                raise not_enrolled(user_id)
        log.info("removed a user (%d templates)", len(tids))
        return len(tids)

    def get(self, user_id: str) -> UserRecord:
        self.check_user_id(user_id)
        r = self._read_user(user_id)
        if r is None:
            raise not_enrolled(user_id)
        return UserRecord(r[0], r[1], r[2], [TemplateInfo(*t) for t in r[3]])

    def set_au_baseline(self, user_id: str, probs: dict[str, float], embedding=None) -> None:
        """Store the user's neutral AU probabilities (and AU embedding), sealed like templates."""
        self.check_user_id(user_id)
        blob = self._baseline_blob(user_id, probs, embedding)
        with self._write_txn() as tx:
            if not tx.user_exists(user_id):
                raise not_enrolled(user_id)
            tx.put_baseline(user_id, blob, time.time())

    def au_baseline(self, user_id: str) -> dict | None:
        """``{"probs": {AU: p}, "embedding": [...] | None}`` or None when none was stored."""
        self.check_user_id(user_id)
        return self._read_baseline(user_id)

    def templates(self, user_id: str, kind: str | None = None) -> tuple[list[int], list[str], np.ndarray]:
        """The user's decrypted templates: (ids, kinds, (n, dim) array). For decision policies."""
        self.check_user_id(user_id)
        rows = self._read_templates(user_id)
        if kind is not None:
            rows = [r for r in rows if r[1] == kind]
        if not rows:
            raise not_enrolled(user_id, kind)
        return [r[0] for r in rows], [r[1] for r in rows], np.stack([r[2] for r in rows])

    def verify_identity(self, user_id: str, embedding, *, threshold: float | None = None) -> IdentityResult:
        """1:1: best cosine between ``embedding`` and the claimed user's templates (as :meth:`templates`
        reads them), scored by :func:`smile2pay.scoring.identity_score`."""
        v = self._one_vector(embedding, "verify_identity")
        ids, kinds, t = self.templates(user_id)
        score, j = identity_score(t, v)
        thr = self._threshold(threshold)
        return IdentityResult(user_id=user_id, score=score, threshold=thr, match=bool(score >= thr),
                              template_id=int(ids[j]), kind=kinds[j])

    def identify(self, embedding, k: int = 5, *, threshold: float | None = None) -> list[Match]:
        """1:N: the ``k`` best users (best template each), highest first. Open-set: only a candidate
        with ``match`` true (score >= threshold) is an identification; an empty or all-false list
        means "not enrolled"."""
        if not isinstance(k, int) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}", code="GALLERY_BAD_K")
        v = self._one_vector(embedding, "identify")
        thr = self._threshold(threshold)
        self._fresh_index("identification")
        hits = self._search_users(v, k)
        return [Match(user_id=u, score=s, template_id=t, kind=kd, match=bool(s >= thr)) for u, s, t, kd in hits]

    def __len__(self) -> int:
        return self.count()

    @property
    def search_index(self):
        """The in-memory search index (:mod:`smile2pay.gallery.index` wrapper) as of the last sync: for
        diagnostics and tests; read it, never write it (the gallery keeps it in step with storage)."""
        return self._index

    @property
    def indexed_templates(self) -> int:
        """Vectors in this process's in-memory index."""
        with self._lock:
            return 0 if self._index is None else int(self._index.ntotal)

    def check(self) -> dict[str, Any]:
        """Integrity report: the storage engine's check, every template decrypts and is in the index, the
        index holds nothing else, every user has a template. Raises ``GALLERY_CORRUPT`` if not."""
        snap = self._integrity()
        for _, uid, blob in snap.rows:
            self._unseal(uid, blob)
        db_ids = {r[0] for r in snap.rows}
        report = {"integrity": snap.integrity, "users": int(snap.users), "templates": len(db_ids),
                  "index": len(snap.index_ids), "missing_in_index": len(db_ids - snap.index_ids),
                  "extra_in_index": len(snap.index_ids - db_ids),
                  "users_without_templates": int(snap.users_without_templates), "encrypted": self.encrypted,
                  "index_kind": self.index_kind, **snap.extra}
        report["ok"] = (snap.integrity == "ok" and not report["missing_in_index"] and not report["extra_in_index"]
                        and not snap.users_without_templates)
        if not report["ok"] and snap.settled:
            raise GalleryError("gallery integrity check failed", code="GALLERY_CORRUPT", **report)
        return report

    def rotate_key(self, new_key: bytes | None) -> int:
        """Re-encrypt every template and AU baseline with ``new_key`` (``None`` decrypts the gallery) in
        one transaction, then :meth:`compact`. Other open handles must reopen with the new key."""
        new = TemplateCipher(new_key)
        with self._write_txn() as tx:
            rows, baselines = tx.sealed_rows()
            tx.reseal([(tid, new.seal(self._cipher.open(bytes(b), self._aad(uid)), self._aad(uid)))
                       for tid, uid, b in rows],
                      [(uid, new.seal(self._cipher.open(bytes(b), self._baseline_aad(uid)), self._baseline_aad(uid)))
                       for uid, b in baselines], new)
            tx.on_commit(lambda: self._rekeyed(new, new_key))
        self.compact()
        log.info("gallery key rotated (%d templates, cipher=%s)", len(rows), new.name)
        return len(rows)

    def _rekeyed(self, cipher: TemplateCipher, new_key: bytes | None) -> None:
        """After a committed rotation (under the write lock): use ``cipher`` from now on. A backend that
        keeps the key somewhere (a key file) updates it here."""
        self._cipher = cipher


# -- the guard contract ------------------------------------------------------------------------------
def check_audit_record(record: dict) -> None:
    """Audit records hold ids, decisions, reason codes and scores, never images or embeddings."""
    for k, v in record.items():
        if hasattr(v, "shape") or (isinstance(v, (list, tuple)) and len(v) > 64):
            raise ValueError(f"audit field {k!r} looks like an array; audit records hold no biometrics")


def nonce_hash(nonce: str) -> str:
    """What a guard stores of a nonce (SHA-256 hex; the nonce itself is never stored)."""
    return hashlib.sha256(nonce.encode("utf-8")).hexdigest()


class GuardStore(abc.ABC):
    """The abuse-control store beside a gallery (what ``open_guard`` returns): lockout after repeated
    failures (policy: :mod:`smile2pay.decision.lockout`), single-use nonces, append-only audit records."""

    settings: GuardSettings

    @classmethod
    @abc.abstractmethod
    def for_gallery(cls, gallery: GalleryStore, settings: GuardSettings) -> "GuardStore":
        """The guard beside ``gallery`` (same backend; what :func:`smile2pay.gallery.open_guard` calls)."""

    @abc.abstractmethod
    def locked_until(self, user_id: str, now: float | None = None) -> float | None:
        """End time of the user's lockout, or None."""

    @abc.abstractmethod
    def reserve(self, user_id: str, now: float | None = None) -> tuple[float | None, Any]:
        """Check the lockout and count this attempt as a failure before the work, atomically:
        ``(locked_until, None)`` when locked, else ``(None, reservation)``."""

    @abc.abstractmethod
    def release(self, reservation) -> None:
        """The reserved attempt did not count: drop its reservation."""

    @abc.abstractmethod
    def record(self, user_id: str, approved: bool, now: float | None = None, reservation=None) -> None:
        """An attempt's outcome: approval clears the user's failures; a failure is recorded."""

    @abc.abstractmethod
    def reset(self, user_id: str) -> None:
        """Clear the user's failures (unlock)."""

    @abc.abstractmethod
    def use_nonce(self, nonce: str, now: float | None = None) -> bool:
        """True the first time a nonce is seen; False on any later use."""

    @abc.abstractmethod
    def audit(self, record: dict) -> None:
        """Append one decision record (no images or embeddings)."""

    @abc.abstractmethod
    def audit_records(self) -> list[dict]:
        """Every audit record, oldest first."""

    @abc.abstractmethod
    def forget_user(self, user_id: str) -> None:
        """Erasure: drop the user's lockout state."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BaseGuard(GuardStore):
    """:class:`GuardStore` with the shared parts: the lockout decision (:func:`lockout_end` over the
    backend's ``_recent_failures``) and audit record checking/serialising (``_append_audit`` stores)."""

    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def _recent_failures(self, user_id: str, n: int) -> list[float]:
        """The user's last ``n`` failure times, newest first."""

    @abc.abstractmethod
    def _append_audit(self, ts: float, record: dict, line: str) -> None:
        """Store one checked record; ``line`` is its JSON with ``ts`` (sorted keys)."""

    def locked_until(self, user_id: str, now: float | None = None) -> float | None:
        """End time of the user's lockout, or None. Locked when the last ``max_failures``
        consecutive failures fall within ``window_s`` and the last is under ``lockout_s`` old."""
        now = time.time() if now is None else now
        return lockout_end(self._recent_failures(user_id, self.settings.max_failures), self.settings, now)

    def audit(self, record: dict) -> None:
        """Append one decision record (caller passes no images/embeddings; checked here)."""
        check_audit_record(record)
        ts = time.time()
        self._append_audit(ts, record, json.dumps({"ts": ts, **record}, sort_keys=True, default=str))
