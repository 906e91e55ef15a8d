"""The guard on SQLite: lockout after repeated failures, single-use nonces, append-only audit log.

State lives in ``guard.sqlite`` (WAL) beside the gallery so it survives restarts and is shared
by every process on the machine. The audit log is JSON lines, fsynced per record, and never
holds images or embeddings: only ids, decisions, reason codes and scores. The contract is
:class:`smile2pay.gallery.base.GuardStore`; the lockout policy is :mod:`smile2pay.decision.lockout`.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from ..decision.lockout import GuardSettings, lockout_end
from ..errors import GalleryError
from .base import BaseGuard, nonce_hash

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (user_id TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_user ON failures(user_id, ts);
CREATE TABLE IF NOT EXISTS nonces (nonce_hash TEXT PRIMARY KEY, ts REAL NOT NULL);
"""


class Guard(BaseGuard):
    """Lockout, nonces and audit in ``folder`` (``guard.sqlite`` + ``audit.jsonl``). Also the local
    outage spool of :class:`smile2pay.gallery.guard_pg.PostgresGuard` (:meth:`spooled`, :meth:`clear`)."""

    def __init__(self, folder: str | os.PathLike, settings: GuardSettings = GuardSettings()) -> None:
        super().__init__(settings)
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.folder / "guard.sqlite", timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")       # erased rows are zeroed, not left in free pages
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise GalleryError(f"cannot open guard database in {self.folder}: {e}", code="GUARD_UNAVAILABLE") from e
        self._audit_path = self.folder / "audit.jsonl"

    @classmethod
    def for_gallery(cls, gallery, settings: GuardSettings) -> "Guard":
        """Beside a folder gallery: ``guard.sqlite`` and ``audit.jsonl`` in its folder."""
        return cls(gallery.path, settings)

    # -- lockout ---------------------------------------------------------------------------
    def recent_failures(self, user_id: str, n: int) -> list[float]:
        """The user's last ``n`` failure times, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT ts FROM failures WHERE user_id=? ORDER BY ts DESC LIMIT ?",
                                    (user_id, n)).fetchall()
        return [r[0] for r in rows]

    _recent_failures = recent_failures

    def reserve(self, user_id: str, now: float | None = None) -> tuple[float | None, int | None]:
        """Check the lockout and count this attempt as a failure *before* the work, atomically:
        ``(locked_until, None)`` when locked, else ``(None, reservation)``. Concurrent attempts each
        hold a reservation, so at most ``max_failures`` of them are ever evaluated. The attempt's
        outcome then goes to :meth:`record` (the reservation is the failure) or :meth:`release`."""
        now = time.time() if now is None else now
        s = self.settings
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")      # other processes on this gallery wait here
            try:
                rows = self._db.execute("SELECT ts FROM failures WHERE user_id=? ORDER BY ts DESC LIMIT ?",
                                        (user_id, s.max_failures)).fetchall()
                end = lockout_end([r[0] for r in rows], s, now)
                rid = None
                if end is None:
                    rid = self._db.execute("INSERT INTO failures(user_id, ts) VALUES (?, ?)", (user_id, now)).lastrowid
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return end, rid

    def release(self, reservation) -> None:
        """The reserved attempt did not count (e.g. a replayed nonce): drop its reservation."""
        if reservation is None:
            return
        with self._lock:
            self._db.execute("DELETE FROM failures WHERE rowid=?", (int(reservation),))

    def record(self, user_id: str, approved: bool, now: float | None = None, reservation=None) -> None:
        """An attempt's outcome: approval clears the user's failures; a failure is recorded (it already is
        when the attempt holds a ``reservation`` from :meth:`reserve`)."""
        now = time.time() if now is None else now
        with self._lock:
            if approved:
                self._db.execute("DELETE FROM failures WHERE user_id=?", (user_id,))
            elif reservation is None:
                self._db.execute("INSERT INTO failures(user_id, ts) VALUES (?, ?)", (user_id, now))

    def reset(self, user_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM failures WHERE user_id=?", (user_id,))

    # -- nonces ----------------------------------------------------------------------------
    def use_nonce(self, nonce: str, now: float | None = None) -> bool:
        """True the first time a nonce is seen; False on any later use (a replayed request)."""
        now = time.time() if now is None else now
        h = nonce_hash(nonce)
        with self._lock:
            self._db.execute("DELETE FROM nonces WHERE ts<?", (now - self.settings.nonce_ttl_s,))
            try:
                self._db.execute("INSERT INTO nonces(nonce_hash, ts) VALUES (?, ?)", (h, now))
                return True
            except sqlite3.IntegrityError:
                return False

    # -- audit -----------------------------------------------------------------------------
    def _append_audit(self, ts: float, record: dict, line: str) -> None:
        with self._lock:
            fd = os.open(self._audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)

    def audit_records(self) -> list[dict]:
        if not self._audit_path.exists():
            return []
        with open(self._audit_path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def forget_user(self, user_id: str) -> None:
        """Erasure: drop the user's lockout state (audit lines keep only the id and outcome). The rows
        are zeroed (secure_delete) and the WAL is checkpointed and truncated, so the id leaves every
        file but the audit log."""
        self.reset(user_id)
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- as an outage spool (PostgresGuard, outage mode "local") ----------------------------
    def spooled(self) -> tuple[list[tuple[str, float]], list[tuple[str, float]], list[dict]]:
        """Everything held here: ``(nonces [(sha256, ts)], failures [(user_id, ts)], audit records)``."""
        with self._lock:
            nonces = self._db.execute("SELECT nonce_hash, ts FROM nonces").fetchall()
            fails = self._db.execute("SELECT user_id, ts FROM failures").fetchall()
        return nonces, fails, self.audit_records()

    def pending(self) -> bool:
        """True when any failure, nonce or audit record is held here."""
        nonces, fails, lines = self.spooled()
        return bool(nonces or fails or lines)

    def clear(self) -> None:
        """Empty the store (nonces, failures, audit log; the audit file is truncated and fsynced)."""
        with self._lock:
            self._db.execute("DELETE FROM nonces")
            self._db.execute("DELETE FROM failures")
            fd = os.open(self._audit_path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o600)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["Guard", "GuardSettings"]
