"""The guard (lockout, single-use nonces, audit) in PostgreSQL, shared by every server of a fleet.

Same API as :class:`smile2pay.decision.guard.Guard`; the tables (``failures``, ``nonces``, ``audit``)
live in the gallery's schema (migrations in :mod:`smile2pay.gallery.postgres`). A nonce used on one
server is refused on every other; failures counted on any server lock the user out everywhere.

Fail closed: when PostgreSQL cannot be reached, every guard call raises ``GUARD_UNAVAILABLE``
(HTTP 503 with ``Retry-After``). A payment decision that cannot check its lockout, record its nonce
or write its audit record is not made: a replayed request can never be approved twice, and an
attacker cannot use an outage to try faces without counting. (Identification and 1:1 identity checks
keep working from the cached index: :class:`smile2pay.gallery.postgres.PostgresGallery`.)
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager

from ..errors import GalleryError
from .guard import GuardSettings

log = logging.getLogger(__name__)


class GuardUnavailableError(GalleryError):
    code = "GUARD_UNAVAILABLE"


class PostgresGuard:
    def __init__(self, pool, settings: GuardSettings = GuardSettings()) -> None:
        self.pool = pool
        self.settings = settings
        self.folder = None

    @contextmanager
    def _conn(self):
        from ..gallery.postgres import GalleryUnavailableError

        try:
            with self.pool.conn() as c:
                yield c
        except GalleryUnavailableError as e:
            raise GuardUnavailableError(
                "lockout/nonce/audit store unreachable: the payment decision is declined until it is back "
                f"(retry in {self.pool.settings.retry_after_s:g} s)", retry_after_s=e.details.get("retry_after_s"),
            ) from None

    def _run(self, fn, retry: bool = True):
        try:
            with self._conn() as c:
                return fn(c)
        except GuardUnavailableError:
            if not retry:
                raise
            with self._conn() as c:     # a pooled connection may have died with a restart
                return fn(c)

    # -- lockout ---------------------------------------------------------------------------
    def locked_until(self, user_id: str, now: float | None = None) -> float | None:
        now = time.time() if now is None else now
        s = self.settings
        rows = self._run(lambda c: c.execute("SELECT ts FROM failures WHERE user_id=%s ORDER BY ts DESC LIMIT %s",
                                             (user_id, s.max_failures)).fetchall())
        if len(rows) < s.max_failures:
            return None
        last, oldest = rows[0][0], rows[-1][0]
        if last - oldest <= s.window_s and now < last + s.lockout_s:
            return last + s.lockout_s
        return None

    def record(self, user_id: str, approved: bool, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if approved:
            self._run(lambda c: c.execute("DELETE FROM failures WHERE user_id=%s", (user_id,)))
        else:
            self._run(lambda c: c.execute("INSERT INTO failures(user_id, ts) VALUES (%s, %s)", (user_id, now)),
                      retry=False)

    def reset(self, user_id: str) -> None:
        self._run(lambda c: c.execute("DELETE FROM failures WHERE user_id=%s", (user_id,)))

    # -- nonces ----------------------------------------------------------------------------
    def use_nonce(self, nonce: str, now: float | None = None) -> bool:
        """True the first time a nonce is seen on any server; False on any later use."""
        now = time.time() if now is None else now
        h = hashlib.sha256(nonce.encode("utf-8")).hexdigest()

        def q(c):
            with c.transaction():
                c.execute("DELETE FROM nonces WHERE ts < %s", (now - self.settings.nonce_ttl_s,))
                return c.execute("INSERT INTO nonces(nonce_hash, ts) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                                 "RETURNING 1", (h, now)).fetchone() is not None

        # not retried: if the commit's outcome is unknown, the nonce may be spent; the client retries
        # with a new nonce (fail closed)
        return self._run(q, retry=False)

    # -- audit -----------------------------------------------------------------------------
    def audit(self, record: dict) -> None:
        for k, v in record.items():
            if hasattr(v, "shape") or (isinstance(v, (list, tuple)) and len(v) > 64):
                raise ValueError(f"audit field {k!r} looks like an array; audit records hold no biometrics")
        ts = time.time()
        line = json.dumps({"ts": ts, **record}, sort_keys=True, default=str)
        self._run(lambda c: c.execute("INSERT INTO audit(ts, record) VALUES (%s, %s::jsonb)", (ts, line)),
                  retry=False)

    def audit_records(self) -> list[dict]:
        rows = self._run(lambda c: c.execute("SELECT record::text FROM audit ORDER BY id").fetchall())
        return [json.loads(r[0]) for r in rows]

    def forget_user(self, user_id: str) -> None:
        self.reset(user_id)

    def close(self) -> None:   # the pool belongs to the gallery
        return None
