"""Live till: a payment decided from a camera stream (issue 8).

    session = s2p.start_session("alice", require="AU6+AU12", nonce="order-42")
    for frame, ts in camera:                 # BGR arrays (or JPEG/PNG bytes), timestamps in seconds
        upd = session.push(frame, ts)        # synchronous: the state after this frame
        show(upd.prompt, upd.box, upd.au)
        if upd.final:
            return upd.decision              # the same Decision type verify() returns

States: ``WAITING_FOR_FACE`` -> ``HOLD_NEUTRAL`` -> ``SMILE_NOW`` -> ``APPROVED`` | ``DECLINED``.

* The claimed user's face is found by identity (the policy's calibrated threshold) and then tracked
  across frames by IoU; its identity is re-checked (embedded) whenever the IoU with the previous frame
  falls below ``smile2pay.vision.track.LINK_IOU``, and on the neutral and smile observations the decision
  uses; other tracked frames carry the track's last score (``Smile2Pay.identity_frames = "all"``: every
  processed frame embedded). Any other face is reported (``SECOND_FACE``), never used.
* Per-AU probabilities are smoothed over time with an exponential moving average
  (``StreamSettings.smoothing``: the weight of the newest frame; 1.0 = no smoothing).
* The rule's pattern must be absent (a neutral face) for ``neutral_frames`` processed frames, then
  present for ``smile_frames`` within ``window_s`` of the last neutral frame.
* The final decision is :func:`smile2pay.decision.engine.decide` on the chosen neutral and smile
  observations (the same rules as ``verify``'s burst: identity in both, thresholds and the user's
  neutral baseline, not one still repeated, absent -> present), then the same guard (lockout, nonce,
  audit) through ``Smile2Pay._finish``. ``timeout_s`` of stream time without a decision declines
  with ``TIMEOUT``; ``mismatch_frames`` processed frames showing only other people decline with
  ``IDENTITY_MISMATCH``.
* Fast producers call :meth:`StreamSession.offer` instead: a one-slot "latest frame wins" mailbox
  served by a worker thread; frames that arrive while one is being processed replace the waiting one
  and are counted as skipped, so nothing queues.
* ``record=True`` keeps per-frame states, AU probabilities and identity scores (never images or
  embeddings) for :func:`render_timeline`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from .decision import continuity, engine
from .decision.rules import parse_rule
from .errors import RequestError, Smile2PayError
from .types import Decision, Face
from .vision import track
from .vision.track import box_iou as iou   # IoU of two x1, y1, x2, y2 boxes (tracking)

log = logging.getLogger(__name__)

WAITING_FOR_FACE = "WAITING_FOR_FACE"
HOLD_NEUTRAL = "HOLD_NEUTRAL"
SMILE_NOW = "SMILE_NOW"
RELAX = "RELAX"                       # challenge: back to neutral after the smile
CHALLENGE_FAILED = "CHALLENGE_FAILED"  # the face did not follow the prompts (a smile before "Now smile")
APPROVED = "APPROVED"
DECLINED = "DECLINED"
STATES = (WAITING_FOR_FACE, HOLD_NEUTRAL, SMILE_NOW, RELAX, APPROVED, DECLINED)

# reason codes a stream adds to the engine's
TIMEOUT = "TIMEOUT"
SECOND_FACE = "SECOND_FACE"
TRACK_LOST = "TRACK_LOST"
WINDOW_EXPIRED = "WINDOW_EXPIRED"
FRAME_UNREADABLE = "FRAME_UNREADABLE"

PROMPTS = {WAITING_FOR_FACE: "Look at the camera", HOLD_NEUTRAL: "Hold still, neutral face",
           SMILE_NOW: "Now smile", RELAX: "Now relax", APPROVED: "Payment approved", DECLINED: "Payment declined"}

RECORD_FORMAT = "smile2pay.stream-record/1"


@dataclass(frozen=True)
class StreamSettings:
    smoothing: float = 0.6          # EMA weight of the newest frame's AU probabilities (1 = none)
    neutral_frames: int = 3         # processed frames with the pattern absent before SMILE_NOW
    smile_frames: int = 2           # consecutive processed frames with the pattern present
    window_s: float = 5.0           # the smile must come within this long after the last neutral frame
    timeout_s: float = 15.0         # stream time from the first frame to a forced DECLINED
    iou_min: float = 0.3            # IoU with the previous box that keeps the track
    lost_frames: int = 5            # processed frames without the tracked face that drop the track
    mismatch_frames: int = 8        # processed frames showing only other people -> IDENTITY_MISMATCH
    max_faces: int = 3              # faces embedded per frame while searching for the user
    record: bool = False            # keep per-frame states/AU/identity (no images) for a replay
    #: challenge (against pre-recorded clips): "Now smile" comes a server-chosen random time after the
    #: neutral hold (uniform in ``prompt_delay_s``); a smile before it restarts the neutral hold and the
    #: second early smile declines (CHALLENGE_FAILED); after the smile the face must relax to neutral
    challenge: bool = False
    prompt_delay_s: tuple = (0.5, 2.5)
    max_early_smiles: int = 2

    def validate(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise RequestError(f"smoothing must be in (0, 1], got {self.smoothing!r}", code="REQUEST_INVALID")
        for k in ("neutral_frames", "smile_frames", "lost_frames", "mismatch_frames", "max_faces"):
            if int(getattr(self, k)) < 1:
                raise RequestError(f"{k} must be >= 1", code="REQUEST_INVALID")
        for k in ("window_s", "timeout_s"):
            if not float(getattr(self, k)) > 0:
                raise RequestError(f"{k} must be > 0", code="REQUEST_INVALID")
        if not 0.0 < self.iou_min < 1.0:
            raise RequestError("iou_min must be in (0, 1)", code="REQUEST_INVALID")
        lo_hi = tuple(self.prompt_delay_s) if isinstance(self.prompt_delay_s, (tuple, list)) else ()
        if len(lo_hi) != 2 or not 0.0 <= float(lo_hi[0]) <= float(lo_hi[1]) <= 30.0:
            raise RequestError("prompt_delay_s must be [low, high] seconds with 0 <= low <= high <= 30",
                               code="REQUEST_INVALID")
        if int(self.max_early_smiles) < 1:
            raise RequestError("max_early_smiles must be >= 1", code="REQUEST_INVALID")


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
    """One payment attempt from a stream of frames. Create with ``Smile2Pay.start_session``."""

    def __init__(self, s2p, user_id: str, require: str = "AU6+AU12", nonce: str | None = None,
                 request_id: str | None = None, settings: StreamSettings | None = None) -> None:
        self.settings = settings or StreamSettings()
        self.settings.validate()
        if nonce is not None and (not isinstance(nonce, str) or not nonce or len(nonce) > 256):
            raise RequestError("nonce must be a non-empty string of at most 256 characters", code="REQUEST_INVALID")
        self.s2p = s2p
        self.pipeline = s2p.pipeline
        self.policy = s2p.payment_policy()
        self.rule = parse_rule(require)
        s2p.gallery.check_user_id(user_id)
        self.user_id = user_id
        self._ctx = s2p._begin(user_id, self.rule, nonce, request_id, liveness="stream")
        self.need, self.forbid = engine.pattern_thresholds(self.rule, self.policy, self._ctx.baseline)
        self.absent = {a: self.policy.absent_threshold(a) for a in self.rule.required}
        self.thr = self.policy.identity_threshold
        self.state = WAITING_FOR_FACE
        self.decision: Decision | None = None
        self._t0: float | None = None
        self._frames_in = 0
        self.processed = 0
        self.skipped = 0
        self._box = None
        self._lost = 0
        self._mismatch = 0
        self._track_score: float | None = None   # identity score of the track's last embedded frame
        self._unchecked: dict[int, Any] = {}      # id(crop) -> crop of tracked frames not embedded
        self._ema: dict[str, float] | None = None
        self._neutral_streak = 0
        self._smile_streak = 0
        self._neutral: tuple[engine.FrameObs, float] | None = None
        self._prev_sig = None           # capture signature of the previous processed frame
        self._cur_src = None                     # (frame, face) of the observation being processed
        self._neutral_src = self._smile_src = None
        self._prompt_at: float | None = None   # challenge: when "Now smile" is shown (stream time)
        self._early = 0                          # challenge: smiles before the prompt
        self._smile_obs = None                   # challenge: the smile frame, kept while the face relaxes
        self._max_cut = 0.0             # largest consecutive-frame discontinuity since the neutral frame
        self._ever = {"face": False, "match": False, "neutral": False, "present": False, "quality_ok": False}
        self._best_score: float | None = None
        self._second_face_frames = 0
        self._events: list[dict] = []
        self._record: list[dict] = []
        self._pipe_s = 0.0
        self._lock = threading.RLock()      # push() and the offer() worker never process concurrently
        self._last: StreamUpdate | None = None
        # offer(): one-slot mailbox and its worker
        self._cv = threading.Condition()
        self._slot: tuple[Any, float, int] | None = None
        self._worker: threading.Thread | None = None
        self._closed = False
        self._listeners: list[Callable[[StreamUpdate], None]] = []
        if self._ctx.early is not None:     # locked out / nonce replayed / not enrolled
            self._finalize(self._ctx.early, count_failure=False, t=0.0)

    # -- public ------------------------------------------------------------------------------
    @property
    def final(self) -> bool:
        return self.decision is not None

    def push(self, frame, timestamp: float | None = None) -> StreamUpdate:
        """Process one frame now (blocking) and return the state after it. ``timestamp`` in seconds
        (any origin; default: a monotonic clock). After the final state every push returns it."""
        ts = time.monotonic() if timestamp is None else float(timestamp)
        with self._lock:
            idx = self._frames_in
            self._frames_in += 1
            return self._process(frame, ts, idx)

    def offer(self, frame, timestamp: float | None = None) -> bool:
        """Non-blocking: hand a frame to the worker thread. If the previous offered frame is still
        waiting, it is replaced (counted in ``skipped``). Returns False once the session is final."""
        if self.final or self._closed:
            return False
        ts = time.monotonic() if timestamp is None else float(timestamp)
        with self._cv:
            if self.final or self._closed:
                return False
            idx = self._frames_in
            self._frames_in += 1
            if self._slot is not None:
                self.skipped += 1
            self._slot = (frame, ts, idx)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="smile2pay-stream", daemon=True)
                self._worker.start()
            self._cv.notify_all()
        return True

    def add_listener(self, fn: Callable[[StreamUpdate], None]) -> None:
        """Called (in the processing thread) with every update."""
        self._listeners.append(fn)

    def latest(self) -> StreamUpdate | None:
        return self._last

    def wait(self, timeout: float | None = None) -> Decision | None:
        """Block until the session is final (or ``timeout`` seconds); returns the Decision or None."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self.final:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cv.wait(left)
        return self.decision

    def expire(self, timestamp: float | None = None) -> StreamUpdate | None:
        """Decline with TIMEOUT if ``timeout_s`` has passed (for callers whose frames stop coming)."""
        ts = time.monotonic() if timestamp is None else float(timestamp)
        with self._lock:
            if not self.final and self._t0 is not None and ts - self._t0 > self.settings.timeout_s:
                self._timeout(ts - self._t0)
                return self._emit(self._update(ts - self._t0, self._frames_in - 1))
        return None

    def end(self, timestamp: float | None = None) -> StreamUpdate:
        """The stream ended (end of a video, camera gone): decline with TIMEOUT if still undecided.
        Frames offered but not yet processed are processed first."""
        if self._worker is not None:
            with self._cv:
                while self._slot is not None and not self.final and not self._closed:
                    self._cv.wait(0.5)
        with self._lock:
            if not self.final:
                t = 0.0 if self._t0 is None else max(0.0, (time.monotonic() if timestamp is None
                                                           else float(timestamp)) - self._t0)
                self._timeout(t)
                return self._emit(self._update(t, max(self._frames_in - 1, 0)))
            return self._last or self._update(0.0, 0)

    def close(self) -> None:
        """Stop the worker; an unfinished session is left undecided (nothing audited) and its lockout
        reservation is released (an undecided session can never approve, so it is no attempt)."""
        with self._cv:
            self._closed = True
            self._slot = None
            self._cv.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=5)
        if self.decision is None and self._ctx.reservation is not None:
            self.s2p.guard.release(self._ctx.reservation)
            self._ctx.reservation = None

    def __enter__(self) -> "StreamSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def recording(self) -> dict[str, Any]:
        """Per-frame states, AU probabilities and identity scores (no images, no embeddings)."""
        return {"format": RECORD_FORMAT, "user_id": self.user_id, "rule": str(self.rule),
                "settings": asdict(self.settings), "identity_threshold": self.thr,
                "thresholds": {a: round(t, 4) for a, t in self.need.items()},
                "absent_thresholds": {a: round(t, 4) for a, t in self.absent.items()},
                "policy": self.policy.version, "frames": list(self._record), "events": list(self._events),
                "processed": self.processed, "skipped": self.skipped,
                "decision": None if self.decision is None else {
                    "approved": self.decision.approved, "reasons": self.decision.reasons,
                    "request_id": self.decision.request_id, "stream": self.decision.liveness.get("stream")}}

    # -- worker --------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cv:
                while self._slot is None and not self._closed and not self.final:
                    self._cv.wait(0.5)
                if self._closed or self.final:
                    self._cv.notify_all()
                    return
                frame, ts, idx = self._slot
                self._slot = None
            try:
                with self._lock:
                    self._process(frame, ts, idx)
            except Exception:   # a worker must not die silently: log and decline
                log.exception("stream worker failed on frame %d", idx)
                with self._lock:
                    if not self.final:
                        self._finalize(Decision(False, ["INTERNAL"], **self._ctx.base), count_failure=False,
                                       t=0.0 if self._t0 is None else ts - self._t0)
                        self._emit(self._update(0.0, idx))
            with self._cv:
                self._cv.notify_all()

    # -- one frame -------------------------------------------------------------------------------
    def _process(self, frame, ts: float, idx: int) -> StreamUpdate:
        if self.final:
            return self._last or self._update(0.0, idx)
        if self._t0 is None:
            self._t0 = ts
        t = ts - self._t0
        if t > self.settings.timeout_s:
            self._timeout(t)
            return self._emit(self._update(t, idx))
        t_start = time.perf_counter()
        reasons: list[str] = []
        upd_extra: dict[str, Any] = {}
        try:
            img = self.pipeline.load(frame)
        except Smile2PayError as e:
            self.processed += 1
            return self._emit(self._update(t, idx, reasons=[FRAME_UNREADABLE, e.code]))
        faces = self.pipeline.faces(img, self.pipeline.detect(img))
        faces.sort(key=lambda f: -f.area)
        self.processed += 1
        upd_extra["faces"] = len(faces)
        upd_extra["image_size"] = [int(img.shape[1]), int(img.shape[0])]
        tracked: Face | None = None
        score: float | None = None
        if faces:
            self._ever["face"] = True
        if not faces:
            reasons.append(engine.NO_FACE)
            self._lose_track_maybe(reasons)
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
                    held = {id(o[0].crop) for o in (self._neutral, self._smile_obs) if o is not None}
                    self._unchecked = {k: v for k, v in self._unchecked.items() if k in held}
                    self._unchecked[id(tracked.identity_crop)] = tracked.identity_crop
                else:
                    self.pipeline.embed([tracked])
                    score = self._score(tracked)
                    self._track_score = score
                if score < self.thr:    # someone else took the tracked place: never keep them
                    reasons.append(engine.IDENTITY_MISMATCH)
                    self._drop_track(reasons, TRACK_LOST)
                    self._mismatch += 1
                    tracked = None
            else:
                self._lose_track_maybe(reasons)
        if faces and tracked is None and self._box is None:
            cand = faces[: self.settings.max_faces]
            self.pipeline.embed(cand)
            scores = [self._score(f) for f in cand]
            j = int(np.argmax(scores))
            if scores[j] >= self.thr:
                tracked, score = cand[j], scores[j]
                self._track_score = score
                self._box = tracked.bbox.copy()
                self._mismatch = 0
                self._event(t, "TRACK_START", score=round(scores[j], 4))
            else:
                score = scores[j]
                if engine.IDENTITY_MISMATCH not in reasons:
                    reasons.append(engine.IDENTITY_MISMATCH)
                    self._mismatch += 1
        if faces and len(faces) > 1 and tracked is not None:
            reasons.append(SECOND_FACE)
            self._second_face_frames += 1
            if self._second_face_frames == 1:
                self._event(t, SECOND_FACE, faces=len(faces))
        if score is not None:
            self._best_score = score if self._best_score is None else max(self._best_score, score)
        raw: dict[str, float] = {}
        if tracked is not None:
            self._ever["match"] = True
            self._lost = 0
            self._box = tracked.bbox.copy()
            upd_extra["box"] = [round(float(v), 1) for v in tracked.bbox]
            self.pipeline.au([tracked])
            raw = dict(tracked.au_probs or {})
            if tracked.quality.reasons:
                reasons.append(engine.LOW_QUALITY)
                reasons.extend(r for r in tracked.quality.reasons if r not in reasons)
            else:
                self._ever["quality_ok"] = True
                self._cur_src = (img, tracked)       # the frame behind the observation (PAD at the decision)
                self._advance(tracked, score, raw, t, reasons)
            if self.state == WAITING_FOR_FACE and not self.final:
                self.state = HOLD_NEUTRAL
        self._pipe_s += time.perf_counter() - t_start
        if not self.final and self._mismatch >= self.settings.mismatch_frames:
            out = engine.Outcome(False, [engine.IDENTITY_MISMATCH], identity={
                "score": None if self._best_score is None else round(self._best_score, 5),
                "threshold": self.thr, "far": self.policy.identity_far, "source": self.policy.identity_source,
                "all_frames_match": False,
                **({"population": self.policy.identity_population} if self.policy.identity_population else {})},
                au={}, liveness={"mode": "stream", "checked": False}, frames=[])
            self._finalize(self._decision_from(out, t), count_failure=True, t=t)
        return self._emit(self._update(t, idx, reasons=reasons, score=score, raw=raw, **upd_extra))

    def _score(self, f: Face) -> float:
        return float(np.max(self._ctx.templates @ f.embedding))

    @property
    def _skip_embed(self) -> bool:
        return getattr(self.s2p, "identity_frames", "decision") == "decision"

    def _check_identity(self, frames: list) -> None:
        """Embed the observations the decision uses whose identity was carried by tracking (one batched
        forward) and put their own score in place of the carried one."""
        todo = [fo for fo in frames if fo.crop is not None and id(fo.crop) in self._unchecked]
        if not todo:
            return
        embs = self.pipeline.embedder.embed([fo.crop for fo in todo], flip=self.pipeline.settings.flip_tta)
        for fo, e in zip(todo, embs):
            fo.identity_score = float(np.max(self._ctx.templates @ e))
            self._unchecked.pop(id(fo.crop), None)

    def _lose_track_maybe(self, reasons: list[str]) -> None:
        if self._box is None:
            return
        self._lost += 1
        if self._lost >= self.settings.lost_frames:
            self._drop_track(reasons, TRACK_LOST)

    def _drop_track(self, reasons: list[str], why: str) -> None:
        self._box = None
        self._lost = 0
        self._ema = None
        self._neutral = None
        self._prev_sig = None
        self._neutral_streak = self._smile_streak = 0
        if not self.final:
            self.state = WAITING_FOR_FACE
        reasons.append(why)

    def _advance(self, f: Face, score: float, raw: dict[str, float], t: float, reasons: list[str]) -> None:
        a = self.settings.smoothing
        if self._ema is None:
            self._ema = dict(raw)
        else:
            keys = set(raw) | set(self._ema)
            self._ema = {k: a * raw.get(k, 0.0) + (1.0 - a) * self._ema.get(k, 0.0) for k in keys}
        present, absent = engine.classify_pattern(self._ema, self.rule, self.policy, self.need, self.forbid)
        # a neutral frame must be neutral now, not only on average (the EMA lags a fast onset)
        absent = absent and engine.classify_pattern(raw, self.rule, self.policy, self.need, self.forbid)[1]
        if present and self._neutral is not None and self.policy.burst_min_delta > 0:
            # the smile must be a change from this session's neutral frame (the same rule as a burst)
            ref = self._neutral[0].au_probs or {}
            present = all(self._ema.get(a, 0.0) - ref.get(a, 0.0) >= self.policy.burst_min_delta
                          for a in self.rule.required)
        obs = engine.FrameObs(identity_score=score, au_probs=dict(self._ema),
                              crop=f.identity_crop, landmarks=f.landmarks,
                              quality_reasons=[])
        # one capture, not two photos: the largest jump between consecutive frames since the neutral frame
        sig = (continuity.signature(obs.crop, obs.landmarks)
               if obs.crop is not None and obs.landmarks is not None else None)
        if sig is not None and self._prev_sig is not None and self._neutral is not None:
            self._max_cut = max(self._max_cut, continuity.excess(continuity.pair_change(self._prev_sig, sig),
                                                                 self.policy.continuity))
        self._prev_sig = sig
        if present:
            self._ever["present"] = True
        if self.state in (WAITING_FOR_FACE, HOLD_NEUTRAL):
            self.state = HOLD_NEUTRAL
            if self._prompt_at is not None and present:
                # challenge: a smile before "Now smile" (a pre-recorded clip does not know when it comes)
                self._early += 1
                self._event(t, "EARLY_SMILE")
                self._prompt_at, self._neutral_streak, self._neutral = None, 0, None
                if self._early >= self.settings.max_early_smiles:
                    self._decline_now(t, [CHALLENGE_FAILED, "LIVENESS_FAILED"])
                return
            if absent:
                self._neutral_streak += 1
                self._neutral = (obs, t)
                self._neutral_src = self._cur_src
                self._max_cut = 0.0
                if self._neutral_streak >= self.settings.neutral_frames:
                    if self.settings.challenge and self._prompt_at is None:
                        import secrets

                        lo, hi = (float(x) for x in self.settings.prompt_delay_s)
                        self._prompt_at = t + lo + (hi - lo) * secrets.SystemRandom().random()
                    if self._prompt_at is None or t >= self._prompt_at:
                        self._ever["neutral"] = True
                        self.state = SMILE_NOW
                        self._smile_streak = 0
                        self._event(t, SMILE_NOW)
            else:
                self._neutral_streak = 0
            return
        if self.state == RELAX:
            # challenge: after the smile, back to neutral within the window; then the same decision
            if absent:
                self._neutral_streak += 1
                if self._neutral_streak >= self.settings.neutral_frames:
                    self._decide(self._smile_obs[0], self._smile_obs[1], t, relaxed=obs)
            elif t - self._smile_obs[1] > self.settings.window_s:
                self._decline_now(t, [CHALLENGE_FAILED, "LIVENESS_FAILED"])
            return
        # SMILE_NOW
        assert self._neutral is not None
        if absent:
            self._neutral = (obs, t)      # still neutral: the window starts again from here
            self._neutral_src = self._cur_src
            self._max_cut = 0.0
            self._smile_streak = 0
            return
        since = t - self._neutral[1]
        if since > self.settings.window_s:
            reasons.append(WINDOW_EXPIRED)
            self._event(t, WINDOW_EXPIRED)
            self.state = HOLD_NEUTRAL
            self._neutral, self._neutral_streak, self._smile_streak = None, 0, 0
            return
        if not present:
            self._smile_streak = 0
            return
        self._smile_streak += 1
        if self._smile_streak < self.settings.smile_frames:
            return
        if self.settings.challenge:
            self.state = RELAX
            self._smile_obs = (obs, t)
            self._smile_src = self._cur_src
            self._neutral_streak = 0
            self._event(t, RELAX)
            return
        self._decide(obs, t, t)

    def _decline_now(self, t: float, reasons: list[str]) -> None:
        out = engine.Outcome(False, reasons, identity={
            "score": None if self._best_score is None else round(self._best_score, 5), "threshold": self.thr,
            "far": self.policy.identity_far, "source": self.policy.identity_source, "all_frames_match": True},
            au={"rule": str(self.rule)}, liveness={"mode": "stream", "checked": True, "passed": False,
                                                   "early_smiles": self._early}, frames=[])
        self._finalize(self._decision_from(out, t), count_failure=True, t=t)

    def _decide(self, obs, t_smile: float, t: float, relaxed=None) -> None:
        # the decision: the same engine as verify(), on the chosen neutral and smile observations
        # (challenge: and the relaxed frame after the smile, which must be continuous with them too)
        neutral_obs, t_neutral = self._neutral
        frames = [neutral_obs, obs] + ([relaxed] if relaxed is not None else [])
        # passive PAD on the frames the decision uses (not every frame: it costs ~10 ms a face)
        srcs = [self._neutral_src, self._smile_src if relaxed is not None else self._cur_src] + (
            [self._cur_src] if relaxed is not None else [])
        self._check_identity(frames)    # identity again on the frames the decision uses
        for fo, src in zip(frames, srcs):
            if src is not None:
                fo.pad_score = self.s2p.pad_score(src[0], src[1])
        out = engine.decide(frames, self.rule, self.policy, liveness="burst", baseline=self._ctx.baseline)
        out.liveness["stream"] = {"neutral_t": round(t_neutral, 3), "smile_t": round(t_smile, 3),
                                  "max_cut_excess": round(self._max_cut, 3),
                                  **({"challenge": {"prompt_t": round(self._prompt_at, 3),
                                                    "early_smiles": self._early}} if self._prompt_at else {})}
        if self._max_cut > 1.0 and self.policy.continuity.enabled and \
                continuity.CAPTURE_DISCONTINUITY not in out.reasons:
            out.reasons.append(continuity.CAPTURE_DISCONTINUITY)
            out.approved = False
        self._finalize(self._decision_from(out, t), count_failure=True, t=t)

    def _timeout(self, t: float) -> None:
        reasons = [TIMEOUT]
        ev = self._ever
        if not ev["face"]:
            reasons.append(engine.NO_FACE)
        elif not ev["match"]:
            reasons.append(engine.IDENTITY_MISMATCH)
        elif not ev["quality_ok"]:
            reasons.append(engine.LOW_QUALITY)
        elif not ev["neutral"]:
            reasons += ["LIVENESS_FAILED", "NO_ONSET"]
        else:
            reasons.append(engine.AU_PATTERN_ABSENT)
        out = engine.Outcome(False, reasons, identity={
            "score": None if self._best_score is None else round(self._best_score, 5), "threshold": self.thr,
            "far": self.policy.identity_far, "source": self.policy.identity_source, "all_frames_match": False},
            au={"rule": str(self.rule), "thresholds": {a: round(v, 4) for a, v in self.need.items()}},
            liveness={"mode": "stream", "checked": True, "passed": False}, frames=[])
        self._finalize(self._decision_from(out, t), count_failure=True, t=t)

    def _decision_from(self, out: engine.Outcome, t: float) -> Decision:
        live = dict(out.liveness)
        st = dict(live.get("stream") or {})
        st.update({"t": round(t, 3), "processed": self.processed, "skipped": self.skipped,
                   "second_face_frames": self._second_face_frames,
                   "smoothing": self.settings.smoothing})
        live["stream"] = st
        return Decision(out.approved, out.reasons, identity=out.identity, au=out.au, liveness=live,
                        frames=out.frames, timings_ms={"pipeline": round(self._pipe_s * 1000.0, 2)},
                        **self._ctx.base)

    def _finalize(self, dec: Decision, *, count_failure: bool, t: float) -> None:
        dec = self.s2p._finish(self._ctx, dec, count_failure, self.processed,
                               extra_audit={"source": "stream", "stream_t": round(t, 3), "skipped": self.skipped})
        with self._cv:          # offer() checks final under this lock: nothing is counted after the end
            self.decision = dec
            if isinstance(dec.liveness.get("stream"), dict):
                dec.liveness["stream"]["skipped"] = self.skipped
        self.state = APPROVED if dec.approved else DECLINED
        self._event(t, self.state, reasons=list(dec.reasons))
        log.info("stream session %s for %s: %s %s", self._ctx.rid, self.user_id, self.state, dec.reasons)
        with self._cv:
            self._cv.notify_all()

    def _event(self, t: float, kind: str, **kw) -> None:
        self._events.append({"t": round(t, 3), "event": kind, **kw})

    def _update(self, t: float, idx: int, *, reasons=None, score=None, raw=None, **extra) -> StreamUpdate:
        aus = self.rule.aus
        upd = StreamUpdate(state=self.state, prompt=PROMPTS[self.state], t=round(t, 3), frame=idx,
                           reasons=list(reasons or []) + (list(self.decision.reasons) if self.decision else []),
                           au={a: round(float((self._ema or {}).get(a, 0.0)), 4) for a in aus} if self._ema else {},
                           au_raw={a: round(float(raw.get(a, 0.0)), 4) for a in aus} if raw else {},
                           thresholds={a: round(v, 4) for a, v in self.need.items()},
                           absent_thresholds={a: round(v, 4) for a, v in self.absent.items()},
                           identity_score=None if score is None else round(float(score), 4),
                           identity_threshold=round(self.thr, 4), processed=self.processed,
                           skipped=self.skipped, final=self.final, decision=self.decision, **extra)
        return upd

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


