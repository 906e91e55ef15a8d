"""``StreamSession``: one payment attempt from a stream of frames: the pipeline, face tracking and the
payment attempt (:class:`smile2pay.attempt.PaymentAttempt`), feeding the state machine
(:class:`smile2pay.stream.machine.StreamMachine`).

* The claimed user's face is found by identity (the attempt's threshold, the one that approves payments)
  and then tracked across frames by IoU; its identity is re-checked (embedded) whenever the IoU with the
  previous frame falls below ``smile2pay.vision.track.LINK_IOU``, and on the neutral and smile observations
  the decision uses; other tracked frames carry the track's last score (``Smile2Pay.identity_frames =
  "all"``: every processed frame embedded). Any other face is reported (``SECOND_FACE``), never used; one at
  least ``StreamSettings.near_face_ratio`` (0.5) of the user's face height, someone beside them rather than a
  queue behind, makes the frame unusable for the decision (``MULTIPLE_FACES``).
  ``lost_frames`` processed frames without the tracked face drop the track (``TRACK_LOST``).
* Fast producers call :meth:`StreamSession.offer`: a one-slot "latest frame wins" mailbox
  (:mod:`smile2pay.stream.mailbox`) served by a worker thread.
* ``record=True`` keeps per-frame states, AU probabilities and identity scores (never images or
  embeddings) for :func:`smile2pay.stream.plot.render_timeline`.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..attempt import check_nonce
from ..decision.rules import parse_rule
from ..errors import RequestError, Smile2PayError
from ..reasons import INTERNAL
from ..types import Decision, Face
from ..vision import track
from ..vision.track import box_iou as iou   # IoU of two x1, y1, x2, y2 boxes (tracking)
from .machine import LOST, PROMPTS, SWAPPED, Decide, Decline, Observation, StreamMachine, StreamSettings
from .mailbox import Mailbox

log = logging.getLogger(__name__)

RECORD_FORMAT = "smile2pay.stream-record/1"


def _seconds(timestamp) -> float:
    """A frame's timestamp in seconds (None: now, on a monotonic clock); not a finite number (``"abc"``,
    NaN, inf: a stream clock that would never reach its timeout) is a ``RequestError``."""
    if timestamp is None:
        return time.monotonic()
    try:
        ts = float(timestamp)
    except (TypeError, ValueError):
        ts = math.nan
    if not math.isfinite(ts):
        raise RequestError(f"timestamp must be a finite number of seconds, got {type(timestamp).__name__}",
                           code="REQUEST_INVALID")
    return ts


#: the reason of a session whose worker failed on a frame (declined, not counted as a failure)


@dataclass
class StreamUpdate:
    """The state after one processed frame (JSON-friendly through :meth:`to_dict`)."""

    state: str
    prompt: str
    t: float                                    # stream time since the first frame (s)
    frame: int                                  # index of this frame among those pushed/offered
    reasons: list[str] = field(default_factory=list)
    box: list[float] | None = None              # tracked face x1, y1, x2, y2 (frame pixels)
    image_size: list[int] | None = None         # width, height of the frame
    faces: int = 0
    au: dict[str, float] = field(default_factory=dict)       # smoothed probabilities (rule's AUs)
    au_raw: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    absent_thresholds: dict[str, float] = field(default_factory=dict)
    identity_score: float | None = None
    identity_threshold: float | None = None
    processed: int = 0
    skipped: int = 0
    final: bool = False
    decision: Decision | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "decision"}
        d["decision"] = self.decision.to_dict() if self.decision is not None else None
        return d


class StreamSession:
    """One payment attempt from a stream of frames. Create with ``Smile2Pay.start_session``.

    Public: ``state``, ``final``, ``decision``, ``request_id``, ``user_id``, ``rule``, ``policy``,
    ``settings``, ``processed``, ``skipped``, ``attempt`` (the payment attempt) and ``machine`` (the states)."""

    def __init__(self, s2p, user_id: str, require: str = "AU6+AU12", nonce: str | None = None,
                 request_id: str | None = None, settings: StreamSettings | None = None) -> None:
        self.settings = settings or StreamSettings()
        self.settings.validate()
        check_nonce(nonce)
        self.s2p = s2p
        self.pipeline = s2p.pipeline
        self.rule = parse_rule(require)
        self.user_id = user_id
        self.attempt = s2p.begin(user_id, self.rule, nonce=nonce, request_id=request_id, liveness="stream")
        self.policy = self.attempt.policy
        self.machine = StreamMachine(self.rule, self.policy, self.settings, self.attempt.baseline)
        self.decision: Decision | None = None
        self._frames_in = 0
        self.processed = 0
        self.skipped = 0
        # the track of the claimed user's face
        self._box = None
        self._lost = 0
        self._track_score: float | None = None   # identity score of the track's last embedded frame
        self._unchecked: dict[int, Any] = {}      # id(crop) -> crop of tracked frames not embedded
        self._record: list[dict] = []
        self._pipe_s = 0.0
        self._lock = threading.RLock()      # push() and the offer() worker never process concurrently
        self._last: StreamUpdate | None = None
        self._mailbox = Mailbox(self._work, stopped=lambda: self.final)
        self._listeners: list[Callable[[StreamUpdate], None]] = []
        if self.attempt.early is not None:     # locked out / nonce replayed / not enrolled
            self._finalize(self.attempt.early, count_failure=False, t=0.0)

    # -- public ------------------------------------------------------------------------------
    @property
    def final(self) -> bool:
        return self.decision is not None

    @property
    def state(self) -> str:
        return self.machine.state

    @property
    def request_id(self) -> str:
        return self.attempt.request_id

    def push(self, frame, timestamp: float | None = None) -> StreamUpdate:
        """Process one frame now (blocking) and return the state after it. ``timestamp`` in seconds
        (any origin; default: a monotonic clock). After the final state every push returns it."""
        ts = _seconds(timestamp)
        with self._lock:
            idx = self._frames_in
            self._frames_in += 1
            return self._process(frame, ts, idx)

    def offer(self, frame, timestamp: float | None = None) -> bool:
        """Non-blocking: hand a frame to the worker thread. If the previous offered frame is still
        waiting, it is replaced (counted in ``skipped``). Returns False once the session is final."""
        if self.final or self._mailbox.closed:
            return False
        ts = _seconds(timestamp)
        with self._mailbox.cond:
            if self.final or self._mailbox.closed:
                return False
            idx = self._frames_in
            self._frames_in += 1
            if self._mailbox.put((frame, ts, idx)):
                self.skipped += 1
        return True

    def add_listener(self, fn: Callable[[StreamUpdate], None]) -> None:
        """Called (in the processing thread) with every update."""
        self._listeners.append(fn)

    def latest(self) -> StreamUpdate | None:
        return self._last

    def wait(self, timeout: float | None = None) -> Decision | None:
        """Block until the session is final (or ``timeout`` seconds); returns the Decision or None."""
        if timeout is not None:
            try:
                timeout = float(timeout)
            except (TypeError, ValueError):
                timeout = math.nan
            if math.isnan(timeout):   # NaN: a wait that would never end
                raise RequestError("timeout must be a number of seconds or None", code="REQUEST_INVALID")
            if timeout >= threading.TIMEOUT_MAX:   # inf, 1e300: no limit (the lock cannot take them)
                timeout = None
        self._mailbox.wait_for(lambda: self.final, timeout)
        return self.decision

    def expire(self, timestamp: float | None = None) -> StreamUpdate | None:
        """Decline with TIMEOUT if ``timeout_s`` has passed (for callers whose frames stop coming)."""
        ts = _seconds(timestamp)
        with self._lock:
            m = self.machine
            if not self.final and m.t0 is not None and m.expired(ts - m.t0):
                t = ts - m.t0
                self._settle(m.timeout(t))
                return self._emit(self._update(t, self._frames_in - 1))
        return None

    def end(self, timestamp: float | None = None) -> StreamUpdate:
        """The stream ended (end of a video, camera gone): decline with TIMEOUT if still undecided.
        Frames offered but not yet processed are processed first."""
        self._mailbox.drain()
        with self._lock:
            if not self.final:
                t0 = self.machine.t0
                t = 0.0 if t0 is None else max(0.0, _seconds(timestamp) - t0)
                self._settle(self.machine.timeout(t))
                return self._emit(self._update(t, max(self._frames_in - 1, 0)))
            return self._last or self._update(0.0, 0)

    def close(self) -> None:
        """Stop the worker; an unfinished session is left undecided (nothing audited) and its lockout
        reservation is released (an undecided session can never approve, so it is no attempt)."""
        self._mailbox.close()
        if self.decision is None:
            self.attempt.abandon()

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def recording(self) -> dict[str, Any]:
        """Per-frame states, AU probabilities and identity scores (no images, no embeddings)."""
        m = self.machine
        return {"format": RECORD_FORMAT, "user_id": self.user_id, "rule": str(self.rule),
                "settings": asdict(self.settings), "identity_threshold": m.threshold,
                "thresholds": {a: round(t, 4) for a, t in m.need.items()},
                "absent_thresholds": {a: round(t, 4) for a, t in m.absent.items()},
                "policy": self.policy.version, "frames": list(self._record), "events": list(m.events),
                "processed": self.processed, "skipped": self.skipped,
                "decision": None if self.decision is None else {
                    "approved": self.decision.approved, "reasons": self.decision.reasons,
                    "request_id": self.decision.request_id, "stream": self.decision.liveness.get("stream")}}

    # -- worker --------------------------------------------------------------------------------
    def _work(self, item) -> None:
        frame, ts, idx = item
        try:
            with self._lock:
                self._process(frame, ts, idx)
        except Exception:   # a worker must not die silently: log and decline
            log.exception("stream worker failed on frame %d", idx)
            with self._lock:
                if not self.final:
                    t0 = self.machine.t0
                    self._finalize(self.attempt.decline([INTERNAL]), count_failure=False,
                                   t=0.0 if t0 is None else ts - t0)
                    self._emit(self._update(0.0, idx))

    # -- one frame -------------------------------------------------------------------------------
    def _process(self, frame, ts: float, idx: int) -> StreamUpdate:
        if self.final:
            return self._last or self._update(0.0, idx)
        m = self.machine
        t = m.clock(ts)
        if m.expired(t):
            self._settle(m.timeout(t))
            return self._emit(self._update(t, idx))
        t_start = time.perf_counter()
        try:
            img = self.pipeline.load(frame)
        except Smile2PayError as e:
            self.processed += 1
            return self._emit(self._update(t, idx, reasons=m.step(Observation(t, error=e.code)).reasons))
        faces = self.pipeline.faces(img, self.pipeline.detect(img))
        faces.sort(key=lambda f: -f.area)
        self.processed += 1
        obs, tracked = self._find_user(faces, t)
        if tracked is not None and self.settings.near_face_ratio > 0 and len(faces) > 1:
            # someone beside the user (a face at least near_face_ratio of theirs): the machine skips the frame
            h = float(tracked.bbox[3] - tracked.bbox[1])
            obs.near_faces = sum(1 for f in faces if f is not tracked
                                 and float(f.bbox[3] - f.bbox[1]) >= self.settings.near_face_ratio * h)
        extra: dict[str, Any] = {"faces": len(faces), "image_size": [int(img.shape[1]), int(img.shape[0])]}
        raw: dict[str, float] = {}
        if tracked is not None:
            extra["box"] = [round(float(v), 1) for v in tracked.bbox]
            self.pipeline.au([tracked])
            raw = dict(tracked.au_probs or {})
            obs.face = self.attempt.observe(tracked, score=obs.identity_score)
            obs.source = (img, tracked)       # the frame behind the observation (PAD at the decision)
        step = m.step(obs)
        self._pipe_s += time.perf_counter() - t_start
        if step.verdict is not None:
            self._settle(step.verdict)
        return self._emit(self._update(t, idx, reasons=step.reasons, score=obs.identity_score, raw=raw, **extra))

    def _find_user(self, faces: list[Face], t: float) -> tuple[Observation, Face | None]:
        """Tracking: the claimed user's face among ``faces`` (kept by IoU, else searched by identity)."""
        obs = Observation(t, faces=len(faces))
        tracked: Face | None = None
        score: float | None = None
        if not faces:
            self._lose_track_maybe(obs)
        elif self._box is not None:
            ious = [iou(self._box, f.bbox) for f in faces]
            j = int(np.argmax(ious))
            if ious[j] >= self.settings.iou_min:
                tracked = faces[j]
                if self._skip_embed and ious[j] >= track.LINK_IOU and self._track_score is not None \
                        and tracked.identity_crop is not None:
                    # the same face, in place since an identity-checked frame: its identity is carried
                    # here and checked again (embedded) if the decision uses this frame (_check_identity)
                    score = self._track_score
                    # keep only what a decision can still use (the neutral / smile observations held)
                    held = {id(o.crop) for o in self.machine.held()}
                    self._unchecked = {k: v for k, v in self._unchecked.items() if k in held}
                    self._unchecked[id(tracked.identity_crop)] = tracked.identity_crop
                else:
                    self.pipeline.embed([tracked])
                    score = self.attempt.score(tracked.embedding)
                    self._track_score = score
                if not self.attempt.matches(score):    # someone else took the tracked place
                    obs.dropped = SWAPPED
                    self._box, self._lost, tracked = None, 0, None
            else:
                self._lose_track_maybe(obs)
        if faces and tracked is None and self._box is None:
            cand = faces[: self.settings.max_faces]
            self.pipeline.embed(cand)
            scores = [self.attempt.score(f.embedding) for f in cand]
            j = int(np.argmax(scores))
            score = scores[j]
            if self.attempt.matches(score):
                tracked = cand[j]
                self._track_score = score
                obs.started = True
            else:
                obs.mismatch = True
        if tracked is not None:
            self._lost = 0
            self._box = tracked.bbox.copy()
        obs.identity_score = score
        return obs, tracked

    @property
    def _skip_embed(self) -> bool:
        return getattr(self.s2p, "identity_frames", "decision") == "decision"

    def _lose_track_maybe(self, obs: Observation) -> None:
        if self._box is None:
            return
        self._lost += 1
        if self._lost >= self.settings.lost_frames:
            self._box, self._lost = None, 0
            obs.dropped = LOST

    def _check_identity(self, frames: list) -> None:
        """Embed the observations the decision uses whose identity was carried by tracking (one batched
        forward) and put their own score in place of the carried one."""
        todo = [fo for fo in frames if fo.crop is not None and id(fo.crop) in self._unchecked]
        if not todo:
            return
        embs = self.pipeline.embedder.embed([fo.crop for fo in todo], flip=self.pipeline.settings.flip_tta)
        for fo, e in zip(todo, embs):
            fo.identity_score = self.attempt.score(e)
            self._unchecked.pop(id(fo.crop), None)

    # -- the verdict -----------------------------------------------------------------------------
    def _settle(self, verdict: Decide | Decline) -> None:
        """A machine's verdict -> the Decision, through the payment attempt (guard, audit)."""
        if isinstance(verdict, Decide):
            self._check_identity(verdict.frames)    # identity again on the frames the decision uses
            # passive PAD (~3 ms a face) on the frames the decision uses: enforced, each of them (neutral, smile,
            # relaxed); reported, the smile frame the payment rests on (smile2pay.api.pad_frames)
            from ..api import pad_frames

            todo = pad_frames(self.policy.pad_mode, len(verdict.frames), [], 1)
            for i in todo:
                src = verdict.sources[i]
                if src is not None:
                    verdict.frames[i].pad_score = self.s2p.pad_score(src[0], src[1])
            out = self.machine.conclude(verdict)
        else:
            out = verdict.outcome
        live = dict(out.liveness)
        st = dict(live.get("stream") or {})
        st.update({"t": round(verdict.t, 3), "processed": self.processed, "skipped": self.skipped,
                   "second_face_frames": self.machine.second_face_frames, "smoothing": self.settings.smoothing})
        live["stream"] = st
        dec = self.attempt.decision(out, timings_ms={"pipeline": round(self._pipe_s * 1000.0, 2)}, liveness=live)
        self._finalize(dec, count_failure=True, t=verdict.t)

    def _finalize(self, dec: Decision, *, count_failure: bool, t: float) -> None:
        if not self.attempt.finished:
            dec = self.attempt.finish(dec, count_failure, self.processed,
                                      extra_audit={"source": "stream", "stream_t": round(t, 3),
                                                   "skipped": self.skipped})
        else:                   # finished, then something failed before the session knew: keep that decision
            dec = self.attempt.decided
        with self._mailbox.cond:   # offer() checks final under this lock: nothing is counted after the end
            self.decision = dec
            if isinstance(dec.liveness.get("stream"), dict):
                dec.liveness["stream"]["skipped"] = self.skipped
        self.machine.settle(dec.approved, dec.reasons, t)
        log.info("stream session %s for %s: %s %s", self.request_id, self.user_id, self.state, dec.reasons)
        self._mailbox.notify()

    def _update(self, t: float, idx: int, *, reasons=None, score=None, raw=None, **extra) -> StreamUpdate:
        m, aus = self.machine, self.rule.aus
        return StreamUpdate(state=m.state, prompt=PROMPTS[m.state], t=round(t, 3), frame=idx,
                            reasons=list(reasons or []) + (list(self.decision.reasons) if self.decision else []),
                            au={a: round(float(m.ema.get(a, 0.0)), 4) for a in aus} if m.ema else {},
                            au_raw={a: round(float(raw.get(a, 0.0)), 4) for a in aus} if raw else {},
                            thresholds={a: round(v, 4) for a, v in m.need.items()},
                            absent_thresholds={a: round(v, 4) for a, v in m.absent.items()},
                            identity_score=None if score is None else round(float(score), 4),
                            identity_threshold=round(m.threshold, 4), processed=self.processed,
                            skipped=self.skipped, final=self.final, decision=self.decision, **extra)

    def _emit(self, upd: StreamUpdate) -> StreamUpdate:
        self._last = upd
        if self.settings.record:
            r = {k: v for k, v in upd.to_dict().items() if k not in ("decision", "prompt", "thresholds",
                                                                    "absent_thresholds", "identity_threshold")}
            self._record.append(r)
        for fn in list(self._listeners):
            try:
                fn(upd)
            except Exception:
                log.exception("stream listener failed")
        return upd
