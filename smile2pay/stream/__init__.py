"""Live till: a payment decided from a camera stream (issue 8).

    session = s2p.start_session("alice", require="AU6+AU12", nonce="order-42")
    for frame, ts in camera:                 # BGR arrays (or JPEG/PNG bytes), timestamps in seconds
        upd = session.push(frame, ts)        # synchronous: the state after this frame
        show(upd.prompt, upd.box, upd.au)
        if upd.final:
            return upd.decision              # the same Decision type verify() returns

The package, by concern:

* :mod:`.machine`: the state machine (states, transitions, timers, challenge) on plain per-frame
  observations: no models, no threads (:class:`StreamMachine`, :class:`Observation`, :class:`StreamSettings`);
* :mod:`.session`: :class:`StreamSession`: pipeline + face tracking + the payment attempt
  (:class:`smile2pay.attempt.PaymentAttempt`), feeding the machine;
* :mod:`.mailbox`: the one-slot "latest frame wins" mailbox and its worker thread (``offer``);
* :mod:`.plot`: :func:`render_timeline` (matplotlib), imported only when used.

State names and stream reason codes are assigned in :mod:`smile2pay.reasons`; they are re-exported here.
"""
from __future__ import annotations

from ..reasons import (APPROVED, CHALLENGE_FAILED, DECLINED, FRAME_UNREADABLE, HOLD_NEUTRAL, RELAX,  # noqa: F401
                       SECOND_FACE, SMILE_NOW, STATES, TIMEOUT, TRACK_LOST, WAITING_FOR_FACE, WINDOW_EXPIRED)
from .machine import PROMPTS, Decide, Decline, Observation, Step, StreamMachine, StreamSettings  # noqa: F401
from .session import RECORD_FORMAT, StreamSession, StreamUpdate  # noqa: F401

__all__ = ["APPROVED", "CHALLENGE_FAILED", "DECLINED", "FRAME_UNREADABLE", "HOLD_NEUTRAL", "RELAX", "SECOND_FACE",
           "SMILE_NOW", "STATES", "TIMEOUT", "TRACK_LOST", "WAITING_FOR_FACE", "WINDOW_EXPIRED", "PROMPTS",
           "Decide", "Decline", "Observation", "Step", "StreamMachine", "StreamSettings", "RECORD_FORMAT",
           "StreamSession", "StreamUpdate", "render_timeline"]


def __getattr__(name: str):
    if name == "render_timeline":      # matplotlib only when a timeline is drawn
        from .plot import render_timeline

        return render_timeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
