"""The gallery: SQLite (source of truth) + an in-memory FAISS index rebuilt from it.

Files in the gallery folder: ``gallery.db`` (+ SQLite's ``-wal``/``-shm``) and ``gallery.lock``.

Durability and crash safety
    SQLite in WAL mode with ``synchronous=FULL``: an enrolment is one transaction; once
    :meth:`Gallery.enroll` returns it survives a crash (kill -9, power loss). The FAISS index is
    never written to disk: it is rebuilt from SQLite on open and kept in step afterwards through
    a ``changes`` log (template ids only), so DB and index cannot disagree after a crash.
Concurrency
    Writers (enrol, remove, compact, rotate) take an exclusive ``flock`` on ``gallery.lock`` and a
    ``BEGIN IMMEDIATE`` transaction, so two enrolment processes cannot interleave a duplicate check
    and an insert. Readers (``verify_identity``, ``identify``) take no file lock: WAL gives them a
    consistent snapshot while a writer commits. Within a process one ``Gallery`` is thread-safe.
Encryption at rest
    With a key, every template is AES-256-GCM encrypted before it reaches SQLite; the index lives
    in memory only; ``temp_store=MEMORY``. A wrong key fails on open (``GALLERY_WRONG_KEY``).
Erasure
    ``remove`` deletes the user's rows (with ``secure_delete=ON``) and their vectors from the index;
    ``compact`` checkpoints and truncates the WAL, VACUUMs and truncates again, so no byte of a
    removed template remains in any gallery file.
Scores
    Cosine similarity (inner product of L2-normalised vectors). A user's score is the maximum over
    their templates (``fusion="max"``).
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import DEFAULT_IDENTITY_THRESHOLD
from ..errors import GalleryError
from .crypto import TemplateCipher
from .index import make_index

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "gallery.db"
LOCK_NAME = "gallery.lock"
MODES = ("new", "append", "replace")
MAX_USER_ID = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users(user_id) ON DELETE CASCADE,
    kind TEXT NOT NULL, created REAL NOT NULL, vec BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS templates_user ON templates(user_id);
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL,
    template_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS au_baselines (
    user_id TEXT PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE,
    updated REAL NOT NULL, blob BLOB NOT NULL);
"""


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


#: the key generated for a new folder gallery when none is configured (mode 0600, beside gallery.db)
KEY_FILE_NAME = "gallery.key"


