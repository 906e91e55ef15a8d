"""The decision itself: per-frame measurements + policy -> approved / reasons.

Pure function of plain data (no models, no storage), so every rule is unit-testable:
identity in every frame, AU pattern judged against calibrated per-AU thresholds and the
user's own neutral baseline, then expression-change liveness over the burst.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field, replace

import numpy as np

from . import continuity
from .liveness import LIVENESS_FAILED, check_burst
from .policy import Policy
from .rules import Rule

# reason codes: assigned once, in smile2pay.reasons; re-exported here for callers of engine.NO_FACE etc.
from ..reasons import (  # noqa: F401
    AU_PATTERN_ABSENT,
    IDENTITY_MISMATCH,
    INVALID_OBSERVATION,
    LOCKED_OUT,
    LOW_QUALITY,
    MULTIPLE_FACES,
    NO_CHANGE_FROM_BASELINE,
    NO_FACE,
    NOT_ENROLLED,
    PRESENTATION_ATTACK,
    REPLAY,
)

LIVENESS_MODES = ("burst", "none")


@dataclass
class FrameObs:
    """What the pipeline measured in one frame (``error`` set when no usable single face)."""

    error: str | None = None
    identity_score: float | None = None
    au_probs: dict[str, float] | None = None
    crop: np.ndarray | None = None          # aligned identity crop, for the replay check only
    landmarks: np.ndarray | None = None
    quality_reasons: list[str] = field(default_factory=list)
    #: passive PAD p_real of this face (None: not scored, e.g. a face too small for the models)
    pad_score: float | None = None


@dataclass
class Outcome:
    approved: bool
    reasons: list[str]
    identity: dict
    au: dict
    liveness: dict
    frames: list[dict]


def _uniq(seq):
    out = []
    for s in seq:
        if s not in out:
            out.append(s)
    return out


def pattern_thresholds(rule: Rule, policy: Policy, baseline: dict[str, float] | None = None
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """Presence thresholds of the required AUs (raised to the user's neutral baseline + the policy's
    minimum delta) and of the forbidden AUs."""
    need = {a: policy.au_threshold(a) for a in rule.required}
    if baseline:
        need = {a: max(t, float(baseline.get(a, 0.0)) + policy.baseline_min_delta) for a, t in need.items()}
    forbid = {a: policy.au_threshold(a) for a in rule.forbidden}
    return need, forbid


def classify_pattern(p: dict[str, float], rule: Rule, policy: Policy, need: dict[str, float],
                     forbid: dict[str, float]) -> tuple[bool, bool]:
    """(present, absent) of the rule in one frame's AU probabilities; a frame may be neither."""
    pres = all(p.get(a, 0.0) >= t for a, t in need.items()) and not any(
        p.get(a, 0.0) >= t for a, t in forbid.items())
    # "absent": EVERY required AU below its absence threshold: a neutral face. (With "any", a
    # smiling still whose AU6 flickers around its threshold would fake an onset.)
    abs_ = all(p.get(a, 0.0) < policy.absent_threshold(a) for a in rule.required)
    return pres, abs_ and not pres


def judge_frames(probs: list[dict[str, float] | None], rule: Rule, policy: Policy,
                 baseline: dict[str, float] | None = None) -> tuple[list[bool], list[bool], dict[str, float]]:
    """The AU judgement of a burst on its own: per frame (present, absent).

    A frame shows the pattern when every required AU reaches its calibrated threshold, is at least
    ``policy.baseline_min_delta`` above the user's enrolled neutral baseline, and at least
    ``policy.burst_min_delta`` above its own lowest value in the earlier frames of the same burst
    (the smile is a change from this capture's neutral frame, not only an absolute score), and no
    forbidden AU reaches its threshold. Frames without probabilities are neither present nor absent.
    Returns (present, absent, the baseline-raised thresholds)."""
    need, forbid = pattern_thresholds(rule, policy, baseline)
    present, absent = [], []
    low: dict[str, float] = {}
    for p in probs:
        if not p:
            present.append(False)
            absent.append(False)
            continue
        need_i = dict(need)
        if policy.burst_min_delta > 0 and low:
            need_i = {a: max(t, low[a] + policy.burst_min_delta) if a in low else t for a, t in need_i.items()}
        pres, abs_ = classify_pattern(p, rule, policy, need_i, forbid)
        present.append(pres)
        absent.append(abs_)
        for a in rule.required:
            v = float(p.get(a, 0.0))
            low[a] = min(low.get(a, v), v)
    return present, absent, need


