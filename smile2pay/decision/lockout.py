"""The lockout policy (pure): how many failures, in what window, lock a user out for how long.

The guard stores (:mod:`smile2pay.gallery.guard`, :mod:`smile2pay.gallery.guard_pg`) keep the failure
times, nonces and audit records; they import this module, never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GuardSettings:
    max_failures: int = 5          # consecutive failures within the window that lock a user out
    window_s: float = 900.0        # failures older than this do not count
    lockout_s: float = 900.0       # how long a lockout lasts after the last failure
    nonce_ttl_s: float = 7 * 86400.0


def lockout_end(failures_newest_first: list[float], s: GuardSettings, now: float) -> float | None:
    """End time of a lockout given the user's last ``max_failures`` failure times (newest first), or
    None: locked when that many consecutive failures fall within ``window_s`` and the last is under
    ``lockout_s`` old. Shared by every guard backend."""
    if len(failures_newest_first) < s.max_failures:
        return None
    last, oldest = failures_newest_first[0], failures_newest_first[s.max_failures - 1]
    if last - oldest <= s.window_s and now < last + s.lockout_s:
        return last + s.lockout_s
    return None


__all__ = ["GuardSettings", "lockout_end"]
