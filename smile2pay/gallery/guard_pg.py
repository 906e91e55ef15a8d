"""The guard (lockout, single-use nonces, audit) in PostgreSQL, shared by every server of a fleet.

The guard contract (:class:`smile2pay.gallery.base.GuardStore`, as :class:`smile2pay.gallery.guard.Guard`
implements it on SQLite); the tables (``failures``, ``nonces``, ``audit``)
live in the gallery's schema (migrations in :mod:`smile2pay.gallery.postgres`). A nonce used on one
server is refused on every other; failures counted on any server lock the user out everywhere.

Fail closed: when PostgreSQL cannot be reached, every guard call raises ``GUARD_UNAVAILABLE``
(HTTP 503 with ``Retry-After``). A payment decision that cannot check its lockout, record its nonce
or write its audit record is not made: a replayed request can never be approved twice, and an
attacker cannot use an outage to try faces without counting. (Identification and 1:1 identity checks
keep working from the cached index: :class:`smile2pay.gallery.postgres.PostgresGallery`.)

Outage mode ``local`` (``SMILE2PAY_PG_OUTAGE_VERIFY=local``, opt-in): while PostgreSQL is unreachable
and the last contact is at most ``max_staleness_s`` old, lockout, nonces and audit records are kept on
this server (a :class:`~smile2pay.gallery.guard.Guard` in ``spool_dir``: SQLite + fsynced JSONL, so a
crash loses nothing) and payment verify keeps deciding from the cached templates. When PostgreSQL
answers again the spool is written to it in one transaction (failures, nonces, audit records marked
``outage_fallback``) and emptied. What is weaker during those seconds: a nonce is unique on this server
only and a lockout counts only this server's failures; a nonce that another server also accepted is
found at the flush and audited as ``NONCE_REUSED_DURING_OUTAGE``. Past ``max_staleness_s`` it fails
closed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..decision.lockout import GuardSettings, lockout_end
from ..errors import GalleryError
from .base import BaseGuard, nonce_hash
from .guard import Guard
from .postgres import GalleryUnavailableError

log = logging.getLogger(__name__)


class GuardUnavailableError(GalleryError):
    code = "GUARD_UNAVAILABLE"


class PostgresGuard(BaseGuard):
    def __init__(self, pool, settings: GuardSettings = GuardSettings()) -> None:
        super().__init__(settings)
        self.pool = pool
        self.folder = None
        ps = getattr(pool, "settings", None)
        self.outage_mode = getattr(ps, "outage_verify", "closed")
        self._spool: Guard | None = None
        self._spool_mu = threading.Lock()
        self._pending = False
        if self.outage_mode == "local":
            folder = Path(ps.spool_dir).expanduser() / str(getattr(pool, "schema", "public"))
            self._spool = Guard(folder, settings)
            self._pending = self._spool.pending()

    @property
    def spool(self) -> Guard | None:
        """This server's outage spool (outage mode ``local``), or None."""
        return self._spool

    @classmethod
    def for_gallery(cls, gallery, settings: GuardSettings) -> "PostgresGuard":
        """In the gallery's schema, on its connection pool (the pool belongs to the gallery)."""
        return cls(gallery.pool, settings)

    # -- outage mode "local" -----------------------------------------------------------------
    def _or_local(self, remote, local, what: str, retry: bool = True):
        """``remote`` in PostgreSQL; in outage mode ``local`` and within the staleness bound,
        ``local`` on this server's spool instead of failing."""
        if self._pending:
            try:
                self.flush()
            except GuardUnavailableError:
                pass
        if self._spool is None:
            return self._run(remote, retry=retry)
        try:
            # retried once even where the closed mode does not retry: a pooled connection may have died
            # with a restart, and a spurious REPLAY / an extra failure is safer than a local decision
            return self._run(remote, retry=True)
        except GuardUnavailableError:
            age = time.time() - self.pool.last_contact
            limit = self.pool.settings.max_staleness_s
            if not self.pool.last_contact or age > limit:
                raise GuardUnavailableError(
                    f"lockout/nonce/audit store unreachable for {age:.0f} s (more than {limit:g} s): the "
                    "payment decision is declined until it is back",
                    retry_after_s=self.pool.settings.retry_after_s) from None
            self._pending = True
            log.warning("PostgreSQL unreachable: %s kept on this server until it is back (outage mode 'local')",
                        what)
            return local()

    def flush(self) -> dict:
        """Write the outage spool to PostgreSQL in one transaction, then empty it. Returns counts."""
        if self._spool is None:
            return {"nonces": 0, "failures": 0, "audit": 0, "reused_nonces": 0}
        with self._spool_mu:
            sp = self._spool
            nonces, fails, lines = sp.spooled()
            reused: list[str] = []

            def q(c):
                reused.clear()
                with c.transaction():
                    for h, ts in nonces:
                        if c.execute("INSERT INTO nonces(nonce_hash, ts) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                                     "RETURNING 1", (h, ts)).fetchone() is None:
                            reused.append(h)
                    for u, ts in fails:
                        c.execute("INSERT INTO failures(user_id, ts) VALUES (%s, %s)", (u, ts))
                    for rec in lines:
                        c.execute("INSERT INTO audit(ts, record) VALUES (%s, %s::jsonb)",
                                  (rec.get("ts", time.time()), json.dumps(rec, sort_keys=True, default=str)))
                    for h in reused:
                        rec = {"ts": time.time(), "event": "NONCE_REUSED_DURING_OUTAGE", "nonce_sha256": h[:16]}
                        c.execute("INSERT INTO audit(ts, record) VALUES (%s, %s::jsonb)",
                                  (rec["ts"], json.dumps(rec, sort_keys=True)))

            self._run(q, retry=False)
            sp.clear()                          # committed in PostgreSQL: empty the spool
            self._pending = False
        if reused:
            log.warning("%d nonce(s) accepted here during the outage had also been used elsewhere "
                        "(audited as NONCE_REUSED_DURING_OUTAGE)", len(reused))
        return {"nonces": len(nonces), "failures": len(fails), "audit": len(lines), "reused_nonces": len(reused)}

    @contextmanager
    def _conn(self):
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
    def _recent_failures(self, user_id: str, n: int) -> list[float]:
        return self._or_local(
            lambda c: [r[0] for r in c.execute("SELECT ts FROM failures WHERE user_id=%s ORDER BY ts DESC LIMIT %s",
                                               (user_id, n))],
            lambda: self._spool.recent_failures(user_id, n),      # outage mode "local": this server's count
            "the lockout check")

    def reserve(self, user_id: str, now: float | None = None) -> tuple[float | None, object]:
        """As :meth:`Guard.reserve`, fleet-wide: a per-user advisory lock makes check + insert atomic
        across servers. The reservation is the failure row's timestamp (jittered to be unique)."""
        import random

        now = time.time() if now is None else now
        ts = now + random.random() * 1e-4
        s = self.settings
        key = int.from_bytes(hashlib.sha256(("lockout:" + user_id).encode()).digest()[:8], "big", signed=True)

        def q(c):
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
                end = lockout_end([r[0] for r in c.execute("SELECT ts FROM failures WHERE user_id=%s ORDER BY ts "
                                                          "DESC LIMIT %s", (user_id, s.max_failures))], s, now)
                if end is not None:
                    return end, None
                c.execute("INSERT INTO failures(user_id, ts) VALUES (%s, %s)", (user_id, ts))
                return None, ("pg", user_id, ts)

        def local():
            end, rid = self._spool.reserve(user_id, now)
            return end, (None if rid is None else ("local", rid))

        return self._or_local(q, local, "the lockout check")

    def release(self, reservation) -> None:
        if reservation is None:
            return
        if reservation[0] == "local":
            if self._spool is not None:
                self._spool.release(reservation[1])
            return
        _, user_id, ts = reservation
        self._or_local(lambda c: c.execute("DELETE FROM failures WHERE user_id=%s AND ts=%s", (user_id, ts)),
                       lambda: None, "a released attempt")

    def record(self, user_id: str, approved: bool, now: float | None = None, reservation=None) -> None:
        now = time.time() if now is None else now
        if approved:
            self._or_local(lambda c: c.execute("DELETE FROM failures WHERE user_id=%s", (user_id,)),
                           lambda: self._spool.record(user_id, True, now), "a lockout reset")
        elif reservation is None:
            self._or_local(lambda c: c.execute("INSERT INTO failures(user_id, ts) VALUES (%s, %s)", (user_id, now)),
                           lambda: self._spool.record(user_id, False, now), "a failure", retry=False)

    def reset(self, user_id: str) -> None:
        self._run(lambda c: c.execute("DELETE FROM failures WHERE user_id=%s", (user_id,)))
        if self._spool is not None:
            self._spool.reset(user_id)

    # -- nonces ----------------------------------------------------------------------------
    def use_nonce(self, nonce: str, now: float | None = None) -> bool:
        """True the first time a nonce is seen on any server; False on any later use."""
        now = time.time() if now is None else now
        h = nonce_hash(nonce)

        def q(c):
            with c.transaction():
                c.execute("DELETE FROM nonces WHERE ts < %s", (now - self.settings.nonce_ttl_s,))
                return c.execute("INSERT INTO nonces(nonce_hash, ts) VALUES (%s, %s) ON CONFLICT DO NOTHING "
                                 "RETURNING 1", (h, now)).fetchone() is not None

        # not retried: if the commit's outcome is unknown, the nonce may be spent; the client retries
        # with a new nonce (fail closed)
        return self._or_local(q, lambda: self._spool.use_nonce(nonce, now), "a nonce", retry=False)

    # -- audit -----------------------------------------------------------------------------
    def _append_audit(self, ts: float, record: dict, line: str) -> None:
        self._or_local(lambda c: c.execute("INSERT INTO audit(ts, record) VALUES (%s, %s::jsonb)", (ts, line)),
                       lambda: self._spool.audit({**record, "outage_fallback": True}), "an audit record",
                       retry=False)

    def audit_records(self) -> list[dict]:
        rows = self._run(lambda c: c.execute("SELECT record::text FROM audit ORDER BY id").fetchall())
        return [json.loads(r[0]) for r in rows]

    def forget_user(self, user_id: str) -> None:
        self.reset(user_id)

    def close(self) -> None:   # the pool belongs to the gallery
        if self._spool is not None:
            self._spool.close()