def _write_key_file(path: Path, key: bytes, *, exclusive: bool) -> None:
    """Write a key as hex, mode 0600, fsynced: ``exclusive`` creates ``path`` only if it does not exist;
    otherwise a temporary file replaces it atomically."""
    target = path if exclusive else path.with_suffix(".tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), 0o600)
    try:
        os.write(fd, key.hex().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    if not exclusive:
        os.replace(target, path)


def _folder_key(folder: Path, creating: bool) -> tuple[bytes | None, str | None]:
    """The key of a folder gallery opened without one: read ``gallery.key`` beside it, or create it
    (0600) for a new gallery. Returns (key, where) or (None, None)."""
    from ..config import parse_gallery_key

    kf = folder / KEY_FILE_NAME
    if kf.is_file():
        try:
            return parse_gallery_key(kf.read_bytes()), str(kf)
        except Exception as e:   # noqa: BLE001 - a damaged key file is a typed error
            raise GalleryError(f"cannot read the gallery key file {kf}: {e}", code="GALLERY_KEY_FILE",
                               path=str(kf)) from None
    if not creating:
        return None, None
    from .crypto import generate_key

    key = generate_key()
    try:
        _write_key_file(kf, key, exclusive=True)
    except OSError as e:
        raise GalleryError(f"cannot write the gallery key file {kf}: {e.strerror}", code="GALLERY_IO",
                           path=str(kf)) from None
    log.warning("new gallery %s: templates are encrypted with a generated key stored in %s (mode 0600); keep a "
                "copy of it elsewhere, or move it out and pass it as SMILE2PAY_GALLERY_KEY_FILE", folder, kf)
    return key, str(kf)


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


def _now() -> float:
    return time.time()


class Gallery:
    """Enrolled templates of one embedding space. Takes embeddings, not images (see ``Smile2Pay``).

    Args:
        path: gallery folder (created when ``create`` is true).
        fingerprint: the identity model's fingerprint (``FacePipeline.model_fingerprint``). Stored on
            creation; opening with another one raises ``GALLERY_MODEL_MISMATCH``. ``None`` skips
            the check (storage-only tools such as ``remove``/``count``).
        key: 32-byte AES key, or None. Must match how the gallery was created.
        identity_threshold: cosine at or above which two faces count as the same identity
            (duplicate detection, ``Match.match``, ``IdentityResult.match``). The default
            (:data:`smile2pay.config.DEFAULT_IDENTITY_THRESHOLD`, 0.42) is a strict uncalibrated
            guess; use a calibrated value in production.
        index: ``"flat"`` (exact, default), ``"hnsw"`` or ``"ivf"`` (IVF-PQ + exact re-ranking, for
            large galleries; see docs/gallery.md): only used when the gallery is created.
        search_threads: FAISS OpenMP threads (process-wide; default 1, fastest for single queries;
            None leaves the setting alone).
    """

    def __init__(self, path: str | os.PathLike, *, fingerprint: str | None = None, dim: int = 512,
                 key: bytes | None = None, identity_threshold: float | None = None,
                 index: str = "flat", create: bool = True, index_params: dict | None = None,
                 search_threads: int | None = 1, plaintext: bool = False) -> None:
        self.path = Path(path)
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
        self._lock = threading.RLock()
        self._index_params = index_params or {}
        if not self.path.is_dir():
            if not create:
                raise GalleryError(f"no gallery at {self.path}", code="GALLERY_NOT_FOUND", path=str(self.path))
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise GalleryError(f"cannot create gallery folder {self.path}: {e.strerror}",
                                   code="GALLERY_IO", path=str(self.path)) from None
        db = self.path / DB_NAME
        if not db.exists() and not create:
            raise GalleryError(f"no gallery at {self.path}", code="GALLERY_NOT_FOUND", path=str(self.path))
        self.key_source = "given" if key is not None else None
        if key is None and not plaintext:
            key, self.key_source = _folder_key(self.path, creating=not db.exists())
        self._lockfile = open(self.path / LOCK_NAME, "a+b")
        try:
            self._conn = sqlite3.connect(str(db), timeout=60.0, isolation_level=None,
                                         check_same_thread=False)
            c = self._conn
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA secure_delete=ON")
            c.execute("PRAGMA temp_store=MEMORY")
            c.execute("PRAGMA foreign_keys=ON")
            with self._write():
                self._init_meta(fingerprint, dim, key, index, plaintext)
        except sqlite3.DatabaseError as e:
            self._close_handles()
            raise GalleryError(f"gallery database is unreadable: {e}", code="GALLERY_CORRUPT",
                               path=str(self.path)) from None
        except BaseException:
            self._close_handles()
            raise
        self._index = None
        self._epoch = None
        self._last_seq = 0
        self._sync()

    # -- opening -------------------------------------------------------------------------------
    def _init_meta(self, fingerprint, dim, key, index, plaintext=False) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    c.execute(stmt)
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            if not meta:
                cipher = TemplateCipher(key)
                rows = {"schema_version": str(SCHEMA_VERSION), "fingerprint": fingerprint or "",
                        "dim": str(int(dim)), "cipher": cipher.name, "index": index, "epoch": "0",
                        "created": str(_now())}
                if cipher.enabled:
                    rows["key_check"] = cipher.key_check()
                c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", list(rows.items()))
                meta = rows
                log.info("created gallery %s (cipher=%s, index=%s)", self.path, cipher.name, index)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if int(meta.get("schema_version", 0)) != SCHEMA_VERSION:
            raise GalleryError(f"gallery schema {meta.get('schema_version')} is not supported "
                               f"(this SDK reads {SCHEMA_VERSION})", code="GALLERY_SCHEMA")
        stored_fp = meta.get("fingerprint") or ""
        if fingerprint and not stored_fp:
            c.execute("UPDATE meta SET value=? WHERE key='fingerprint'", (fingerprint,))
            stored_fp = fingerprint
        self.fingerprint, self.dim, self.index_kind, self._cipher = check_meta(meta, stored_fp, fingerprint,
                                                                               dim, key, plaintext)

    @property
    def encrypted(self) -> bool:
        return self._cipher.enabled

    def _aad(self, user_id: str) -> bytes:
        return f"{user_id}\x00{self.fingerprint}".encode()

    def _seal(self, user_id: str, vec: np.ndarray) -> bytes:
        return self._cipher.seal(np.asarray(vec, dtype="<f4").tobytes(), self._aad(user_id))

    def _unseal(self, user_id: str, blob: bytes) -> np.ndarray:
        raw = self._cipher.open(bytes(blob), self._aad(user_id))
        if len(raw) != 4 * self.dim:
            raise GalleryError("a stored template has the wrong size", code="GALLERY_CORRUPT")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)

    # -- locking -------------------------------------------------------------------------------
    @contextmanager
    def _write(self):
        """Exclusive across processes (flock) and threads (RLock)."""
        with self._lock:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def _txn(self):
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            yield c
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # -- index sync ----------------------------------------------------------------------------
    def _sync(self) -> None:
        """Bring the in-memory index up to date with SQLite (full rebuild on a new epoch)."""
        with self._lock:
            c = self._conn
            c.execute("BEGIN")  # one read snapshot for epoch, changes and templates
            try:
                epoch = c.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
                if self._index is None or epoch != self._epoch:
                    self._rebuild(c)
                    self._epoch = epoch
                else:
                    rows = c.execute("SELECT seq, op, template_id FROM changes WHERE seq > ? ORDER BY seq",
                                     (self._last_seq,)).fetchall()
                    if rows:
                        self._apply(c, rows)
            finally:
                c.execute("COMMIT")

    def _rebuild(self, c) -> None:
        idx = make_index(self.index_kind, self.dim, **self._index_params)
        ids, vecs = [], []
        for tid, uid, blob in c.execute("SELECT id, user_id, vec FROM templates ORDER BY id"):
            ids.append(tid)
            vecs.append(self._unseal(uid, blob))
            if len(ids) >= 65536:
                idx.add(np.array(ids, np.int64), np.stack(vecs))
                ids, vecs = [], []
        if ids:
            idx.add(np.array(ids, np.int64), np.stack(vecs))
        self._index = idx
        self._last_seq = c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        log.debug("index rebuilt: %d templates", idx.ntotal)

    def _apply(self, c, rows) -> None:
        live = set(self._index.live_ids().tolist())
        adds, dels = [], []
        for seq, op, tid in rows:
            if op == "add":
                adds.append(tid)
            else:
                dels.append(tid)
        gone = [t for t in dels if t in live or t in adds]
        adds = [t for t in adds if t not in dels and t not in live]
        if gone:
            self._index.remove([t for t in gone if t in live])
        if adds:
            q = ",".join("?" * len(adds))
            got = c.execute(f"SELECT id, user_id, vec FROM templates WHERE id IN ({q})", adds).fetchall()
            if got:
                self._index.add(np.array([g[0] for g in got], np.int64),
                                np.stack([self._unseal(g[1], g[2]) for g in got]))
        self._last_seq = rows[-1][0]

    # -- validation ----------------------------------------------------------------------------
    def check_user_id(self, user_id: str) -> str:
        """``user_id`` if it is a valid user id, else ``GalleryError(GALLERY_BAD_USER_ID)``."""
        if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_USER_ID \
                or any(ord(ch) < 32 for ch in user_id):
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

    def _threshold(self, threshold) -> float:
        return self.identity_threshold if threshold is None else float(threshold)

    # -- search helpers ------------------------------------------------------------------------
    def _users_of(self, tids: Sequence[int]) -> dict[int, tuple[str, str]]:
        if not tids:
            return {}
        q = ",".join("?" * len(tids))
        return {r[0]: (r[1], r[2]) for r in
                self._conn.execute(f"SELECT id, user_id, kind FROM templates WHERE id IN ({q})", list(tids))}

    def _search_users(self, v: np.ndarray, k: int, exclude: str | None = None) -> list[tuple[str, float, int, str]]:
        """Top-k users by best template score (index must be in sync; caller holds the lock)."""
        return top_users(self._index, v, k, self._users_of, exclude)

    # -- public API ----------------------------------------------------------------------------
    def enroll(self, user_id: str, embeddings, kind: str | Sequence[str] = "neutral", *, mode: str = "new",
               check_duplicates: bool = True, threshold: float | None = None,
               baseline: tuple[dict, Any] | None = None) -> EnrollResult:
        """Store templates for ``user_id``.

        mode: ``"new"`` (the user must not exist: ``GALLERY_USER_EXISTS``), ``"append"`` (add to an
        existing or new user) or ``"replace"`` (drop the user's templates, then add).
        With ``check_duplicates`` a face matching *another* user at or above the threshold raises
        :class:`DuplicateIdentityError` (``GALLERY_DUPLICATE``, details ``duplicate_of``, ``score``)
        and nothing is written. ``baseline`` = ``(probs, au_embedding)``: the user's neutral AU
        baseline, written in the same transaction as the templates (a crash leaves both or neither).
        """
        self.check_user_id(user_id)
        if mode not in MODES:
            raise GalleryError(f"mode must be one of {MODES}, got {mode!r}", code="GALLERY_BAD_MODE")
        vecs = self._vectors(embeddings)
        kinds = [kind] * len(vecs) if isinstance(kind, str) else list(kind)
        if len(kinds) != len(vecs) or not all(isinstance(x, str) and x.strip() for x in kinds):
            raise GalleryError("kind must be one non-empty string or one per embedding", code="GALLERY_BAD_KIND")
        thr = self._threshold(threshold)
        with self._write():
            self._sync()
            exists = self._conn.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone() is not None
            if exists and mode == "new":
                raise GalleryError(f"user {user_id!r} is already enrolled; use mode 'append' or 'replace'",
                                   code="GALLERY_USER_EXISTS", user_id=user_id)
            if check_duplicates:
                for i, v in enumerate(vecs):
                    hits = self._search_users(v, 1, exclude=user_id)
                    if hits and hits[0][1] >= thr:
                        raise DuplicateIdentityError(
                            f"image {i} of {user_id!r} matches enrolled user {hits[0][0]!r} "
                            f"(cosine {hits[0][1]:.3f} >= {thr:.3f}); not enrolled",
                            user_id=user_id, duplicate_of=hits[0][0], score=round(hits[0][1], 5),
                            threshold=thr, image_index=i)
            now = _now()
            with self._txn() as c:
                replaced = 0
                if exists and mode == "replace":
                    old = [r[0] for r in c.execute("SELECT id FROM templates WHERE user_id=?", (user_id,))]
                    c.execute("DELETE FROM templates WHERE user_id=?", (user_id,))
                    c.executemany("INSERT INTO changes(op, template_id) VALUES ('del', ?)", [(t,) for t in old])
                    replaced = len(old)
                if exists:
                    c.execute("UPDATE users SET updated=? WHERE user_id=?", (now, user_id))
                else:
                    c.execute("INSERT INTO users(user_id, created, updated) VALUES (?, ?, ?)", (user_id, now, now))
                tids = []
                for v, kd in zip(vecs, kinds):
                    cur = c.execute("INSERT INTO templates(user_id, kind, created, vec) VALUES (?, ?, ?, ?)",
                                    (user_id, kd, now, self._seal(user_id, v)))
                    tids.append(int(cur.lastrowid))
                c.executemany("INSERT INTO changes(op, template_id) VALUES ('add', ?)", [(t,) for t in tids])
                if baseline is not None:
                    c.execute("INSERT OR REPLACE INTO au_baselines(user_id, updated, blob) VALUES (?, ?, ?)",
                              (user_id, now, self._baseline_blob(user_id, *baseline)))
            self._sync()
        log.info("enrolled %d template(s) (mode=%s)", len(tids), mode)
        return EnrollResult(user_id=user_id, mode=mode, template_ids=tids, kinds=kinds, replaced=replaced,
                            created=not exists)

    def remove(self, user_id: str) -> int:
        """Erase a user: rows deleted (secure_delete) and vectors removed from the index. Returns the
        number of templates removed. Call :meth:`compact` to purge WAL/free pages from disk."""
        self.check_user_id(user_id)
        with self._write():
            with self._txn() as c:
                tids = [r[0] for r in c.execute("SELECT id FROM templates WHERE user_id=?", (user_id,))]
                if not tids and c.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone() is None:
                    raise GalleryError(f"user {user_id!r} is not enrolled", code="GALLERY_USER_NOT_FOUND",
                                       user_id=user_id)
                c.execute("DELETE FROM templates WHERE user_id=?", (user_id,))
                c.execute("DELETE FROM au_baselines WHERE user_id=?", (user_id,))
                c.execute("DELETE FROM users WHERE user_id=?", (user_id,))
                c.executemany("INSERT INTO changes(op, template_id) VALUES ('del', ?)", [(t,) for t in tids])
            self._sync()
        log.info("removed a user (%d templates)", len(tids))
        return len(tids)

    def get(self, user_id: str) -> UserRecord:
        self.check_user_id(user_id)
        with self._lock:
            r = self._conn.execute("SELECT user_id, created, updated FROM users WHERE user_id=?",
                                   (user_id,)).fetchone()
            if r is None:
                raise GalleryError(f"user {user_id!r} is not enrolled", code="GALLERY_USER_NOT_FOUND",
                                   user_id=user_id)
            ts = [TemplateInfo(*t) for t in self._conn.execute(
                "SELECT id, kind, created FROM templates WHERE user_id=? ORDER BY id", (user_id,))]
        return UserRecord(r[0], r[1], r[2], ts)

    # -- AU baseline (the user's neutral face, for "a smile is a change from neutral") ----------
    def _baseline_aad(self, user_id: str) -> bytes:
        return f"{user_id}\x00au-baseline\x00{self.fingerprint}".encode()

    def _baseline_blob(self, user_id: str, probs: dict[str, float], embedding=None) -> bytes:
        import json

        payload = {"probs": {str(k): float(v) for k, v in probs.items()},
                   "embedding": None if embedding is None else [float(x) for x in np.asarray(embedding).ravel()]}
        return self._cipher.seal(json.dumps(payload).encode(), self._baseline_aad(user_id))

    def set_au_baseline(self, user_id: str, probs: dict[str, float], embedding=None) -> None:
        """Store the user's neutral AU probabilities (and AU embedding), sealed like templates."""
        self.check_user_id(user_id)
        blob = self._baseline_blob(user_id, probs, embedding)
        with self._write():
            with self._txn() as c:
                if c.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone() is None:
                    raise GalleryError(f"user {user_id!r} is not enrolled", code="GALLERY_USER_NOT_FOUND",
                                       user_id=user_id)
                c.execute("INSERT OR REPLACE INTO au_baselines(user_id, updated, blob) VALUES (?, ?, ?)",
                          (user_id, _now(), blob))

    def au_baseline(self, user_id: str) -> dict | None:
        """``{"probs": {AU: p}, "embedding": [...] | None}`` or None when none was stored."""
        import json

        self.check_user_id(user_id)
        with self._lock:
            r = self._conn.execute("SELECT blob FROM au_baselines WHERE user_id=?", (user_id,)).fetchone()
        if r is None:
            return None
        return json.loads(self._cipher.open(bytes(r[0]), self._baseline_aad(user_id)))

    def templates(self, user_id: str, kind: str | None = None) -> tuple[list[int], list[str], np.ndarray]:
        """The user's decrypted templates: (ids, kinds, (n, dim) array). For decision policies."""
        self.check_user_id(user_id)
        with self._lock:
            rows = self._conn.execute("SELECT id, kind, vec FROM templates WHERE user_id=? ORDER BY id",
                                      (user_id,)).fetchall()
        if kind is not None:
            rows = [r for r in rows if r[1] == kind]
        if not rows:
            raise GalleryError(f"user {user_id!r} is not enrolled" + (f" with kind {kind!r}" if kind else ""),
                               code="GALLERY_USER_NOT_FOUND", user_id=user_id)
        return [r[0] for r in rows], [r[1] for r in rows], np.stack([self._unseal(user_id, r[2]) for r in rows])

    def verify_identity(self, user_id: str, embedding, *, threshold: float | None = None) -> IdentityResult:
        """1:1: best cosine between ``embedding`` and the claimed user's templates (as :meth:`templates`
        reads them: for SQLite one snapshot, so it never sees a half-written enrolment)."""
        v = self._vectors(embedding)
        if len(v) != 1:
            raise GalleryError("verify_identity takes one embedding", code="GALLERY_BAD_EMBEDDING")
        ids, kinds, t = self.templates(user_id)
        s = t @ v[0]
        j = int(np.argmax(s))
        thr = self._threshold(threshold)
        return IdentityResult(user_id=user_id, score=float(s[j]), threshold=thr, match=bool(s[j] >= thr),
                              template_id=int(ids[j]), kind=kinds[j])

    def identify(self, embedding, k: int = 5, *, threshold: float | None = None) -> list[Match]:
        """1:N: the ``k`` best users (best template each), highest first. Open-set: only a candidate
        with ``match`` true (score >= threshold) is an identification; an empty or all-false list
        means "not enrolled"."""
        if not isinstance(k, int) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}", code="GALLERY_BAD_K")
        v = self._vectors(embedding)
        if len(v) != 1:
            raise GalleryError("identify takes one embedding", code="GALLERY_BAD_EMBEDDING")
        thr = self._threshold(threshold)
        with self._lock:
            self._sync()
            hits = self._search_users(v[0], k)
        return [Match(user_id=u, score=s, template_id=t, kind=kd, match=bool(s >= thr)) for u, s, t, kd in hits]

    def list(self, offset: int = 0, limit: int | None = None) -> list[str]:
        with self._lock:
            q = "SELECT user_id FROM users ORDER BY user_id LIMIT ? OFFSET ?"
            return [r[0] for r in self._conn.execute(q, (-1 if limit is None else int(limit), int(offset)))]

    def count(self) -> int:
        """Number of enrolled users."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def template_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0])

    def __contains__(self, user_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone() is not None

    def __len__(self) -> int:
        return self.count()

    def check(self) -> dict[str, Any]:
        """Integrity report: SQLite integrity, every template decrypts and is in the index, the index
        holds nothing else, every user has a template. Raises ``GALLERY_CORRUPT`` if not."""
        with self._lock:
            self._sync()
            c = self._conn
            ic = c.execute("PRAGMA integrity_check").fetchone()[0]
            rows = c.execute("SELECT id, user_id, vec FROM templates").fetchall()
            for _, uid, blob in rows:
                self._unseal(uid, blob)
            db_ids = {r[0] for r in rows}
            idx_ids = set(self._index.live_ids().tolist())
            orphans = c.execute("SELECT COUNT(*) FROM users u WHERE NOT EXISTS "
                                "(SELECT 1 FROM templates t WHERE t.user_id=u.user_id)").fetchone()[0]
            report = {"integrity": ic, "users": self.count(), "templates": len(db_ids),
                      "index": len(idx_ids), "missing_in_index": len(db_ids - idx_ids),
                      "extra_in_index": len(idx_ids - db_ids), "users_without_templates": int(orphans),
                      "encrypted": self.encrypted, "index_kind": self.index_kind}
        report["ok"] = (ic == "ok" and not report["missing_in_index"] and not report["extra_in_index"]
                        and not orphans)
        if not report["ok"]:
            raise GalleryError("gallery integrity check failed", code="GALLERY_CORRUPT", **report)
        return report

    def compact(self) -> dict[str, int]:
        """Purge erased data from disk: checkpoint + truncate the WAL, VACUUM, truncate again, clear
        the change log (new epoch) and rebuild the index (drops HNSW soft-deleted nodes)."""
        with self._write():
            c = self._conn
            with self._txn():
                c.execute("DELETE FROM changes")
                epoch = int(c.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]) + 1
                c.execute("UPDATE meta SET value=? WHERE key='epoch'", (str(epoch),))
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            c.execute("VACUUM")
            busy = c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self._index = None
            self._sync()
        sizes = {p.name: p.stat().st_size for p in self.path.iterdir() if p.name.startswith(DB_NAME)}
        if busy and busy[0]:
            log.warning("compact: a reader kept the WAL busy; erased pages may stay in the WAL until the next "
                        "compact")
        return {"epoch": epoch, "wal_busy": int(busy[0]) if busy else 0, **sizes}

    def rotate_key(self, new_key: bytes | None) -> int:
        """Re-encrypt every template with ``new_key`` (``None`` decrypts the gallery), then compact so
        no ciphertext under the old key remains. Other open handles must reopen with the new key."""
        new = TemplateCipher(new_key)
        with self._write():
            with self._txn() as c:
                rows = c.execute("SELECT id, user_id, vec FROM templates").fetchall()
                for tid, uid, blob in rows:
                    raw = self._cipher.open(bytes(blob), self._aad(uid))
                    c.execute("UPDATE templates SET vec=? WHERE id=?", (new.seal(raw, self._aad(uid)), tid))
                for uid, blob in c.execute("SELECT user_id, blob FROM au_baselines").fetchall():
                    raw = self._cipher.open(bytes(blob), self._baseline_aad(uid))
                    c.execute("UPDATE au_baselines SET blob=? WHERE user_id=?",
                              (new.seal(raw, self._baseline_aad(uid)), uid))
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('cipher', ?)", (new.name,))
                if new.enabled:
                    c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('key_check', ?)", (new.key_check(),))
                else:
                    c.execute("DELETE FROM meta WHERE key='key_check'")
            self._cipher = new
            self._rekey_file(new_key)
        self.compact()
        log.info("gallery key rotated (%d templates, cipher=%s)", len(rows), new.name)
        return len(rows)

    def _rekey_file(self, new_key: bytes | None) -> None:
        """Keep ``gallery.key`` (if the gallery uses one) in step with a rotation: the new key replaces it
        atomically; decrypting the gallery removes it."""
        kf = self.path / KEY_FILE_NAME
        if not kf.exists():
            return
        if new_key is None:
            kf.unlink()
            self.key_source = None
            return
        _write_key_file(kf, new_key, exclusive=False)

    def close(self) -> None:
        with self._lock:
            self._close_handles()

    def _close_handles(self) -> None:
        for h in ("_conn", "_lockfile"):
            obj = getattr(self, h, None)
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # pragma: no cover - best effort on close
                    pass
                setattr(self, h, None)

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
