"""The gallery on PostgreSQL: one shared source of truth for a fleet of verify servers.

``PostgresGallery`` has the public API of :class:`smile2pay.gallery.store.Gallery` (the embedded
SQLite gallery, which stays the default); :func:`smile2pay.gallery.open_gallery` picks one by URL:
``postgresql://user@host:port/db?schema=smile2pay`` (psycopg 3, ``pip install '.[postgres]'``).

Data
    Tables live in one PostgreSQL schema (``?schema=``, default ``smile2pay``): ``meta``, ``users``,
    ``templates`` (AES-256-GCM ciphertext, same format and AAD as the embedded gallery: the database
    never sees a plaintext embedding), ``au_baselines`` (sealed), ``changes`` (the change sequence:
    ``seq``, ``op`` add/del, ``template_id``; no user id), and the guard's ``failures``, ``nonces``
    and ``audit`` (:mod:`smile2pay.decision.guard_pg`). ``schema_version`` records the applied
    migrations; :data:`MIGRATIONS` are applied in order under an advisory lock at open.
Writes
    Every write (enrol, remove, baseline, rotate) is one transaction that first takes a
    transaction-scoped advisory lock, so writers from all servers are serialised: the duplicate check
    sees every committed enrolment, and change ``seq`` values commit in increasing order (a follower
    reading ``seq > last`` can never skip a change that commits later with a smaller number). The
    ``NOTIFY`` is sent in the same transaction, so it is delivered only if the change committed.
Reads
    Each server keeps a FAISS index (and the template -> user map) in memory, built from PostgreSQL at
    open and kept current by a follower thread: ``LISTEN`` wakes it, the sequence makes it exact
    (``changes WHERE seq > last_seq ORDER BY seq``), and it also polls every ``poll_s`` so a server
    that missed notifications (or was disconnected) catches up and never diverges. A server whose
    ``last_seq`` is older than the retained change log (see :meth:`compact`) rebuilds.
    1:N ``identify`` searches the in-memory index. 1:1 (``templates``/``verify_identity``) reads the
    claimed user's rows from PostgreSQL, so an erasure is effective for payments at once everywhere.
PostgreSQL unreachable
    ``identify`` and 1:1 keep working from the in-memory index for ``max_staleness_s`` after the last
    successful contact (1:1 then uses the cached vectors; AU baselines read before stay cached);
    after that, and for every write, a :class:`GalleryUnavailableError` (``GALLERY_UNAVAILABLE``,
    ``retry_after_s``) is raised; the HTTP service answers 503 with ``Retry-After``.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Any, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..config import DEFAULT_IDENTITY_THRESHOLD, PostgresSettings
from ..errors import GalleryError
from .crypto import TemplateCipher
from .index import make_index
from .store import (MODES, DuplicateIdentityError, EnrollResult, Gallery, Match, TemplateInfo,
                    UserRecord, check_meta, top_users)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "smile2pay"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: Ordered migrations: (version, statements). Never edit a released step; append a new one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        "CREATE TABLE meta (key text PRIMARY KEY, value bytea NOT NULL)",
        "CREATE TABLE users (user_id text PRIMARY KEY, created double precision NOT NULL, "
        "updated double precision NOT NULL)",
        "CREATE TABLE templates (id bigserial PRIMARY KEY, "
        "user_id text NOT NULL REFERENCES users(user_id) ON DELETE CASCADE, kind text NOT NULL, "
        "created double precision NOT NULL, vec bytea NOT NULL)",
        "CREATE INDEX templates_user ON templates(user_id)",
        "CREATE TABLE au_baselines (user_id text PRIMARY KEY REFERENCES users(user_id) ON DELETE CASCADE, "
        "updated double precision NOT NULL, blob bytea NOT NULL)",
        "CREATE TABLE changes (seq bigserial PRIMARY KEY, op text NOT NULL CHECK (op IN ('add', 'del')), "
        "template_id bigint NOT NULL, ts timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX changes_ts ON changes(ts)",
        # guard (lockout, single-use nonces, audit): shared by every server
        "CREATE TABLE failures (user_id text NOT NULL, ts double precision NOT NULL)",
        "CREATE INDEX failures_user ON failures(user_id, ts)",
        "CREATE TABLE nonces (nonce_hash text PRIMARY KEY, ts double precision NOT NULL)",
        "CREATE INDEX nonces_ts ON nonces(ts)",
        "CREATE TABLE audit (id bigserial PRIMARY KEY, ts double precision NOT NULL, record jsonb NOT NULL)",
    ]),
]


class GalleryUnavailableError(GalleryError):
    """PostgreSQL cannot be reached (or the cached index is too old to answer). Retry later."""

    code = "GALLERY_UNAVAILABLE"
    exit_code = 2


def _psycopg():
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise GalleryError("a postgresql:// gallery needs psycopg 3: pip install '.[postgres]' (source folder) or 'smile2pay-*.whl[postgres]'",
                           code="GALLERY_BACKEND_MISSING") from None
    return psycopg


def is_postgres_url(value) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def parse_url(url: str) -> tuple[str, str]:
    """(libpq URL without our ``schema`` parameter, schema name)."""
    parts = urlsplit(url)
    q = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in q if k == "schema"), DEFAULT_SCHEMA)
    if not _SCHEMA_RE.match(schema):
        raise GalleryError(f"schema must match {_SCHEMA_RE.pattern}, got {schema!r}", code="GALLERY_BAD_URL")
    rest = urlencode([(k, v) for k, v in q if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


def redact(url: str) -> str:
    """The URL without a password (for logs and health output)."""
    p = urlsplit(url)
    if p.password:
        host = p.hostname or ""
        netloc = f"{p.username}:***@{host}" + (f":{p.port}" if p.port else "")
        p = p._replace(netloc=netloc)
    return urlunsplit(p)


class PgPool:
    """A small connection pool (autocommit connections; explicit transactions). Broken connections
    are dropped (all idle ones with them: after a server restart they are all dead); every database
    failure becomes :class:`GalleryUnavailableError`. After a failed *connect* the pool fails fast for
    ``BREAKER_S`` (0.5 s; no caller waits ``connect_timeout`` per request during an outage or a partition:
    1:1 falls back to the cache at once); the follower keeps probing and closes the breaker."""

    BREAKER_S = 0.5

    def __init__(self, url: str, schema: str, settings: PostgresSettings) -> None:
        self.url, self.schema, self.settings = url, schema, settings
        self._idle: list = []
        self._mu = threading.Lock()
        self.last_contact = 0.0         # time.time() of the last successful round trip
        self.last_error: str | None = None
        self._connect_failed_at = 0.0

    def connect(self):
        psycopg = _psycopg()
        try:
            c = self._connect(psycopg)
        except psycopg.OperationalError:
            self._connect_failed_at = time.monotonic()
            raise
        self._connect_failed_at = 0.0
        return c

    def _connect(self, psycopg):
        c = psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.settings.connect_timeout_s)),
                            options=f"-c search_path={self.schema}", application_name="smile2pay",
                            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        return c

    def unavailable(self, e: Exception) -> GalleryUnavailableError:
        self.last_error = type(e).__name__
        return GalleryUnavailableError(
            f"the gallery database is unreachable ({type(e).__name__}); retry in "
            f"{self.settings.retry_after_s:g} s", retry_after_s=self.settings.retry_after_s)

    @contextmanager
    def conn(self):
        psycopg = _psycopg()
        with self._mu:
            c = self._idle.pop() if self._idle else None
        if c is None and self._connect_failed_at and time.monotonic() - self._connect_failed_at < self.BREAKER_S:
            raise self.unavailable(psycopg.OperationalError("connection refused or timed out just before"))
        try:
            if c is None:
                c = self.connect()
            yield c
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction) as e:
            # ReadOnlySqlTransaction: connected to a standby (a failover in progress)
            if c is not None:
                try:
                    c.close()
                except Exception:  # pragma: no cover
                    pass
            self.close()            # the other idle connections died with this one, most likely
            raise self.unavailable(e) from None
        except BaseException:
            self._release(c)
            raise
        else:
            self.last_contact = time.time()
            self.last_error = None
            self._release(c)

    def _release(self, c) -> None:
        if c is None or c.closed:
            return
        from psycopg.pq import TransactionStatus

        if c.info.transaction_status != TransactionStatus.IDLE:
            c.close()
            return
        with self._mu:
            if len(self._idle) < self.settings.pool_size:
                self._idle.append(c)
                return
        c.close()

    def run(self, fn, *, retry: bool = True):
        """``fn(conn)`` on a pooled connection; a read (``retry``) is retried once on a fresh
        connection when the pooled one turned out dead (e.g. after a PostgreSQL restart)."""
        try:
            with self.conn() as c:
                return fn(c)
        except GalleryUnavailableError:
            if not retry:
                raise
            with self.conn() as c:
                return fn(c)

    def close(self) -> None:
        with self._mu:
            idle, self._idle = self._idle, []
        for c in idle:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass


def migrate(conn, schema: str) -> int:
    """Create the schema and apply pending migrations (under an advisory lock). Returns the version."""
    lock = _lock_key(schema, "migrate")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".schema_version '
                     "(version int PRIMARY KEY, applied double precision NOT NULL)")
        have = conn.execute(f'SELECT COALESCE(MAX(version), 0) FROM "{schema}".schema_version').fetchone()[0]
        if have > SCHEMA_VERSION:
            raise GalleryError(f"gallery schema {have} is newer than this SDK ({SCHEMA_VERSION})",
                               code="GALLERY_SCHEMA")
        for version, stmts in MIGRATIONS:
            if version <= have:
                continue
            conn.execute(f'SET LOCAL search_path TO "{schema}"')
            for s in stmts:
                conn.execute(s)
            conn.execute(f'INSERT INTO "{schema}".schema_version(version, applied) VALUES (%s, %s)',
                         (version, time.time()))
            log.info("gallery schema %s: migration %d applied", schema, version)
            have = version
    return have


def _lock_key(schema: str, what: str) -> int:
    """A stable signed 64-bit advisory lock key per schema and purpose."""
    return zlib.crc32(f"smile2pay:{schema}:{what}".encode()) | (0x5332 << 32)


class PostgresGallery:
    """Enrolled templates in PostgreSQL + this server's in-memory FAISS index. See the module doc.

    Args mirror :class:`Gallery`; ``url`` is ``postgresql://...[?schema=name]``; ``pg`` holds the
    pool size, staleness bound, poll interval and timeouts (default: :meth:`PostgresSettings.from_env`);
    ``follow``: run the change follower thread (default true).
    """

    backend = "postgresql"

    # helpers shared with the embedded gallery (pure functions of self.dim / thresholds / cipher)
    check_user_id = Gallery.check_user_id
    _vectors = Gallery._vectors
    _threshold = Gallery._threshold
    _aad = Gallery._aad
    _seal = Gallery._seal
    _unseal = Gallery._unseal
    _baseline_aad = Gallery._baseline_aad
    _baseline_blob = Gallery._baseline_blob
    verify_identity = Gallery.verify_identity       # over this backend's templates()

    def __init__(self, url: str, *, fingerprint: str | None = None, dim: int = 512, key: bytes | None = None,
                 identity_threshold: float | None = None, index: str = "flat", create: bool = True,
                 index_params: dict | None = None, search_threads: int | None = 1,
                 pg: PostgresSettings | None = None, follow: bool = True, plaintext: bool = False) -> None:
        if plaintext and key is not None:
            raise GalleryError("give a key or plaintext=True, not both", code="GALLERY_KEY_CONFLICT")
        if search_threads:
            import faiss

            faiss.omp_set_num_threads(int(search_threads))
        self.url = url
        self.path = redact(url)            # what tools print as the gallery's location
        conninfo, self.schema = parse_url(url)
        self.settings = pg or PostgresSettings.from_env()
        self.identity_threshold = (DEFAULT_IDENTITY_THRESHOLD if identity_threshold is None
                                   else float(identity_threshold))
        self._index_params = index_params or {}
        self._lock = threading.RLock()          # the in-memory index, owner map and caches
        self._sync_lock = threading.Lock()      # one catch-up at a time
        self.channel = f"smile2pay_{self.schema}"
        self._write_key = _lock_key(self.schema, "write")
        self.pool = PgPool(conninfo, self.schema, self.settings)
        self._index = None
        self._owner: dict[int, tuple[str, str]] = {}       # template id -> (user id, kind)
        self._by_user: dict[str, list[int]] = {}
        self._baselines: dict[str, dict] = {}             # AU baselines read so far (outage fallback)
        self._last_seq = 0
        self._head_seq = 0
        self._last_sync = 0.0
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        self._notified = 0
        try:
            self.pool.run(lambda c: self._open(c, fingerprint, dim, key, index, create, plaintext), retry=False)
            t0 = time.perf_counter()
            self._rebuild()
            self.startup_s = time.perf_counter() - t0
        except BaseException:
            self.pool.close()
            raise
        log.info("postgres gallery %s (schema %s): %d templates indexed in %.2f s", self.path, self.schema,
                 self._index.ntotal, self.startup_s)
        if follow:
            self._follower = threading.Thread(target=self._follow, name=f"s2p-follow-{self.schema}", daemon=True)
            self._follower.start()

    # -- opening -------------------------------------------------------------------------------
    def _open(self, c, fingerprint, dim, key, index, create, plaintext=False) -> None:
        exists = c.execute("SELECT 1 FROM pg_namespace WHERE nspname=%s", (self.schema,)).fetchone() is not None
        if not exists and not create:
            raise GalleryError(f"no gallery in schema {self.schema!r} at {self.path}", code="GALLERY_NOT_FOUND",
                               path=self.path)
        migrate(c, self.schema)
        with c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
            meta = {k: bytes(v).decode() if k != "key_check" else bytes(v)
                    for k, v in c.execute("SELECT key, value FROM meta").fetchall()}
            if not meta:
                if key is None and not plaintext:
                    raise GalleryError("a fleet gallery needs its servers' shared key: set SMILE2PAY_GALLERY_KEY or "
                                       "SMILE2PAY_GALLERY_KEY_FILE (or plaintext=True to store templates in the "
                                       "clear)", code="GALLERY_KEY_REQUIRED")
                cipher = TemplateCipher(key)
                rows = {"fingerprint": fingerprint or "", "dim": str(int(dim)), "cipher": cipher.name,
                        "index": index, "created": str(time.time()), "changes_floor": "0"}
                for k, v in rows.items():
                    c.execute("INSERT INTO meta(key, value) VALUES (%s, %s)", (k, v.encode()))
                if cipher.enabled:
                    rows["key_check"] = cipher.key_check()
                    c.execute("INSERT INTO meta(key, value) VALUES ('key_check', %s)", (rows["key_check"],))
                meta = rows
                log.info("created postgres gallery (schema %s, cipher=%s, index=%s)", self.schema, cipher.name, index)
            stored_fp = meta.get("fingerprint") or ""
            if fingerprint and not stored_fp:
                c.execute("UPDATE meta SET value=%s WHERE key='fingerprint'", (fingerprint.encode(),))
                stored_fp = fingerprint
        self.fingerprint, self.dim, self.index_kind, self._cipher = check_meta(meta, stored_fp, fingerprint,
                                                                               dim, key, plaintext)

    @property
    def encrypted(self) -> bool:
        return self._cipher.enabled

    # -- index: rebuild and follow -------------------------------------------------------------
    def _rebuild(self) -> None:
        """Full rebuild from one consistent snapshot (REPEATABLE READ)."""
        with self._sync_lock:
            def load(c):
                idx = make_index(self.index_kind, self.dim, **self._index_params)
                owner: dict[int, tuple[str, str]] = {}
                with c.transaction():
                    c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    head = c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
                    ids, vecs = [], []
                    with c.cursor(name="s2p_rebuild") as cur:
                        cur.itersize = 8192
                        cur.execute("SELECT id, user_id, kind, vec FROM templates ORDER BY id")
                        for tid, uid, kind, blob in cur:
                            ids.append(tid)
                            vecs.append(self._unseal(uid, blob))
                            owner[tid] = (uid, sys.intern(kind))
                            if len(ids) >= 8192:      # small batches: a low peak over the index itself
                                idx.add(np.array(ids, np.int64), np.stack(vecs))
                                ids, vecs = [], []
                    if ids:
                        idx.add(np.array(ids, np.int64), np.stack(vecs))
                return idx, owner, head

            idx, owner, head = self.pool.run(load)
            by_user: dict[str, list[int]] = {}
            for tid, (uid, _) in owner.items():
                by_user.setdefault(uid, []).append(tid)
            with self._lock:
                self._index, self._owner, self._by_user = idx, owner, by_user
                self._baselines.clear()
                self._last_seq = self._head_seq = int(head)
                self._last_sync = time.time()
            log.debug("index rebuilt: %d templates, seq %d", idx.ntotal, head)

    def _catch_up(self, c=None) -> int:
        """Apply committed changes after ``last_seq`` (on ``c``, or a pooled connection). Returns the
        number of changes applied."""
        with self._sync_lock:
            if c is None:
                res = self.pool.run(self._read_changes)
            else:
                res = self._read_changes(c)
            if res is None:       # our last_seq predates the retained log: rebuild
                log.warning("change log was compacted past this server's position (seq %d): rebuilding",
                            self._last_seq)
                rebuild = True
            else:
                rebuild = False
                rows, fetched, head = res
                self._apply(rows, fetched, head)
        if rebuild:
            self._rebuild()
            return -1
        return len(rows)

    def _read_changes(self, c):
        floor = int(bytes(c.execute("SELECT value FROM meta WHERE key='changes_floor'").fetchone()[0]).decode())
        if self._last_seq < floor:
            return None
        top = c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
        rows = c.execute("SELECT seq, op, template_id FROM changes WHERE seq > %s ORDER BY seq LIMIT 100000",
                         (self._last_seq,)).fetchall()
        head = (rows[-1][0] if rows else self._last_seq, top)
        final: dict[int, str] = {}
        for _, op, tid in rows:
            final[tid] = op
        adds = [t for t, op in final.items() if op == "add"]
        fetched = {}
        if adds:
            for tid, uid, kind, blob in c.execute(
                    "SELECT id, user_id, kind, vec FROM templates WHERE id = ANY(%s)", (adds,)):
                fetched[tid] = (uid, kind, self._unseal(uid, blob))
        return rows, fetched, head

    def _apply(self, rows, fetched, head) -> None:
        applied, top = head          # last seq read, and the log's head when it was read
        with self._lock:
            self._last_sync = time.time()
            self._head_seq = max(self._head_seq, int(top))
            if not rows:
                return
            final: dict[int, str] = {}
            for _, op, tid in rows:
                final[tid] = op
            dels = [t for t, op in final.items() if op == "del" and t in self._owner]
            if dels:
                self._index.remove(dels)
                for t in dels:
                    uid, _ = self._owner.pop(t)
                    lst = self._by_user.get(uid)
                    if lst is not None:
                        lst.remove(t)
                        if not lst:
                            del self._by_user[uid]
                            self._baselines.pop(uid, None)
            adds = [t for t, op in final.items() if op == "add" and t in fetched and t not in self._owner]
            if adds:
                self._index.add(np.array(adds, np.int64), np.stack([fetched[t][2] for t in adds]))
                for t in adds:
                    uid, kind, _ = fetched[t]
                    self._owner[t] = (uid, kind)
                    self._by_user.setdefault(uid, []).append(t)
            self._last_seq = max(self._last_seq, int(applied))
            self._head_seq = max(self._head_seq, self._last_seq)

    def _follow(self) -> None:
        """Background: LISTEN for changes, catch up on every wake-up and every ``poll_s``."""
        backoff = 0.2
        while not self._stop.is_set():
            conn = None
            try:
                conn = self.pool.connect()
                conn.execute(f'LISTEN "{self.channel}"')
                self._catch_up(conn)
                self.pool.last_contact = time.time()
                backoff = 0.2
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=self.settings.poll_s, stop_after=1):
                        self._notified += 1
                    self._catch_up(conn)
                    self.pool.last_contact = time.time()
                    self.pool.last_error = None
            except Exception as e:  # unreachable database, connection dropped: retry with backoff
                if not self._stop.is_set():
                    self.pool.last_error = type(e).__name__
                    log.warning("change follower: %s; retrying in %.1f s", type(e).__name__, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # pragma: no cover
                        pass

    def sync(self) -> int:
        """Catch up now (normally the follower does it). Returns the number of changes applied."""
        return self._catch_up()

    def _fresh_or_raise(self, what: str) -> None:
        age = time.time() - max(self.pool.last_contact, self._last_sync)
        if age > self.settings.max_staleness_s:
            try:                  # no follower, or it is between retries: try once ourselves
                self._catch_up()
                return
            except GalleryUnavailableError:
                pass
            raise GalleryUnavailableError(
                f"{what}: the gallery database has been unreachable for {age:.0f} s (more than "
                f"{self.settings.max_staleness_s:g} s); the cached index is too old to use",
                retry_after_s=self.settings.retry_after_s, stale_s=round(age, 1))

    def health(self) -> dict[str, Any]:
        now = time.time()
        contact = max(self.pool.last_contact, self._last_sync)
        with self._lock:
            n = self._index.ntotal if self._index is not None else 0
            return {"backend": "postgresql", "schema": self.schema, "last_seq": self._last_seq,
                    "head_seq": self._head_seq, "lag_changes": max(0, self._head_seq - self._last_seq),
                    "last_sync_s_ago": round(now - self._last_sync, 3),
                    "last_contact_s_ago": round(now - contact, 3),
                    "reachable": self.pool.last_error is None,
                    "serving_from_cache": self.pool.last_error is not None
                    and now - contact <= self.settings.max_staleness_s,
                    "index_templates": n, "follower_alive": bool(self._follower and self._follower.is_alive())}

    # -- writes --------------------------------------------------------------------------------
    @contextmanager
    def _write_txn(self):
        """One serialised write transaction (advisory lock) with the NOTIFY inside it."""
        with self.pool.conn() as c:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
                yield c
                c.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def _search_users(self, v: np.ndarray, k: int, exclude: str | None = None) -> list[tuple[str, float, int, str]]:
        with self._lock:
            return top_users(self._index, v, k, lambda tids: {t: self._owner[t] for t in tids if t in self._owner},
                             exclude)

    def enroll(self, user_id: str, embeddings, kind: str | Sequence[str] = "neutral", *, mode: str = "new",
               check_duplicates: bool = True, threshold: float | None = None,
               baseline: tuple[dict, Any] | None = None) -> EnrollResult:
        """As :meth:`Gallery.enroll`; the duplicate check runs under the fleet-wide write lock after
        catching up, so it sees every enrolment committed by any server."""
        self.check_user_id(user_id)
        if mode not in MODES:
            raise GalleryError(f"mode must be one of {MODES}, got {mode!r}", code="GALLERY_BAD_MODE")
        vecs = self._vectors(embeddings)
        kinds = [kind] * len(vecs) if isinstance(kind, str) else list(kind)
        if len(kinds) != len(vecs) or not all(isinstance(x, str) and x.strip() for x in kinds):
            raise GalleryError("kind must be one non-empty string or one per embedding", code="GALLERY_BAD_KIND")
        thr = self._threshold(threshold)
        with self._write_txn() as c:
            self._catch_up(c)
            exists = c.execute("SELECT 1 FROM users WHERE user_id=%s", (user_id,)).fetchone() is not None
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
            now = time.time()
            replaced = 0
            if exists and mode == "replace":
                old = [r[0] for r in c.execute("DELETE FROM templates WHERE user_id=%s RETURNING id", (user_id,))]
                if old:
                    c.execute("INSERT INTO changes(op, template_id) SELECT 'del', unnest(%s::bigint[])", (old,))
                replaced = len(old)
            if exists:
                c.execute("UPDATE users SET updated=%s WHERE user_id=%s", (now, user_id))
            else:
                c.execute("INSERT INTO users(user_id, created, updated) VALUES (%s, %s, %s)", (user_id, now, now))
            tids = []
            for v, kd in zip(vecs, kinds):
                tids.append(int(c.execute("INSERT INTO templates(user_id, kind, created, vec) VALUES (%s, %s, %s, %s) "
                                          "RETURNING id", (user_id, kd, now, self._seal(user_id, v))).fetchone()[0]))
            c.execute("INSERT INTO changes(op, template_id) SELECT 'add', unnest(%s::bigint[])", (tids,))
            if baseline is not None:
                c.execute("INSERT INTO au_baselines(user_id, updated, blob) VALUES (%s, %s, %s) ON CONFLICT (user_id) "
                          "DO UPDATE SET updated=EXCLUDED.updated, blob=EXCLUDED.blob",
                          (user_id, now, self._baseline_blob(user_id, *baseline)))
        if baseline is not None:
            with self._lock:
                self._baselines.pop(user_id, None)
        self._after_write()
        log.info("enrolled %d template(s) (mode=%s)", len(tids), mode)
        return EnrollResult(user_id=user_id, mode=mode, template_ids=tids, kinds=kinds, replaced=replaced,
                            created=not exists)

    def _after_write(self) -> None:
        try:
            self._catch_up()      # read-your-writes on this server (others follow via NOTIFY)
        except GalleryUnavailableError:
            log.warning("committed, but could not refresh the local index; the follower will")

    def remove(self, user_id: str) -> int:
        """Erase a user: committed in PostgreSQL first (rows deleted, ``del`` changes logged and
        notified), then dropped from this server's index; every other server drops it on its next
        catch-up. Returns the number of templates removed."""
        self.check_user_id(user_id)
        with self._write_txn() as c:
            tids = [r[0] for r in c.execute("DELETE FROM templates WHERE user_id=%s RETURNING id", (user_id,))]
            c.execute("DELETE FROM au_baselines WHERE user_id=%s", (user_id,))
            gone = c.execute("DELETE FROM users WHERE user_id=%s RETURNING 1", (user_id,)).fetchone()
            if not tids and gone is None:
                raise GalleryError(f"user {user_id!r} is not enrolled", code="GALLERY_USER_NOT_FOUND",
                                   user_id=user_id)
            if tids:
                c.execute("INSERT INTO changes(op, template_id) SELECT 'del', unnest(%s::bigint[])", (tids,))
        with self._lock:
            self._baselines.pop(user_id, None)
        self._after_write()
        log.info("removed a user (%d templates)", len(tids))
        return len(tids)

    # -- AU baseline ---------------------------------------------------------------------------
    def set_au_baseline(self, user_id: str, probs: dict[str, float], embedding=None) -> None:
        self.check_user_id(user_id)
        blob = self._baseline_blob(user_id, probs, embedding)
        with self._write_txn() as c:
            if c.execute("SELECT 1 FROM users WHERE user_id=%s", (user_id,)).fetchone() is None:
                raise GalleryError(f"user {user_id!r} is not enrolled", code="GALLERY_USER_NOT_FOUND",
                                   user_id=user_id)
            c.execute("INSERT INTO au_baselines(user_id, updated, blob) VALUES (%s, %s, %s) ON CONFLICT (user_id) "
                      "DO UPDATE SET updated=EXCLUDED.updated, blob=EXCLUDED.blob", (user_id, time.time(), blob))
        with self._lock:
            self._baselines.pop(user_id, None)

    def au_baseline(self, user_id: str) -> dict | None:
        self.check_user_id(user_id)
        try:
            r = self.pool.run(lambda c: c.execute("SELECT blob FROM au_baselines WHERE user_id=%s",
                                                  (user_id,)).fetchone())
        except GalleryUnavailableError:
            self._fresh_or_raise("AU baseline")
            with self._lock:
                if user_id in self._baselines:
                    return self._baselines[user_id]
                if user_id not in self._by_user:
                    return None
            raise
        if r is None:
            return None
        out = json.loads(self._cipher.open(bytes(r[0]), self._baseline_aad(user_id)))
        with self._lock:
            if user_id in self._by_user:
                self._baselines[user_id] = out
        return out

    # -- reads ---------------------------------------------------------------------------------
    def templates(self, user_id: str, kind: str | None = None) -> tuple[list[int], list[str], np.ndarray]:
        """The claimed user's decrypted templates, read from PostgreSQL (authoritative: an erasure on
        any server is effective here at once). While PostgreSQL is unreachable: from the in-memory
        index, for at most ``max_staleness_s`` after the last contact."""
        self.check_user_id(user_id)
        try:
            rows = self.pool.run(lambda c: c.execute(
                "SELECT id, kind, vec FROM templates WHERE user_id=%s ORDER BY id", (user_id,)).fetchall())
            rows = [(r[0], r[1], self._unseal(user_id, r[2])) for r in rows]
        except GalleryUnavailableError:
            self._fresh_or_raise("1:1 verification")
            rows = self._cached_templates(user_id)
        if kind is not None:
            rows = [r for r in rows if r[1] == kind]
        if not rows:
            raise GalleryError(f"user {user_id!r} is not enrolled" + (f" with kind {kind!r}" if kind else ""),
                               code="GALLERY_USER_NOT_FOUND", user_id=user_id)
        return [r[0] for r in rows], [r[1] for r in rows], np.stack([r[2] for r in rows])

    def _cached_templates(self, user_id: str) -> list[tuple[int, str, np.ndarray]]:
        with self._lock:
            tids = sorted(self._by_user.get(user_id, []))
            store = self._index.index           # IndexIDMap2 (flat; HNSW; IVF's exact store)
            return [(t, self._owner[t][1], np.asarray(store.reconstruct(int(t)), np.float32)) for t in tids]

    def identify(self, embedding, k: int = 5, *, threshold: float | None = None) -> list[Match]:
        """1:N on this server's in-memory index (current to the last applied change; see ``health``)."""
        if not isinstance(k, int) or k < 1:
            raise GalleryError(f"k must be a positive integer, got {k!r}", code="GALLERY_BAD_K")
        v = self._vectors(embedding)
        if len(v) != 1:
            raise GalleryError("identify takes one embedding", code="GALLERY_BAD_EMBEDDING")
        thr = self._threshold(threshold)
        self._fresh_or_raise("identification")
        hits = self._search_users(v[0], k)
        return [Match(user_id=u, score=s, template_id=t, kind=kd, match=bool(s >= thr)) for u, s, t, kd in hits]

    def get(self, user_id: str) -> UserRecord:
        self.check_user_id(user_id)

        def q(c):
            r = c.execute("SELECT user_id, created, updated FROM users WHERE user_id=%s", (user_id,)).fetchone()
            ts = c.execute("SELECT id, kind, created FROM templates WHERE user_id=%s ORDER BY id",
                           (user_id,)).fetchall()
            return r, ts

        r, ts = self.pool.run(q)
        if r is None:
            raise GalleryError(f"user {user_id!r} is not enrolled", code="GALLERY_USER_NOT_FOUND", user_id=user_id)
        return UserRecord(r[0], r[1], r[2], [TemplateInfo(*t) for t in ts])

    def list(self, offset: int = 0, limit: int | None = None) -> list[str]:
        return [r[0] for r in self.pool.run(lambda c: c.execute(
            "SELECT user_id FROM users ORDER BY user_id COLLATE \"C\" LIMIT %s OFFSET %s",
            (limit, int(offset))).fetchall())]

    def count(self) -> int:
        return int(self.pool.run(lambda c: c.execute("SELECT COUNT(*) FROM users").fetchone()[0]))

    def template_count(self) -> int:
        return int(self.pool.run(lambda c: c.execute("SELECT COUNT(*) FROM templates").fetchone()[0]))

    def __contains__(self, user_id: str) -> bool:
        return self.pool.run(lambda c: c.execute("SELECT 1 FROM users WHERE user_id=%s",
                                                 (user_id,)).fetchone()) is not None

    def __len__(self) -> int:
        return self.count()

    def check(self) -> dict[str, Any]:
        """Every template decrypts and is in this server's index, the index holds nothing else,
        every user has a template. Raises ``GALLERY_CORRUPT`` if not."""
        self._catch_up()

        def q(c):
            with c.transaction():
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                rows = c.execute("SELECT id, user_id, vec FROM templates").fetchall()
                orphans = c.execute("SELECT COUNT(*) FROM users u WHERE NOT EXISTS "
                                    "(SELECT 1 FROM templates t WHERE t.user_id=u.user_id)").fetchone()[0]
                users = c.execute("SELECT COUNT(*) FROM users").fetchone()[0]
                head = c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
            return rows, orphans, users, head

        rows, orphans, users, head = self.pool.run(q)
        for _, uid, blob in rows:
            self._unseal(uid, blob)
        db_ids = {r[0] for r in rows}
        with self._lock:
            idx_ids = set(self._index.live_ids().tolist())
            last = self._last_seq
        report = {"integrity": "ok", "users": int(users), "templates": len(db_ids), "index": len(idx_ids),
                  "missing_in_index": len(db_ids - idx_ids), "extra_in_index": len(idx_ids - db_ids),
                  "users_without_templates": int(orphans), "encrypted": self.encrypted,
                  "index_kind": self.index_kind, "last_seq": last, "head_seq": int(head)}
        report["ok"] = (not report["missing_in_index"] and not report["extra_in_index"] and not orphans)
        if not report["ok"] and last >= head:
            raise GalleryError("gallery integrity check failed", code="GALLERY_CORRUPT", **report)
        return report

    def compact(self) -> dict[str, Any]:
        """Trim the change log to ``change_retention_s`` (servers further behind rebuild) and VACUUM
        the gallery tables (dead row versions of erased users are reclaimed; their ciphertext may stay
        in free space until overwritten or ``VACUUM FULL``, see docs/deployment.md)."""
        ret = self.settings.change_retention_s
        with self._write_txn() as c:
            floor = c.execute("SELECT COALESCE(MAX(seq), 0) FROM changes WHERE ts < now() - make_interval("
                              "secs => %s)", (ret,)).fetchone()[0]
            if floor:
                c.execute("DELETE FROM changes WHERE seq <= %s", (floor,))
                c.execute("UPDATE meta SET value=%s WHERE key='changes_floor' AND "
                          "convert_from(value, 'UTF8')::bigint < %s", (str(floor).encode(), floor))

        def vac(c):
            for t in ("templates", "au_baselines", "users", "changes"):
                c.execute(f"VACUUM {t}")

        self.pool.run(vac, retry=False)
        return {"changes_floor": int(floor), "vacuumed": ["templates", "au_baselines", "users", "changes"]}

    def rotate_key(self, new_key: bytes | None) -> int:
        """Re-encrypt every template and baseline with ``new_key`` in one transaction. Other servers must
        restart with the new key (their in-memory index is unaffected until then)."""
        new = TemplateCipher(new_key)
        with self._write_txn() as c:
            rows = c.execute("SELECT id, user_id, vec FROM templates").fetchall()
            for tid, uid, blob in rows:
                raw = self._cipher.open(bytes(blob), self._aad(uid))
                c.execute("UPDATE templates SET vec=%s WHERE id=%s", (new.seal(raw, self._aad(uid)), tid))
            for uid, blob in c.execute("SELECT user_id, blob FROM au_baselines").fetchall():
                raw = self._cipher.open(bytes(blob), self._baseline_aad(uid))
                c.execute("UPDATE au_baselines SET blob=%s WHERE user_id=%s",
                          (new.seal(raw, self._baseline_aad(uid)), uid))
            c.execute("UPDATE meta SET value=%s WHERE key='cipher'", (new.name.encode(),))
            c.execute("DELETE FROM meta WHERE key='key_check'")
            if new.enabled:
                c.execute("INSERT INTO meta(key, value) VALUES ('key_check', %s)", (new.key_check(),))
        self._cipher = new
        self.compact()
        log.info("gallery key rotated (%d templates, cipher=%s)", len(rows), new.name)
        return len(rows)

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=self.settings.poll_s + 5)
            self._follower = None
        self.pool.close()

    def __enter__(self) -> "PostgresGallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
