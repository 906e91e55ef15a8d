"""The stream's state machine: states, transitions, timers and the challenge, on plain per-frame observations.

No models, no threads, no images beyond the aligned crop the continuity check reads: a
:class:`StreamSession` (``smile2pay.stream.session``) finds and tracks the claimed user's face, measures it
and feeds one :class:`Observation` per processed frame to :meth:`StreamMachine.step`; unit tests feed
synthetic ones (``tests/unit/test_stream_machine.py``).

States: ``WAITING_FOR_FACE`` -> ``HOLD_NEUTRAL`` -> ``SMILE_NOW`` (-> ``RELAX`` with the challenge) ->
``APPROVED`` | ``DECLINED``.

* Per-AU probabilities are smoothed over time with an exponential moving average
  (``StreamSettings.smoothing``: the weight of the newest frame; 1.0 = no smoothing).
* The rule's pattern must be absent (a neutral face, now and on average) for ``neutral_frames`` frames
  (``HOLD_NEUTRAL``), then present for ``smile_frames`` + ``settle_frames`` consecutive frames within
  ``window_s`` of the last neutral frame (``SMILE_NOW``; later: ``WINDOW_EXPIRED``, back to ``HOLD_NEUTRAL``): the
  smile is judged on its last frame, near the apex, not on its onset. The smile must also rise by
  ``policy.burst_min_delta`` over the session's neutral frame.
* Challenge (``StreamSettings.challenge``): "Now smile" comes a random delay (``prompt_delay_s``) after the
  neutral hold; a smile before it restarts the hold (event ``EARLY_SMILE``) and the ``max_early_smiles``-th
  declines ``CHALLENGE_FAILED``; after the smile the face must relax to neutral (``RELAX``) within
  ``window_s``.
* A dropped track (``Observation.dropped``: the face left, or someone else took its place) resets the
  smoothing and the neutral hold (``TRACK_LOST``, back to ``WAITING_FOR_FACE``); ``mismatch_frames`` frames
  showing only other people decline ``IDENTITY_MISMATCH``; ``timeout_s`` of stream time without a decision
  declines ``TIMEOUT`` (:meth:`StreamMachine.timeout`).

:meth:`StreamMachine.step` returns the frame's reasons and, when the machine has reached a verdict, a
:class:`Decline` (an engine outcome) or a :class:`Decide` (the neutral and smile observations the decision
uses). The session re-checks identity and scores PAD on a Decide's frames, then :meth:`StreamMachine.conclude`
runs :func:`smile2pay.decision.engine.decide` on them (the same rules as ``verify``'s burst) plus the
capture-continuity check over the whole hold: every processed frame against the previous one (a cut), and
every frame after the neutral hold against the first frame of the neutral streak that led to it (the anchor:
two photos cross-faded over a few frames have no cut, but the smile is far from where the hold began; the settle
frames make the decision wait until such a fade is over). Once the
payment attempt is finished the session calls :meth:`StreamMachine.settle` (``APPROVED`` / ``DECLINED``).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ..decision import continuity, engine
from ..errors import RequestError
from ..vision.track import NEAR_FACE_RATIO
from ..reasons import (APPROVED, AU_PATTERN_ABSENT, CAPTURE_DISCONTINUITY, CHALLENGE_FAILED, DECLINED, EARLY_SMILE,
                       FINAL_STATES, FRAME_UNREADABLE, HOLD_NEUTRAL, IDENTITY_MISMATCH, LIVENESS_FAILED,
                       LOW_QUALITY, MULTIPLE_FACES, NO_FACE, NO_ONSET, RELAX, SECOND_FACE, SMILE_NOW, TIMEOUT,
                       TRACK_LOST, TRACK_START, WAITING_FOR_FACE, WINDOW_EXPIRED)

PROMPTS = {WAITING_FOR_FACE: "Look at the camera", HOLD_NEUTRAL: "Hold still, neutral face",
           SMILE_NOW: "Now smile", RELAX: "Now relax", APPROVED: "Payment approved", DECLINED: "Payment declined"}

#: ``Observation.dropped`` values
LOST, SWAPPED = "lost", "swapped"


@dataclass(frozen=True)
class StreamSettings:
    smoothing: float = 0.6          # EMA weight of the newest frame's AU probabilities (1 = none)
    neutral_frames: int = 3         # processed frames with the pattern absent before SMILE_NOW
    smile_frames: int = 2           # consecutive processed frames with the pattern present
    #: then this many more processed frames with it still present before the decision (the smile judged near its
    #: apex, not on its first frames): two photos cross-faded over a few frames fire the smile on a half blend,
    #: whose change from the anchor is only part of the full one (benchmarks/two_photo_attack.py)
    settle_frames: int = 3
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
    #: another face at least this fraction of the tracked face's height (someone beside the shopper, not a queue
    #: behind: a face half the size is about twice as far from the camera) makes the frame unusable for the
    #: decision (``MULTIPLE_FACES`` in its reasons; a burst declines any second face it sees). 0: every other face is
    #: tolerated (reported ``SECOND_FACE`` only), as before 2026-12-06 (7th session)
    near_face_ratio: float = NEAR_FACE_RATIO

    def validate(self) -> None:
        """RequestError ``REQUEST_INVALID`` for any setting out of range or not a number (a string, None, a list
        from a Python caller: the HTTP routes check types before this)."""
        try:
            self._validate()
        except (TypeError, ValueError) as e:
            raise RequestError(f"stream settings must be numbers: {e}", code="REQUEST_INVALID") from None

    def _validate(self) -> None:
        if not 0.0 < self.smoothing <= 1.0:
            raise RequestError(f"smoothing must be in (0, 1], got {self.smoothing!r}", code="REQUEST_INVALID")
        for k in ("neutral_frames", "smile_frames", "lost_frames", "mismatch_frames", "max_faces"):
            if int(getattr(self, k)) < 1:
                raise RequestError(f"{k} must be >= 1", code="REQUEST_INVALID")
        for k in ("window_s", "timeout_s"):
            if not 0 < float(getattr(self, k)) < float("inf"):   # inf: a camera session that never ends
                raise RequestError(f"{k} must be a finite number > 0, got {getattr(self, k)!r}",
                                   code="REQUEST_INVALID")
        if not 0.0 < self.iou_min < 1.0:
            raise RequestError("iou_min must be in (0, 1)", code="REQUEST_INVALID")
        lo_hi = tuple(self.prompt_delay_s) if isinstance(self.prompt_delay_s, (tuple, list)) else ()
        if len(lo_hi) != 2 or not 0.0 <= float(lo_hi[0]) <= float(lo_hi[1]) <= 30.0:
            raise RequestError("prompt_delay_s must be [low, high] seconds with 0 <= low <= high <= 30",
                               code="REQUEST_INVALID")
        if int(self.settle_frames) < 0:
            raise RequestError("settle_frames must be >= 0", code="REQUEST_INVALID")
        if int(self.max_early_smiles) < 1:
            raise RequestError("max_early_smiles must be >= 1", code="REQUEST_INVALID")
        r = self.near_face_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
            raise RequestError(f"near_face_ratio must be a number in [0, 1] (0: off), got {r!r}",
                               code="REQUEST_INVALID")


@dataclass
class Observation:
    """What the session found in one processed frame (plain data)."""

    t: float                                   # stream time (s) since the first frame
    faces: int = 0                             # faces detected
    #: other faces at least ``StreamSettings.near_face_ratio`` of the tracked face's height (the session counts)
    near_faces: int = 0
    error: str | None = None                   # the frame could not be decoded (its error code)
    #: the claimed user's face in this frame (tracked or just found), raw AU probabilities; None: not there
    face: engine.FrameObs | None = None
    identity_score: float | None = None        # the user's face's score, else the best other face's
    dropped: str | None = None                 # the track was dropped here: LOST (gone) | SWAPPED (someone else)
    mismatch: bool = False                     # the user was sought among the faces and not found
    started: bool = False                      # the user was found: a track starts here
    source: Any = None                         # the session's handle on this frame (PAD at the decision)


@dataclass
class Decide:
    """Verdict: decide on these observations (neutral, smile and, with the challenge, the relaxed frame)."""

    frames: list[engine.FrameObs]
    sources: list[Any]
    t: float
    t_neutral: float
    t_smile: float
    max_cut: float                  # the largest continuity excess: consecutive frames, or a frame and the anchor


@dataclass
class Decline:
    """Verdict: decline now with this outcome (timeout, identity mismatch, challenge failed)."""

    outcome: engine.Outcome
    t: float


@dataclass
class Step:
    reasons: list[str] = field(default_factory=list)
    verdict: Decide | Decline | None = None


class StreamMachine:
    """The states of one stream payment. ``policy`` is the payment policy (its ``identity_threshold`` is the
    one that approves payments); ``baseline`` the user's neutral AU probabilities; ``random`` a source of
    uniform [0, 1) numbers for the challenge's prompt delay (default: ``secrets.SystemRandom``)."""

    def __init__(self, rule, policy, settings: StreamSettings | None = None, baseline: dict | None = None, *,
                 random: Callable[[], float] | None = None) -> None:
        self.settings = settings or StreamSettings()
        self.settings.validate()
        sc = getattr(policy, "stream_continuity", None)
        if sc is not None and policy.continuity.enabled:     # streams have their own continuity limits
            policy = replace(policy, continuity=sc)
        self.rule, self.policy, self.baseline = rule, policy, baseline
        self.need, self.forbid = engine.pattern_thresholds(rule, policy, baseline)
        self.absent = {a: policy.absent_threshold(a) for a in rule.required}
        self.threshold = float(policy.identity_threshold)
        self.state = WAITING_FOR_FACE
        self.t0: float | None = None               # timestamp of the first frame
        self.ema: dict[str, float] | None = None   # smoothed AU probabilities of the tracked face
        self.events: list[dict] = []
        self.mismatch = 0                          # frames showing only other people since the last track
        self.second_face_frames = 0
        self.near_face_frames = 0                  # frames not judged: another face beside the user's
        self.best_score: float | None = None
        self.early_smiles = 0                      # challenge: smiles before the prompt
        self.prompt_at: float | None = None        # challenge: when "Now smile" is shown (stream time)
        self.ever = {"face": False, "match": False, "neutral": False, "present": False, "quality_ok": False,
                     "low_quality": False}
        self._random = random or secrets.SystemRandom().random
        self._neutral_streak = 0
        self._smile_streak = 0
        self._neutral: tuple[engine.FrameObs, float, Any] | None = None   # (obs, t, source)
        self._smile: tuple[engine.FrameObs, float, Any] | None = None     # challenge: kept while relaxing
        self._prev_sig = None           # capture signature of the previous (after _continuity: this) observation
        self._max_cut = 0.0             # largest consecutive-frame discontinuity since the neutral frame
        # the first frame of the neutral streak that led to the smile: every frame after the hold (the decision's
        # smile and relaxed frames among them) is compared with it too, so two photos cross-faded over a few
        # frames (no single cut) are still two photos; reset only with the streak itself
        self._anchor_sig = None

    # -- clock ------------------------------------------------------------------------------------
    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def clock(self, timestamp: float) -> float:
        """Stream time of ``timestamp``; the first call starts the clock."""
        if self.t0 is None:
            self.t0 = float(timestamp)
        return float(timestamp) - self.t0

    def expired(self, t: float) -> bool:
        return t > self.settings.timeout_s

    def held(self) -> list[engine.FrameObs]:
        """The observations a later decision may still use (the neutral and the challenge's smile frame)."""
        return [o[0] for o in (self._neutral, self._smile) if o is not None]

    # -- one frame --------------------------------------------------------------------------------
    def step(self, obs: Observation) -> Step:
        """Advance on one processed frame: the frame's reasons and a verdict when one is reached."""
        if self.final:
            return Step()
        if obs.error is not None:
            return Step([FRAME_UNREADABLE, obs.error])
        t = obs.t
        reasons: list[str] = []
        if obs.faces:
            self.ever["face"] = True
        else:
            reasons.append(NO_FACE)
        if obs.dropped == SWAPPED:              # someone else took the tracked place: never keep them
            reasons.append(IDENTITY_MISMATCH)
            self._drop_track(reasons)
            self.mismatch += 1
        elif obs.dropped == LOST:
            self._drop_track(reasons)
        if obs.started:
            self.mismatch = 0
            self._event(t, TRACK_START, score=round(float(obs.identity_score), 4))
        elif obs.mismatch and IDENTITY_MISMATCH not in reasons:
            reasons.append(IDENTITY_MISMATCH)
            self.mismatch += 1
        if obs.face is not None and obs.faces > 1:
            reasons.append(SECOND_FACE)
            self.second_face_frames += 1
            if self.second_face_frames == 1:
                self._event(t, SECOND_FACE, faces=obs.faces)
        if obs.identity_score is not None:
            s = float(obs.identity_score)
            self.best_score = s if self.best_score is None else max(self.best_score, s)
        verdict: Decide | Decline | None = None
        if obs.face is not None:
            self.ever["match"] = True
            if obs.near_faces and self.settings.near_face_ratio > 0:
                # someone beside the user (or a photo of a group): one person pays, so the frame is not judged;
                # the streaks and the smoothing wait for a frame with the user alone
                reasons.append(MULTIPLE_FACES)
                self.near_face_frames += 1
                if self.near_face_frames == 1:
                    self._event(t, MULTIPLE_FACES, faces=obs.faces, near=obs.near_faces)
            elif obs.face.quality_reasons:
                self.ever["low_quality"] = True
                reasons.append(LOW_QUALITY)
                reasons.extend(r for r in obs.face.quality_reasons if r not in reasons)
            else:
                self.ever["quality_ok"] = True
                verdict = self._advance(obs, reasons)
            if self.state == WAITING_FOR_FACE:
                self.state = HOLD_NEUTRAL
        if verdict is None and self.mismatch >= self.settings.mismatch_frames:
            verdict = Decline(self._outcome([IDENTITY_MISMATCH], all_match=False, au={},
                                            liveness={"mode": "stream", "checked": False}, population=True), t)
        return Step(reasons, verdict)

    def _drop_track(self, reasons: list[str]) -> None:
        self.ema = None
        self._clear_neutral()
        self._prev_sig = None
        self._neutral_streak = self._smile_streak = 0
        self.state = WAITING_FOR_FACE
        reasons.append(TRACK_LOST)

    def _classify(self, raw: dict[str, float]) -> tuple[bool, bool]:
        """(present, absent) of the smoothed probabilities after ``raw``; absent needs the frame itself
        neutral too (the EMA lags a fast onset); present needs the rise over the session's neutral frame."""
        a = self.settings.smoothing
        if self.ema is None:
            self.ema = dict(raw)
        else:
            keys = set(raw) | set(self.ema)
            self.ema = {k: a * raw.get(k, 0.0) + (1.0 - a) * self.ema.get(k, 0.0) for k in keys}
        present, absent = engine.classify_pattern(self.ema, self.rule, self.policy, self.need, self.forbid)
        absent = absent and engine.classify_pattern(raw, self.rule, self.policy, self.need, self.forbid)[1]
        if present and self._neutral is not None and self.policy.burst_min_delta > 0:
            # the smile must be a change from this session's neutral frame (the same rule as a burst)
            ref = self._neutral[0].au_probs or {}
            present = all(self.ema.get(a, 0.0) >= engine.raised(ref.get(a, 0.0), self.policy.burst_min_delta,
                                                                 self.policy.rise_scale) - 1e-12
                          for a in self.rule.required)
        return present, absent

    def _continuity(self, fo: engine.FrameObs) -> None:
        # one capture, not two photos: the largest jump between consecutive frames since the neutral frame
        sig = (continuity.signature(fo.crop, fo.landmarks, self.policy.continuity.window)
               if fo.crop is not None and fo.landmarks is not None else None)
        if sig is not None and self._prev_sig is not None and self._neutral is not None:
            self._max_cut = max(self._max_cut, continuity.excess(continuity.pair_change(self._prev_sig, sig),
                                                                 self.policy.continuity))
        if sig is not None and self._anchor_sig is not None and self.state in (SMILE_NOW, RELAX):
            # every frame after the neutral hold against the hold's first frame, not only the decision's
            self._max_cut = max(self._max_cut, continuity.excess(continuity.pair_change(self._anchor_sig, sig),
                                                                 self.policy.continuity))
        self._prev_sig = sig

    def _advance(self, obs: Observation, reasons: list[str]) -> Decide | Decline | None:
        t = obs.t
        present, absent = self._classify(dict(obs.face.au_probs or {}))
        fo = replace(obs.face, au_probs=dict(self.ema), quality_reasons=[])
        self._continuity(fo)
        if present:
            self.ever["present"] = True
        if self.state in (WAITING_FOR_FACE, HOLD_NEUTRAL):
            return self._hold_neutral(fo, obs, present, absent)
        if self.state == RELAX:
            # challenge: after the smile, back to neutral within the window; then the same decision
            if absent:
                self._neutral_streak += 1
                if self._neutral_streak >= self.settings.neutral_frames:
                    return self._decide(self._smile, (fo, t, obs.source), t)
            elif t - self._smile[1] > self.settings.window_s:
                return self._challenge_failed(t)
            return None
        # SMILE_NOW
        if absent:
            self._set_neutral(fo, obs)    # still neutral: the window starts again from here
            self._smile_streak = 0
            return None
        if t - self._neutral[1] > self.settings.window_s:
            reasons.append(WINDOW_EXPIRED)
            self._event(t, WINDOW_EXPIRED)
            self.state = HOLD_NEUTRAL
            self._clear_neutral()
            self._neutral_streak = self._smile_streak = 0
            return None
        if not present:
            self._smile_streak = 0
            return None
        self._smile_streak += 1
        if self._smile_streak < self.settings.smile_frames + self.settings.settle_frames:
            return None
        if self.settings.challenge:
            self.state = RELAX
            self._smile = (fo, t, obs.source)
            self._neutral_streak = 0
            self._event(t, RELAX)
            return None
        return self._decide((fo, t, obs.source), None, t)

    def _set_neutral(self, fo: engine.FrameObs, obs: Observation) -> None:
        if self._anchor_sig is None:
            self._anchor_sig = self._prev_sig   # a new hold begins here (_continuity just computed this frame's)
        self._neutral = (fo, obs.t, obs.source)
        self._max_cut = 0.0

    def _clear_neutral(self) -> None:
        """The hold is over (track lost, window expired, early smile): the next neutral frame anchors anew."""
        self._neutral = None
        self._anchor_sig = None

    def _hold_neutral(self, fo, obs: Observation, present: bool, absent: bool) -> Decline | None:
        t = obs.t
        self.state = HOLD_NEUTRAL
        if self.prompt_at is not None and present:
            # challenge: a smile before "Now smile" (a pre-recorded clip does not know when it comes)
            self.early_smiles += 1
            self._event(t, EARLY_SMILE)
            self.prompt_at, self._neutral_streak = None, 0
            self._clear_neutral()
            if self.early_smiles >= self.settings.max_early_smiles:
                return self._challenge_failed(t)
            return None
        if not absent:
            self._neutral_streak = 0
            self._anchor_sig = None             # the next neutral streak anchors anew
            return None
        self._neutral_streak += 1
        self._set_neutral(fo, obs)
        if self._neutral_streak >= self.settings.neutral_frames:
            if self.settings.challenge and self.prompt_at is None:
                lo, hi = (float(x) for x in self.settings.prompt_delay_s)
                self.prompt_at = t + lo + (hi - lo) * self._random()
            if self.prompt_at is None or t >= self.prompt_at:
                self.ever["neutral"] = True
                self.state = SMILE_NOW
                self._smile_streak = 0
                self._event(t, SMILE_NOW)
        return None

    def _decide(self, smile: tuple, relaxed: tuple | None, t: float) -> Decide:
        neutral_obs, t_neutral, neutral_src = self._neutral
        frames = [neutral_obs, smile[0]] + ([relaxed[0]] if relaxed is not None else [])
        sources = [neutral_src, smile[2]] + ([relaxed[2]] if relaxed is not None else [])
        # _max_cut already holds the smile (and relaxed) frame against the anchor: _continuity compares every frame
        # after the neutral hold with it
        return Decide(frames, sources, t=t, t_neutral=t_neutral, t_smile=smile[1], max_cut=self._max_cut)

    # -- verdicts -------------------------------------------------------------------------------------
    def conclude(self, d: Decide) -> engine.Outcome:
        """The decision on a :class:`Decide`'s frames (identity re-checked, PAD scored by the session): the
        same engine as ``verify``'s burst, then the capture-continuity check over the whole hold."""
        out = engine.decide(d.frames, self.rule, self.policy, liveness="burst", baseline=self.baseline)
        out.liveness["stream"] = {"neutral_t": round(d.t_neutral, 3), "smile_t": round(d.t_smile, 3),
                                  "max_cut_excess": round(d.max_cut, 3),
                                  **({"challenge": {"prompt_t": round(self.prompt_at, 3),
                                                    "early_smiles": self.early_smiles}} if self.prompt_at else {})}
        if d.max_cut > 1.0 and self.policy.continuity.enabled and CAPTURE_DISCONTINUITY not in out.reasons:
            out.reasons.append(CAPTURE_DISCONTINUITY)
            out.approved = False
        return out

    def timeout(self, t: float) -> Decline:
        """Declined: no decision within ``timeout_s`` (or the stream ended); the reasons say how far it got."""
        reasons = [TIMEOUT]
        ev = self.ever
        if not ev["face"]:
            reasons.append(NO_FACE)
        elif not ev["match"]:
            reasons.append(IDENTITY_MISMATCH)
        elif not ev["quality_ok"]:
            # never judged: the face failed the quality gates, or was never alone (near_face_frames, below)
            if ev["low_quality"]:
                reasons.append(LOW_QUALITY)
        elif not ev["neutral"]:
            reasons += [LIVENESS_FAILED, NO_ONSET]
        else:
            reasons.append(AU_PATTERN_ABSENT)
        if self.near_face_frames:        # frames were skipped because someone stood beside the user
            reasons.append(MULTIPLE_FACES)
        return Decline(self._outcome(reasons, all_match=False,
                                     au={"rule": str(self.rule),
                                         "thresholds": {a: round(v, 4) for a, v in self.need.items()}},
                                     liveness={"mode": "stream", "checked": True, "passed": False}), t)

    def _challenge_failed(self, t: float) -> Decline:
        return Decline(self._outcome([CHALLENGE_FAILED, LIVENESS_FAILED], all_match=True, au={"rule": str(self.rule)},
                                     liveness={"mode": "stream", "checked": True, "passed": False,
                                               "early_smiles": self.early_smiles}), t)

    def _outcome(self, reasons: list[str], *, all_match: bool, au: dict, liveness: dict,
                 population: bool = False) -> engine.Outcome:
        pop = self.policy.identity_population if population else None
        return engine.Outcome(False, reasons, identity={
            "score": None if self.best_score is None else round(self.best_score, 5), "threshold": self.threshold,
            "far": self.policy.identity_far, "source": self.policy.identity_source, "all_frames_match": all_match,
            **({"population": pop} if pop else {})}, au=au, liveness=liveness, frames=[])

    def settle(self, approved: bool, reasons: list[str], t: float) -> None:
        """The payment attempt is finished: ``APPROVED`` or ``DECLINED`` (with its reasons in the event log)."""
        self.state = APPROVED if approved else DECLINED
        self._event(t, self.state, reasons=list(reasons))

    def _event(self, t: float, kind: str, **kw) -> None:
        self.events.append({"t": round(t, 3), "event": kind, **kw})
