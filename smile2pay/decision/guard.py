"""Abuse controls: lockout after repeated failures, single-use nonces, append-only audit log.

State lives in ``guard.sqlite`` (WAL) beside the gallery so it survives restarts and is shared
by every process on the machine. The audit log is JSON lines, fsynced per record, and never
holds images or embeddings: only ids, decisions, reason codes and scores.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import GalleryError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (user_id TEXT NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS failures_user ON failures(user_id, ts);
CREATE TABLE IF NOT EXISTS nonces (nonce_hash TEXT PRIMARY KEY, ts REAL NOT NULL);
"""


@dataclass(frozen=True)
class GuardSettings:
    max_failures: int = 5          # consecutive failures within the window that lock a user out
    window_s: float = 900.0        # failures older than this do not count
    lockout_s: float = 900.0       # how long a lockout lasts after the last failure
    nonce_ttl_s: float = 7 * 86400.0



def lockout_end(failures_newest_first: list[float], s: GuardSettings, now: float) -> float | None:
    """End time of a lockout given the user's last ``max_failures`` failure times (newest first), or
    None: locked when that many consecutive failures fall within ``window_s`` and the last is under
    ``lockout_s`` old. Shared by the SQLite and PostgreSQL guards."""
    if len(failures_newest_first) < s.max_failures:
        return None
    last, oldest = failures_newest_first[0], failures_newest_first[s.max_failures - 1]
    if last - oldest <= s.window_s and now < last + s.lockout_s:
        return last + s.lockout_s
    return None

class Guard:
    def __init__(self, folder: str | os.PathLike, settings: GuardSettings = GuardSettings()) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.settings = settings
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

    # -- lockout ---------------------------------------------------------------------------
    def locked_until(self, user_id: str, now: float | None = None) -> float | None:
        """End time of the user's lockout, or None. Locked when the last ``max_failures``
        consecutive failures fall within ``window_s`` and the last is under ``lockout_s`` old."""
        now = time.time() if now is None else now
        s = self.settings
        with self._lock:
            rows = self._db.execute("SELECT ts FROM failures WHERE user_id=? ORDER BY ts DESC LIMIT ?",
                                    (user_id, s.max_failures)).fetchall()
        return lockout_end([r[0] for r in rows], s, now)

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
        h = hashlib.sha256(nonce.encode("utf-8")).hexdigest()
        with self._lock:
            self._db.execute("DELETE FROM nonces WHERE ts<?", (now - self.settings.nonce_ttl_s,))
            try:
                self._db.execute("INSERT INTO nonces(nonce_hash, ts) VALUES (?, ?)", (h, now))
                return True
            except sqlite3.IntegrityError:
                return False

    # -- audit -----------------------------------------------------------------------------
    def audit(self, record: dict) -> None:
        """Append one decision record (caller passes no images/embeddings; checked here)."""
        for k, v in record.items():
            if hasattr(v, "shape") or (isinstance(v, (list, tuple)) and len(v) > 64):
                raise ValueError(f"audit field {k!r} looks like an array; audit records hold no biometrics")
        line = json.dumps({"ts": time.time(), **record}, sort_keys=True, default=str)
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

    def close(self) -> None:
        with self._lock:
            self._db.close()
