"""The gallery on PostgreSQL: one shared source of truth for a fleet of verify servers.

``PostgresGallery`` implements the gallery contract (:class:`smile2pay.gallery.base.GalleryStore`, as the
embedded SQLite gallery does, which stays the default); :func:`smile2pay.gallery.open_gallery` picks one by URL:
``postgresql://user@host:port/db?schema=smile2pay`` (psycopg 3, ``pip install '.[postgres]'``).

Data
    Tables live in one PostgreSQL schema (``?schema=``, default ``smile2pay``): ``meta``, ``users``,
    ``templates`` (AES-256-GCM ciphertext, same format and AAD as the embedded gallery: the database
    never sees a plaintext embedding), ``au_baselines`` (sealed), ``changes`` (the change sequence:
    ``seq``, ``op`` add/del, ``template_id``; no user id), and the guard's ``failures``, ``nonces``
    and ``audit`` (:mod:`smile2pay.gallery.guard_pg`). ``schema_version`` records the applied
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

import logging
import re
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..config import PostgresSettings
from ..errors import GalleryError
from .base import BaseGallery, IntegritySnapshot, WriteTxn, check_meta
from .crypto import TemplateCipher
from .index import make_index

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


class PgWriteTxn(WriteTxn):
    """:class:`WriteTxn` on one PostgreSQL connection inside the gallery's advisory-locked transaction."""

    def __init__(self, conn) -> None:
        super().__init__()
        self.c = conn

    def user_exists(self, user_id: str) -> bool:
        return self.c.execute("SELECT 1 FROM users WHERE user_id=%s", (user_id,)).fetchone() is not None

    def put_user(self, user_id: str, now: float, exists: bool) -> None:
        if exists:
            self.c.execute("UPDATE users SET updated=%s WHERE user_id=%s", (now, user_id))
        else:
            self.c.execute("INSERT INTO users(user_id, created, updated) VALUES (%s, %s, %s)", (user_id, now, now))

    def add_templates(self, user_id: str, rows, now: float) -> list[int]:
        tids = [int(self.c.execute("INSERT INTO templates(user_id, kind, created, vec) VALUES (%s, %s, %s, %s) "
                                   "RETURNING id", (user_id, kd, now, blob)).fetchone()[0]) for kd, blob in rows]
        self._log("add", tids)
        return tids

    def delete_templates(self, user_id: str) -> list[int]:
        old = [r[0] for r in self.c.execute("DELETE FROM templates WHERE user_id=%s RETURNING id", (user_id,))]
        self._log("del", old)
        return old

    def delete_user(self, user_id: str) -> list[int] | None:
        tids = [r[0] for r in self.c.execute("DELETE FROM templates WHERE user_id=%s RETURNING id", (user_id,))]
        self.c.execute("DELETE FROM au_baselines WHERE user_id=%s", (user_id,))
        gone = self.c.execute("DELETE FROM users WHERE user_id=%s RETURNING 1", (user_id,)).fetchone()
        if not tids and gone is None:
            return None               # nothing was deleted; the caller raises (and the transaction rolls back)
        self._log("del", tids)
        self.touched_users.add(user_id)
        return tids

    def put_baseline(self, user_id: str, blob: bytes, now: float) -> None:
        self.c.execute("INSERT INTO au_baselines(user_id, updated, blob) VALUES (%s, %s, %s) ON CONFLICT (user_id) "
                       "DO UPDATE SET updated=EXCLUDED.updated, blob=EXCLUDED.blob", (user_id, now, blob))
        self.touched_users.add(user_id)

    def sealed_rows(self):
        return (self.c.execute("SELECT id, user_id, vec FROM templates").fetchall(),
                self.c.execute("SELECT user_id, blob FROM au_baselines").fetchall())

    def reseal(self, templates, baselines, cipher: TemplateCipher) -> None:
        for tid, blob in templates:
            self.c.execute("UPDATE templates SET vec=%s WHERE id=%s", (blob, tid))
        for uid, blob in baselines:
            self.c.execute("UPDATE au_baselines SET blob=%s WHERE user_id=%s", (blob, uid))
        self.c.execute("UPDATE meta SET value=%s WHERE key='cipher'", (cipher.name.encode(),))
        self.c.execute("DELETE FROM meta WHERE key='key_check'")
        if cipher.enabled:
            self.c.execute("INSERT INTO meta(key, value) VALUES ('key_check', %s)", (cipher.key_check(),))

    def _log(self, op: str, tids: list[int]) -> None:
        if tids:
            self.c.execute("INSERT INTO changes(op, template_id) SELECT %s, unnest(%s::bigint[])", (op, tids))
            self.templates_changed = True


