"""The decision itself: per-frame measurements + policy -> approved / reasons.

Pure function of plain data (no models, no storage), so every rule is unit-testable:
identity in every frame, AU pattern judged against calibrated per-AU thresholds and the
user's own neutral baseline, then expression-change liveness over the burst.

:func:`decide` composes one small function per step (``frame_checks``, ``identity_step``, ``au_step``,
``liveness_step``, ``continuity_step``, ``pad_step``), each returning a :class:`Step`: its reasons, its
section of the :class:`Outcome` and its per-frame entries.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field, replace

import numpy as np

from ..metrics.probability import PROB_CLIP
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
    #: the identity network's smile logit (None: the frame was not embedded, or no probe in the pack)
    smile_probe: float | None = None


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


def fuse_probe(p: dict[str, float], z: float, weight: float, aus) -> dict[str, float]:
    """AU probabilities with the smile probe's logit ``z`` fused into ``aus``:
    ``sigmoid((1 - weight) * logit(p[a]) + weight * z)`` (p clipped to [1e-6, 1 - 1e-6]); other AUs unchanged."""
    out = dict(p)
    w = float(weight)
    for a in aus:
        if a in out:
            out[a] = _sigmoid((1.0 - w) * _logit(out[a]) + w * float(z))
    return out


def _logit(v: float) -> float:
    """logit of a probability clipped to [PROB_CLIP, 1 - PROB_CLIP]: the scalar twin of
    :func:`smile2pay.metrics.probability.logit`, the clip every fusion and rise uses."""
    c = min(max(float(v), PROB_CLIP), 1.0 - PROB_CLIP)
    return math.log(c / (1.0 - c))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def judged_probs(f: FrameObs, policy: Policy) -> dict[str, float] | None:
    """The AU probabilities the decision judges in one frame: the AU stage's, or, under a smile-probe policy
    (``policy.probe_weight > 0``, :meth:`Policy.with_smile_probe`), those fused with the frame's probe logit;
    None (neither present nor absent) for a frame with an error, without probabilities or, under a probe
    policy, without a probe logit (not embedded)."""
    if f.error or not f.au_probs:
        return None
    if policy.probe_weight <= 0:
        return f.au_probs
    if f.smile_probe is None:
        return None
    return fuse_probe(f.au_probs, f.smile_probe, policy.probe_weight, policy.probe_aus)


def judged_baseline(baseline: dict[str, float] | None, policy: Policy) -> dict[str, float] | None:
    """The enrolled baseline on the judged scale: as stored, or fused with its own probe logit (key
    ``smile_probe``) under a probe policy; a baseline enrolled without a probe logit is not used then."""
    if not baseline or policy.probe_weight <= 0:
        return baseline
    z = baseline.get("smile_probe")
    if z is None or not math.isfinite(float(z)):
        return None
    return fuse_probe({k: v for k, v in baseline.items() if k != "smile_probe"}, float(z), policy.probe_weight,
                      policy.probe_aus)


def raised(v: float, delta: float, scale: str = "probability") -> float:
    """The probability a frame must reach to have risen by ``delta`` over ``v`` on ``scale``: ``v + delta``, or,
    on the logit scale (``policy.rise_scale == "logit"``), ``sigmoid(logit(v) + delta)`` with v clipped to
    [1e-6, 1 - 1e-6] (the inverse of :func:`smile2pay.decision.au_calibration.rise`)."""
    if scale != "logit":
        return float(v) + float(delta)
    x = _logit(v) + float(delta)
    if x > _logit(1.0) + 1e-12:
        return 1.0 + 1e-6       # past the clip: no probability rises that far (as in au_calibration.rise)
    return _sigmoid(x)


def pattern_thresholds(rule: Rule, policy: Policy, baseline: dict[str, float] | None = None
                       ) -> tuple[dict[str, float], dict[str, float]]:
    """Presence thresholds of the required AUs (raised to the user's neutral baseline + the policy's
    minimum delta, on the policy's rise scale) and of the forbidden AUs."""
    need = {a: policy.au_threshold(a) for a in rule.required}
    if baseline:
        need = {a: max(t, raised(float(baseline.get(a, 0.0)), policy.baseline_min_delta, policy.rise_scale))
                for a, t in need.items()}
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
    (the smile is a change from this capture's neutral frame, not only an absolute score; both rises on
    ``policy.rise_scale``, :func:`raised`), and no
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
            need_i = {a: max(t, raised(low[a], policy.burst_min_delta, policy.rise_scale)) if a in low else t
                      for a, t in need_i.items()}
        pres, abs_ = classify_pattern(p, rule, policy, need_i, forbid)
        present.append(pres)
        absent.append(abs_)
        for a in rule.required:
            v = float(p.get(a, 0.0))
            low[a] = min(low.get(a, v), v)
    return present, absent, need


@dataclass(frozen=True)
class Step:
    """What one step of :func:`decide` concludes: its reasons (in order), its section of the Outcome
    (``None``: the step did not run) and its entries for each frame (``None``: none)."""

    reasons: list[str]
    section: dict | None = None
    frames: list[dict] | None = None


def frame_checks(frames: list[FrameObs], require_quality: bool = True) -> tuple[Step, list[FrameObs]]:
    """Step 1: a usable face in every frame (its error, or LOW_QUALITY with the frame's quality reasons),
    at least one frame, and finite numbers. Returns the step (``frames``: each frame's index, error or
    quality reasons) and the usable frames: no error, no NaN or infinite score or probability."""
    reasons: list[str] = []
    entries: list[dict] = []
    for i, f in enumerate(frames):
        d = {"index": i}
        if f.error:
            reasons.append(f.error)
            d["error"] = f.error
        elif require_quality and f.quality_reasons:
            reasons.append(LOW_QUALITY)
            d["quality_reasons"] = list(f.quality_reasons)
        entries.append(d)
    ok = [f for f in frames if not f.error]
    if not frames:
        reasons.append(INVALID_OBSERVATION)
    # the decision is total: a NaN or infinite number never compares its way to an approval
    bad = [f for f in ok if (f.identity_score is not None and not math.isfinite(float(f.identity_score)))
           or (f.smile_probe is not None and not math.isfinite(float(f.smile_probe)))
           or any(not math.isfinite(float(v)) for v in (f.au_probs or {}).values())]
    if bad:
        reasons.append(INVALID_OBSERVATION)
        bad_ids = {id(f) for f in bad}
        ok = [f for f in ok if id(f) not in bad_ids]
    return Step(reasons, None, entries), ok


def identity_step(frames: list[FrameObs], ok: list[FrameObs], policy: Policy) -> Step:
    """Step 2: the claimed user in every usable frame, at the calibrated threshold (IDENTITY_MISMATCH).
    Section: the Outcome's ``identity``; frames: each scored frame's score and match."""
    thr = policy.identity_threshold
    scores = [f.identity_score for f in ok if f.identity_score is not None]
    entries = [{} if f.identity_score is None else {"identity_score": round(float(f.identity_score), 5),
                                                    "identity_match": bool(f.identity_score >= thr)}
               for f in frames]
    reasons = [IDENTITY_MISMATCH] if ok and (len(scores) < len(ok) or min(scores) < thr) else []
    identity = {"score": round(float(min(scores)), 5) if scores else None, "threshold": thr,
                "far": policy.identity_far, "source": policy.identity_source,
                "all_frames_match": bool(scores) and min(scores) >= thr and len(scores) == len(ok)}
    if policy.identity_population is not None:
        identity["population"] = policy.identity_population
    return Step(reasons, identity, entries)


def au_policy(policy: Policy, liveness: str) -> Policy:
    """The policy the AU pattern is judged by (and every later step runs with): single-frame mode uses
    the policy's single-frame AU thresholds where it has them, and under a smile-probe policy the probe's
    single-frame weight where the calibration file gives one (``au_probe.single_frame_weight``)."""
    if liveness == "none" and policy.single_frame_au_thresholds:
        policy = replace(policy, au_thresholds={**policy.au_thresholds, **policy.single_frame_au_thresholds})
        sw = (policy.probe_calibration or {}).get("single_frame_weight")
        if policy.probe_weight > 0 and sw:
            policy = replace(policy, probe_weight=float(sw))
    return policy


def _au_section(rule: Rule, policy: Policy, baseline: dict[str, float] | None, need: dict[str, float],
                forbid: dict[str, float], present: list[bool]) -> dict:
    """The Outcome's ``au``: the rule, its thresholds, the baseline and the frames showing the pattern."""
    probe = {"smile_probe": {"weight": policy.probe_weight, "aus": list(policy.probe_aus)}} \
        if policy.probe_weight > 0 else {}
    return {"rule": str(rule), **probe, "thresholds": {a: round(t, 4) for a, t in need.items()},
            "absent_thresholds": {a: round(policy.absent_threshold(a), 4) for a in rule.required},
            "burst_min_delta": policy.burst_min_delta, "baseline_min_delta": policy.baseline_min_delta,
            **({"rise_scale": policy.rise_scale} if policy.rise_scale != "probability" else {}),
            "forbidden_thresholds": {a: round(t, 4) for a, t in forbid.items()},
            "baseline": {a: round(float(v), 4) for a, v in (baseline or {}).items() if a in rule.aus},
            "present_frames": [i for i, v in enumerate(present) if v]}


def au_step(frames: list[FrameObs], ok: list[FrameObs], rule: Rule, policy: Policy,
            baseline: dict[str, float] | None = None) -> tuple[Step, list[bool], list[bool]]:
    """Step 3: the AU pattern per frame, against the calibrated thresholds and the user's neutral baseline
    (:func:`judge_frames`): AU_PATTERN_ABSENT when no usable frame shows it, plus NO_CHANGE_FROM_BASELINE
    when a frame passed the plain thresholds but not the rise over the baseline. Section: the Outcome's
    ``au``; frames: AU probabilities and pattern. Also returns the per-frame (present, absent).

    Under a smile-probe policy the judged probabilities are the fused ones (:func:`judged_probs`; each frame's
    entry then also gives the AU stage's own probabilities and the probe logit) and the baseline is judged on
    the same scale (:func:`judged_baseline`)."""
    probs = [judged_probs(f, policy) for f in frames]
    baseline = judged_baseline(baseline, policy)
    need, forbid = pattern_thresholds(rule, policy, baseline)
    present, absent, _ = judge_frames(probs, rule, policy, baseline)
    entries: list[dict] = []
    for f, p, pres, abs_ in zip(frames, probs, present, absent):
        e: dict = {}
        if p:
            e = {"au_probs": {a: round(float(p.get(a, 0.0)), 4) for a in rule.aus},
                 "pattern": "present" if pres else ("absent" if abs_ else "unclear")}
        if policy.probe_weight > 0 and not f.error and f.au_probs:
            e["au_stage_probs"] = {a: round(float(f.au_probs.get(a, 0.0)), 4) for a in rule.aus}
            if f.smile_probe is not None:
                e["smile_probe"] = round(float(f.smile_probe), 4)
            else:
                e["pattern"] = "not judged (not embedded)"
        entries.append(e)
    reasons: list[str] = []
    if ok and not any(present):
        reasons.append(AU_PATTERN_ABSENT)
        if baseline:
            plain = [all((p or {}).get(a, 0.0) >= policy.au_threshold(a) for a in rule.required) for p in probs]
            if any(plain):
                reasons.append(NO_CHANGE_FROM_BASELINE)
    return Step(reasons, _au_section(rule, policy, baseline, need, forbid, present), entries), present, absent


def _burst_checkable(frames: list[FrameObs], ok: list[FrameObs]) -> bool:
    """Every frame usable and carrying its aligned crop and landmarks (what the burst checks compare)."""
    return len(ok) == len(frames) and all(f.crop is not None and f.landmarks is not None for f in ok)


def liveness_step(frames: list[FrameObs], ok: list[FrameObs], present: list[bool], absent: list[bool],
                  policy: Policy, liveness: str = "burst") -> Step:
    """Step 4: expression-change liveness over the burst (:func:`~.liveness.check_burst`): the pattern
    appears during the frames, which are not one still. A burst that cannot be checked (a frame unusable
    or without its crop) fails it when it is too short or a crop is missing. Section: the Outcome's
    ``liveness`` (without ``continuity`` and ``pad``). ``liveness="none"``: not checked, said so."""
    if liveness not in LIVENESS_MODES:
        raise ValueError(f"liveness must be one of {LIVENESS_MODES}, got {liveness!r}")
    live: dict = {"mode": liveness, "checked": liveness == "burst"}
    reasons: list[str] = []
    if liveness != "burst":
        live["note"] = "single-frame mode: liveness was NOT checked"
    elif _burst_checkable(frames, ok):
        lr = check_burst([f.crop for f in ok], [f.landmarks for f in ok], present, absent, policy.liveness)
        live.update(lr.to_dict())
        if not lr.passed:
            reasons.extend(lr.reasons)
    else:
        live["passed"] = False
        missing_crop = len(ok) == len(frames) and any(f.crop is None or f.landmarks is None for f in ok)
        if len(frames) < policy.liveness.min_frames or missing_crop:
            reasons.append(LIVENESS_FAILED)
            if missing_crop:
                live["note"] = "a frame came without its aligned crop: the replay check could not run"
    return Step(reasons, live)


def continuity_step(frames: list[FrameObs], ok: list[FrameObs], policy: Policy, liveness: str = "burst") -> Step:
    """Step 5: one capture, not two photos: every consecutive pair of frames continuous
    (:func:`~.continuity.check`). Runs with the burst liveness check only (section ``None`` otherwise)."""
    if liveness != "burst" or not _burst_checkable(frames, ok):
        return Step([])
    cr = continuity.check([continuity.signature(f.crop, f.landmarks, policy.continuity.window) for f in ok
                           if f.landmarks is not None], policy.continuity)
    return Step([] if cr.passed else list(cr.reasons), cr.to_dict())


def pad_step(ok: list[FrameObs], policy: Policy) -> Step:
    """Step 6: passive presentation-attack detection (every mode, burst or single frame): a non-finite
    score is INVALID_OBSERVATION; enforced, a usable frame below the threshold or not scored (too small
    for the models: no proof of a live face either) is PRESENTATION_ATTACK. Section: ``liveness.pad``."""
    pads = [f.pad_score for f in ok]
    section = {"mode": policy.pad_mode, "threshold": policy.pad_threshold,
               "scores": [None if p is None else round(float(p), 4) for p in pads]}
    scored = [float(p) for p in pads if p is not None]
    reasons: list[str] = []
    if any(not math.isfinite(p) for p in scored):
        reasons.append(INVALID_OBSERVATION)
    elif policy.pad_mode == "enforce" and ok and (len(scored) < len(ok) or min(scored) < policy.pad_threshold):
        reasons.append(PRESENTATION_ATTACK)
    return Step(reasons, section)


def decide(frames: list[FrameObs], rule: Rule, policy: Policy, *, liveness: str = "burst",
           baseline: dict[str, float] | None = None, require_quality: bool = True) -> Outcome:
    """The decision on one burst: approved when no step gives a reason. The steps, in the order their
    reasons are listed (each reason once): frame errors and quality, identity, AU pattern and baseline,
    liveness, continuity, presentation-attack detection."""
    checks, ok = frame_checks(frames, require_quality)
    ident = identity_step(frames, ok, policy)
    policy = au_policy(policy, liveness)
    au, present, absent = au_step(frames, ok, rule, policy, baseline)
    live = liveness_step(frames, ok, present, absent, policy, liveness)
    cont = continuity_step(frames, ok, policy, liveness)
    pad = pad_step(ok, policy)
    reasons = _uniq([r for step in (checks, ident, au, live, cont, pad) for r in step.reasons])
    live_section = dict(live.section)
    if cont.section is not None:
        live_section["continuity"] = cont.section
    live_section["pad"] = pad.section
    per_frame = [{**c, **i, **a} for c, i, a in zip(checks.frames, ident.frames, au.frames)]
    return Outcome(approved=not reasons, reasons=reasons, identity=ident.section, au=au.section,
                   liveness=live_section, frames=per_frame)