# ---------------------------------------------------------------------------------------- replay
def render_timeline(record: dict, out_png, title: str | None = None):
    """Timeline PNG of a recorded session: smoothed AU probabilities of the rule's AUs and the
    identity score over stream time, with their thresholds, state changes and the decision marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if record.get("format") != RECORD_FORMAT:
        raise RequestError(f"not a stream recording (format {RECORD_FORMAT})", code="REQUEST_INVALID")
    frames = record.get("frames") or []
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ts = [f["t"] for f in frames]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for i, (au, thr) in enumerate(sorted((record.get("thresholds") or {}).items())):
        c = colours[i % len(colours)]
        xs = [f["t"] for f in frames if f.get("au")]
        ys = [f["au"].get(au, np.nan) for f in frames if f.get("au")]
        ax1.plot(xs, ys, "-o", ms=2.5, color=c, label=f"{au} (smoothed)")
        xr = [f["t"] for f in frames if f.get("au_raw")]
        yr = [f["au_raw"].get(au, np.nan) for f in frames if f.get("au_raw")]
        ax1.plot(xr, yr, ":", lw=0.8, color=c, alpha=0.6, label=f"{au} (raw)")
        ax1.axhline(thr, color=c, ls="--", lw=0.8)
        ab = (record.get("absent_thresholds") or {}).get(au)
        if ab is not None:
            ax1.axhline(ab, color=c, ls="-.", lw=0.6, alpha=0.6)
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_ylabel("AU probability")
    ax1.legend(loc="center left", fontsize=7, ncol=2, framealpha=0.8)
    xi = [f["t"] for f in frames if f.get("identity_score") is not None]
    yi = [f["identity_score"] for f in frames if f.get("identity_score") is not None]
    ax2.plot(xi, yi, "-o", ms=2.5, color="tab:purple", label="identity score")
    ax2.axhline(record.get("identity_threshold", 0.0), color="tab:purple", ls="--", lw=0.8, label="threshold")
    ax2.set_ylabel("identity (cosine)")
    ax2.set_xlabel("stream time (s)")
    ax2.legend(loc="lower left", fontsize=7)
    prev = None
    for f in frames:
        if f["state"] != prev and prev is not None:
            for ax in (ax1, ax2):
                ax.axvline(f["t"], color="grey", lw=0.6, alpha=0.7)
            ax1.text(f["t"], 1.0, f["state"], fontsize=6, rotation=90, va="top", ha="right", color="grey")
        prev = f["state"]
    dec = record.get("decision")
    if dec:
        ok = dec.get("approved")
        label = "APPROVED" if ok else "DECLINED " + ",".join(dec.get("reasons") or [])
        tend = ts[-1] if ts else 0.0
        for ax in (ax1, ax2):
            ax.axvline(tend, color="green" if ok else "red", lw=1.5)
        ax2.text(tend, ax2.get_ylim()[1], label + " ", fontsize=8, color="green" if ok else "red", ha="right",
                 va="top", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    fig.suptitle(title or f"stream session: {record.get('user_id')} ({record.get('rule')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