class PostgresGallery(BaseGallery):
    """Enrolled templates in PostgreSQL + this server's in-memory FAISS index. See the module doc.

    Args mirror :class:`~smile2pay.gallery.store.Gallery`; ``url`` is ``postgresql://...[?schema=name]``;
    ``pg`` holds the pool size, staleness bound, poll interval and timeouts (default:
    :meth:`PostgresSettings.from_env`); ``follow``: run the change follower thread (default true).
    """

    backend = "postgresql"

    def __init__(self, url: str, *, fingerprint: str | None = None, dim: int = 512, key: bytes | None = None,
                 identity_threshold: float | None = None, index: str = "flat", create: bool = True,
                 index_params: dict | None = None, search_threads: int | None = 1,
                 pg: PostgresSettings | None = None, follow: bool = True, plaintext: bool = False) -> None:
        self._setup(key=key, plaintext=plaintext, identity_threshold=identity_threshold,
                    index_params=index_params, search_threads=search_threads)
        self.url = url
        self.path = redact(url)            # what tools print as the gallery's location
        conninfo, self.schema = parse_url(url)
        self.settings = pg or PostgresSettings.from_env()
        self._sync_lock = threading.Lock()      # one catch-up at a time
        self.channel = f"smile2pay_{self.schema}"
        self._write_key = _lock_key(self.schema, "write")
        self.pool = PgPool(conninfo, self.schema, self.settings)
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

    # -- writes (backend operations) --------------------------------------------------------
    @contextmanager
    def _locked_txn(self):
        """One serialised write transaction (advisory lock) with the NOTIFY inside it."""
        with self.pool.conn() as c:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
                yield c
                c.execute("SELECT pg_notify(%s, '')", (self.channel,))

    @contextmanager
    def _write_txn(self, index: bool = False):
        """Backend operation: :meth:`_locked_txn`; with ``index`` this server catches up first (inside
        the fleet-wide lock, so the duplicate check sees every enrolment committed by any server)."""
        with self._locked_txn() as c:
            if index:
                self._catch_up(c)
            tx = PgWriteTxn(c)
            yield tx
        with self._lock:
            for uid in tx.touched_users:
                self._baselines.pop(uid, None)
        tx.committed()
        if tx.templates_changed:
            self._after_write()

    def _after_write(self) -> None:
        try:
            self._catch_up()      # read-your-writes on this server (others follow via NOTIFY)
        except GalleryUnavailableError:
            log.warning("committed, but could not refresh the local index; the follower will")

    def bulk_enroll(self, items, kind: str = "neutral") -> list[int]:
        """Insert new users with one template each, ``items`` = ``[(user_id, vector)]``, in one write
        transaction via COPY (bulk loads of trusted data, benchmarks): sealed as :meth:`enroll` seals them,
        no duplicate check, no AU baseline. Servers (this one included) index them on their next catch-up
        (follower, :meth:`sync`). Returns the new template ids."""
        items = [(self.check_user_id(u), self._vectors(v)[0]) for u, v in items]
        self._kinds(kind, 1)
        if not items:
            return []
        now = time.time()
        with self._locked_txn() as c:
            with c.cursor().copy("COPY users(user_id, created, updated) FROM STDIN") as cp:
                for uid, _ in items:
                    cp.write_row((uid, now, now))
            with c.cursor().copy("COPY templates(user_id, kind, created, vec) FROM STDIN") as cp:
                for uid, v in items:
                    cp.write_row((uid, kind, now, self._seal(uid, v)))
            ids = [r[0] for r in c.execute("SELECT id FROM templates WHERE user_id = ANY(%s) ORDER BY id",
                                           ([u for u, _ in items],))]
            c.execute("INSERT INTO changes(op, template_id) SELECT 'add', unnest(%s::bigint[])", (ids,))
        return ids

    # -- reads (backend operations) ------------------------------------------------------------
    def _owners_of(self, tids) -> dict[int, tuple[str, str]]:
        with self._lock:
            return {t: self._owner[t] for t in tids if t in self._owner}

    def _fresh_index(self, what: str) -> None:
        """1:N runs on the in-memory index, current to the last applied change (see ``health``)."""
        self._fresh_or_raise(what)

    def _read_baseline(self, user_id: str) -> dict | None:
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
        out = self._open_baseline(user_id, r[0])
        with self._lock:
            if user_id in self._by_user:
                self._baselines[user_id] = out
        return out

    def _read_templates(self, user_id: str) -> list[tuple[int, str, np.ndarray]]:
        """The claimed user's templates, read from PostgreSQL (authoritative: an erasure on any server
        is effective here at once). While PostgreSQL is unreachable: from the in-memory index, for at
        most ``max_staleness_s`` after the last contact."""
        try:
            rows = self.pool.run(lambda c: c.execute(
                "SELECT id, kind, vec FROM templates WHERE user_id=%s ORDER BY id", (user_id,)).fetchall())
            return [(r[0], r[1], self._unseal(user_id, r[2])) for r in rows]
        except GalleryUnavailableError:
            self._fresh_or_raise("1:1 verification")
            return self._cached_templates(user_id)

    def _cached_templates(self, user_id: str) -> list[tuple[int, str, np.ndarray]]:
        with self._lock:
            tids = sorted(self._by_user.get(user_id, []))
            store = self._index.index           # IndexIDMap2 (flat; HNSW; IVF's exact store)
            return [(t, self._owner[t][1], np.asarray(store.reconstruct(int(t)), np.float32)) for t in tids]

    def _read_user(self, user_id: str):
        def q(c):
            r = c.execute("SELECT user_id, created, updated FROM users WHERE user_id=%s", (user_id,)).fetchone()
            ts = c.execute("SELECT id, kind, created FROM templates WHERE user_id=%s ORDER BY id",
                           (user_id,)).fetchall()
            return r, ts

        r, ts = self.pool.run(q)
        return None if r is None else (r[0], r[1], r[2], ts)

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

    def _integrity(self) -> IntegritySnapshot:
        """One REPEATABLE READ snapshot; the index may lag the database (a follower catching up), so a
        mismatch is corruption only when this server had applied the whole log (``last_seq >= head``)."""
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
        with self._lock:
            idx_ids = set(self._index.live_ids().tolist())
            last = self._last_seq
        return IntegritySnapshot(integrity="ok", rows=rows, users=users, users_without_templates=orphans,
                                 index_ids=idx_ids, extra={"last_seq": last, "head_seq": int(head)},
                                 settled=last >= head)

    # -- maintenance ---------------------------------------------------------------------------
    def compact(self) -> dict[str, Any]:
        """Trim the change log to ``change_retention_s`` (servers further behind rebuild) and VACUUM
        the gallery tables (dead row versions of erased users are reclaimed; their ciphertext may stay
        in free space until overwritten or ``VACUUM FULL``, see docs/deployment.md)."""
        ret = self.settings.change_retention_s
        with self._locked_txn() as c:
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

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=self.settings.poll_s + 5)
            self._follower = None
        self.pool.close()