def decide(frames: list[FrameObs], rule: Rule, policy: Policy, *, liveness: str = "burst",
           baseline: dict[str, float] | None = None, require_quality: bool = True) -> Outcome:
    reasons: list[str] = []
    per_frame: list[dict] = []
    # 1. a usable face in every frame
    for i, f in enumerate(frames):
        d = {"index": i}
        if f.error:
            reasons.append(f.error)
            d["error"] = f.error
        elif require_quality and f.quality_reasons:
            reasons.append(LOW_QUALITY)
            d["quality_reasons"] = list(f.quality_reasons)
        per_frame.append(d)
    ok = [f for f in frames if not f.error]
    if not frames:
        reasons.append(INVALID_OBSERVATION)
    # the decision is total: a NaN or infinite number never compares its way to an approval
    bad = [f for f in ok if (f.identity_score is not None and not math.isfinite(float(f.identity_score)))
           or any(not math.isfinite(float(v)) for v in (f.au_probs or {}).values())]
    if bad:
        reasons.append(INVALID_OBSERVATION)
        bad_ids = {id(f) for f in bad}
        ok = [f for f in ok if id(f) not in bad_ids]

    # 2. identity in every frame (the claimed user, at the calibrated threshold)
    thr = policy.identity_threshold
    scores = [f.identity_score for f in ok if f.identity_score is not None]
    for d, f in zip(per_frame, frames):
        if f.identity_score is not None:
            d["identity_score"] = round(float(f.identity_score), 5)
            d["identity_match"] = bool(f.identity_score >= thr)
    if ok and (len(scores) < len(ok) or min(scores) < thr):
        reasons.append(IDENTITY_MISMATCH)
    identity = {"score": round(float(min(scores)), 5) if scores else None, "threshold": thr,
                "far": policy.identity_far, "source": policy.identity_source,
                "all_frames_match": bool(scores) and min(scores) >= thr and len(scores) == len(ok)}
    if policy.identity_population is not None:
        identity["population"] = policy.identity_population

    # 3. AU pattern per frame, against thresholds and the personal neutral baseline
    if liveness == "none" and policy.single_frame_au_thresholds:
        policy = replace(policy, au_thresholds={**policy.au_thresholds, **policy.single_frame_au_thresholds})
    need, forbid = pattern_thresholds(rule, policy, baseline)
    present, absent, _ = judge_frames([None if f.error else (f.au_probs or None) for f in frames], rule, policy,
                                      baseline)
    for d, f, pres, abs_ in zip(per_frame, frames, present, absent):
        p = f.au_probs or {}
        if f.error or not p:
            continue
        d["au_probs"] = {a: round(float(p.get(a, 0.0)), 4) for a in rule.aus}
        d["pattern"] = "present" if pres else ("absent" if abs_ else "unclear")
    au = {"rule": str(rule), "thresholds": {a: round(t, 4) for a, t in need.items()},
          "absent_thresholds": {a: round(policy.absent_threshold(a), 4) for a in rule.required},
          "burst_min_delta": policy.burst_min_delta, "baseline_min_delta": policy.baseline_min_delta,
          "forbidden_thresholds": {a: round(t, 4) for a, t in forbid.items()},
          "baseline": {a: round(float(v), 4) for a, v in (baseline or {}).items() if a in rule.aus},
          "present_frames": [i for i, v in enumerate(present) if v]}
    if ok and not any(present):
        reasons.append(AU_PATTERN_ABSENT)
        if baseline:
            plain = [all((f.au_probs or {}).get(a, 0.0) >= policy.au_threshold(a) for a in rule.required)
                     for f in frames]
            if any(plain):
                reasons.append(NO_CHANGE_FROM_BASELINE)

    # 4. expression-change liveness over the burst
    if liveness not in LIVENESS_MODES:
        raise ValueError(f"liveness must be one of {LIVENESS_MODES}, got {liveness!r}")
    live: dict = {"mode": liveness, "checked": liveness == "burst"}
    if liveness == "burst":
        if len(ok) == len(frames) and all(f.crop is not None and f.landmarks is not None for f in ok):
            lr = check_burst([f.crop for f in ok], [f.landmarks for f in ok], present, absent, policy.liveness)
            live.update(lr.to_dict())
            if not lr.passed:
                reasons.extend(lr.reasons)
            # one capture, not two photos: every consecutive pair of frames continuous
            cr = continuity.check([continuity.signature(f.crop, f.landmarks) for f in ok
                                   if f.landmarks is not None], policy.continuity)
            live["continuity"] = cr.to_dict()
            if not cr.passed:
                reasons.extend(cr.reasons)
        else:
            live["passed"] = False
            missing_crop = len(ok) == len(frames) and any(f.crop is None or f.landmarks is None for f in ok)
            if len(frames) < policy.liveness.min_frames or missing_crop:
                reasons.append(LIVENESS_FAILED)
                if missing_crop:
                    live["note"] = "a frame came without its aligned crop: the replay check could not run"
    else:
        live["note"] = "single-frame mode: liveness was NOT checked"

    # 5. passive presentation-attack detection (every mode, burst or single frame)
    pads = [f.pad_score for f in ok]
    live["pad"] = {"mode": policy.pad_mode, "threshold": policy.pad_threshold,
                   "scores": [None if p is None else round(float(p), 4) for p in pads]}
    scored = [float(p) for p in pads if p is not None]
    if any(not math.isfinite(p) for p in scored):
        reasons.append(INVALID_OBSERVATION)
    elif policy.pad_mode == "enforce" and ok and (len(scored) < len(ok) or min(scored) < policy.pad_threshold):
        # enforced: a face the models could not score (too small) is no proof of a live face either
        reasons.append(PRESENTATION_ATTACK)

    reasons = _uniq(reasons)
    return Outcome(approved=not reasons, reasons=reasons, identity=identity, au=au, liveness=live,
                   frames=per_frame)
