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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import GalleryError
# re-exported for smile2pay.gallery.store.<name> users: MAX_USER_ID, MODES, the result types, top_users
from .base import (MAX_USER_ID, MODES, BaseGallery, DuplicateIdentityError,  # noqa: F401
                   EnrollResult, IdentityResult, IntegritySnapshot, Match, TemplateInfo, UserRecord, WriteTxn, check_meta, top_users)
from .crypto import TemplateCipher
from .index import make_index

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "gallery.db"
LOCK_NAME = "gallery.lock"

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


def _now() -> float:
    return time.time()


class SqliteWriteTxn(WriteTxn):
    """:class:`WriteTxn` on one SQLite connection inside ``BEGIN IMMEDIATE`` (the gallery commits it)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self.c = conn

    def user_exists(self, user_id: str) -> bool:
        return self.c.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone() is not None

    def put_user(self, user_id: str, now: float, exists: bool) -> None:
        if exists:
            self.c.execute("UPDATE users SET updated=? WHERE user_id=?", (now, user_id))
        else:
            self.c.execute("INSERT INTO users(user_id, created, updated) VALUES (?, ?, ?)", (user_id, now, now))

    def add_templates(self, user_id: str, rows: Sequence[tuple[str, bytes]], now: float) -> list[int]:
        tids = [int(self.c.execute("INSERT INTO templates(user_id, kind, created, vec) VALUES (?, ?, ?, ?)",
                                   (user_id, kd, now, blob)).lastrowid) for kd, blob in rows]
        self._log("add", tids)
        return tids

    def delete_templates(self, user_id: str) -> list[int]:
        old = [r[0] for r in self.c.execute("SELECT id FROM templates WHERE user_id=?", (user_id,))]
        self.c.execute("DELETE FROM templates WHERE user_id=?", (user_id,))
        self._log("del", old)
        return old

    def delete_user(self, user_id: str) -> list[int] | None:
        tids = [r[0] for r in self.c.execute("SELECT id FROM templates WHERE user_id=?", (user_id,))]
        if not tids and not self.user_exists(user_id):
            return None
        self.c.execute("DELETE FROM templates WHERE user_id=?", (user_id,))
        self.c.execute("DELETE FROM au_baselines WHERE user_id=?", (user_id,))
        self.c.execute("DELETE FROM users WHERE user_id=?", (user_id,))
        self._log("del", tids)
        self.touched_users.add(user_id)
        return tids

    def put_baseline(self, user_id: str, blob: bytes, now: float) -> None:
        self.c.execute("INSERT OR REPLACE INTO au_baselines(user_id, updated, blob) VALUES (?, ?, ?)",
                       (user_id, now, blob))
        self.touched_users.add(user_id)

    def sealed_rows(self):
        return (self.c.execute("SELECT id, user_id, vec FROM templates").fetchall(),
                self.c.execute("SELECT user_id, blob FROM au_baselines").fetchall())

    def reseal(self, templates, baselines, cipher: TemplateCipher) -> None:
        self.c.executemany("UPDATE templates SET vec=? WHERE id=?", [(b, t) for t, b in templates])
        self.c.executemany("UPDATE au_baselines SET blob=? WHERE user_id=?", [(b, u) for u, b in baselines])
        self.c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('cipher', ?)", (cipher.name,))
        if cipher.enabled:
            self.c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('key_check', ?)", (cipher.key_check(),))
        else:
            self.c.execute("DELETE FROM meta WHERE key='key_check'")

    def _log(self, op: str, tids: list[int]) -> None:
        self.c.executemany("INSERT INTO changes(op, template_id) VALUES (?, ?)", [(op, t) for t in tids])
        self.templates_changed = self.templates_changed or bool(tids)


class Gallery(BaseGallery):
    """Enrolled templates of one embedding space in a folder (SQLite + in-memory FAISS index). The API
    is :class:`~smile2pay.gallery.base.GalleryStore`; see the module doc for durability and erasure.

    Args:
        path: gallery folder (created when ``create`` is true).
        fingerprint: the identity model's fingerprint (``FacePipeline.model_fingerprint``). Stored on
            creation; opening with another one raises ``GALLERY_MODEL_MISMATCH``. ``None`` skips
            the check (storage-only tools such as ``remove``/``count``).
        key: 32-byte AES key, or None (a folder gallery then uses ``gallery.key`` beside it, created
            0600 for a new gallery). Must match how the gallery was created.
        identity_threshold: cosine at or above which two faces count as the same identity
            (duplicate detection, ``Match.match``, ``IdentityResult.match``). The default
            (:data:`smile2pay.config.DEFAULT_IDENTITY_THRESHOLD`, 0.42) is a strict uncalibrated
            guess; use a calibrated value in production.
        index: ``"flat"`` (exact, default), ``"hnsw"`` or ``"ivf"`` (IVF-PQ + exact re-ranking, for
            large galleries; see docs/gallery.md): only used when the gallery is created.
        search_threads: FAISS OpenMP threads (process-wide; default 1, fastest for single queries;
            None leaves the setting alone).
    """

    backend = "sqlite"

    @classmethod
    def open(cls, location, **kwargs) -> "Gallery":
        """A folder, or ``sqlite:///abs/path`` / ``sqlite://rel/path``; ``pg``/``follow`` are ignored."""
        kwargs.pop("pg", None)
        kwargs.pop("follow", None)
        location = os.fspath(location)
        if location.startswith("sqlite://"):
            location = location[len("sqlite://"):]
            if not location:
                raise GalleryError("sqlite:// URL needs a path (sqlite:///abs/path or sqlite://rel/path)",
                                   code="GALLERY_BAD_URL")
        return cls(location, **kwargs)

    def __init__(self, path: str | os.PathLike, *, fingerprint: str | None = None, dim: int = 512,
                 key: bytes | None = None, identity_threshold: float | None = None,
                 index: str = "flat", create: bool = True, index_params: dict | None = None,
                 search_threads: int | None = 1, plaintext: bool = False) -> None:
        self.path = Path(path)
        self._setup(key=key, plaintext=plaintext, identity_threshold=identity_threshold,
                    index_params=index_params, search_threads=search_threads)
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

    @contextmanager
    def _write_txn(self, index: bool = False):
        """Backend operation: flock + ``BEGIN IMMEDIATE``; the index is synced first (``index``) and after
        a change of templates."""
        with self._write():
            if index:
                self._sync()
            tx = SqliteWriteTxn(self._conn)
            with self._txn():
                yield tx
            tx.committed()
            if tx.templates_changed:
                self._sync()

    # -- backend reads -------------------------------------------------------------------------
    def _owners_of(self, tids: Sequence[int]) -> dict[int, tuple[str, str]]:
        if not tids:
            return {}
        q = ",".join("?" * len(tids))
        with self._lock:
            return {r[0]: (r[1], r[2]) for r in
                    self._conn.execute(f"SELECT id, user_id, kind FROM templates WHERE id IN ({q})", list(tids))}

    def _fresh_index(self, what: str) -> None:
        self._sync()

    def _read_user(self, user_id: str):
        with self._lock:
            r = self._conn.execute("SELECT user_id, created, updated FROM users WHERE user_id=?",
                                   (user_id,)).fetchone()
            if r is None:
                return None
            ts = self._conn.execute("SELECT id, kind, created FROM templates WHERE user_id=? ORDER BY id",
                                    (user_id,)).fetchall()
        return r[0], r[1], r[2], ts

    def _read_templates(self, user_id: str) -> list[tuple[int, str, np.ndarray]]:
        """One snapshot of the user's rows, so 1:1 never sees a half-written enrolment."""
        with self._lock:
            rows = self._conn.execute("SELECT id, kind, vec FROM templates WHERE user_id=? ORDER BY id",
                                      (user_id,)).fetchall()
        return [(r[0], r[1], self._unseal(user_id, r[2])) for r in rows]

    def _read_baseline(self, user_id: str) -> dict | None:
        with self._lock:
            r = self._conn.execute("SELECT blob FROM au_baselines WHERE user_id=?", (user_id,)).fetchone()
        return None if r is None else self._open_baseline(user_id, r[0])

    def _integrity(self) -> IntegritySnapshot:
        with self._lock:
            self._sync()
            c = self._conn
            ic = c.execute("PRAGMA integrity_check").fetchone()[0]
            rows = c.execute("SELECT id, user_id, vec FROM templates").fetchall()
            orphans = c.execute("SELECT COUNT(*) FROM users u WHERE NOT EXISTS "
                                "(SELECT 1 FROM templates t WHERE t.user_id=u.user_id)").fetchone()[0]
            return IntegritySnapshot(integrity=ic, rows=rows, users=self.count(), users_without_templates=orphans,
                                     index_ids=set(self._index.live_ids().tolist()))

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

    # -- maintenance ---------------------------------------------------------------------------
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

    def _rekeyed(self, cipher: TemplateCipher, new_key: bytes | None) -> None:
        super()._rekeyed(cipher, new_key)
        self._rekey_file(new_key)

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
