"""Calibrate the smile gate (the AU part of a decision) on several populations at once.

Thresholds do not travel between populations, so the gate's operating point is chosen on a *mix*:
each population contributes judged probes, and the point kept is the one whose **worst** population
still passes the most smiles while **every** population stays at or under ``max_fpr`` of other
expressions. A probe is what :func:`smile2pay.decision.engine.judge_frames` sees:

* ``probe``: the AU probabilities of the frame that should show the pattern;
* ``neutral``: the same burst's earlier neutral frame (``None``: a single frame, judged absolutely);
* ``baseline``: the user's enrolled neutral AU probabilities (``None``: not enrolled / unknown).

The gate passes when (for each required AU ``a``) ``probe[a] >= t_a``, ``probe[a] - baseline[a] >=
delta`` and ``probe[a] - neutral[a] >= delta``, and the neutral frame is clearly neutral (every required
AU below the absence threshold). That is the engine's rule for a two-frame burst with
``baseline_min_delta = burst_min_delta = delta``; a test checks the two agree.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np

from ..metrics.probability import logit as _logit

GRID_T = tuple(np.round(np.arange(0.20, 0.851, 0.05), 2))
GRID_DELTA = tuple(np.round(np.arange(0.0, 0.401, 0.05), 2))
GRID_ABSENT = (0.3, 0.4, 0.5, 0.6, 0.7)
#: the smallest required rise (``delta``) a paired calibration may choose. Camera noise and video compression
#: alone move the fused AU6+AU12 pattern of one unchanging photo by up to 0.12 between frames (largest
#: rise over 24 noisy JPEG copies of 231 stills at sigma 5 grey levels; ``python benchmarks/au_flicker.py
#: --frames 24``, ``benchmarks/results/au_flicker.json``; on the smile probe's fused scale up to 0.10, same copies,
#: 2026-12-07); with a smaller delta a single smiling photo whose score sits at the threshold "smiles" by flicker
#: (1 of 200 LFW victims paid that way with delta 0).
MIN_DELTA = 0.15
#: the scales a required rise may be judged on: the probabilities' difference (``"probability"``, the default) or
#: the difference of their logits (``"logit"``: the same change counts alike at 0.1 -> 0.2 and at 0.8 -> 0.9, so a
#: "neutral" frame that already shows a trace of a smile, common in photos of people in the wild, can still show
#: the change; :func:`rise`)
RISE_SCALES = ("probability", "logit")
GRID_DELTA_LOGIT = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
#: the smallest logit-scale rise a paired calibration may choose, for each absence threshold it may choose: the
#: smallest grid step above the largest logit-scale flicker of one still whose earlier frame is under that
#: absence threshold (``python benchmarks/au_flicker.py --frames 24``, ``max_logit_pattern_flicker``, with the
#: smile probe at weight 0.15, 2026-12-07: 0.43 below 0.7, 0.49 below 0.8, 0.68 below 0.9). On the logit scale
#: a still sitting high flickers more (0.85 <-> 0.9 is a logit step of 0.46), so a higher absence threshold
#: needs a larger rise.
LOGIT_DELTA_FLOOR = {0.3: 0.5, 0.4: 0.5, 0.5: 0.5, 0.6: 0.5, 0.7: 0.5, 0.8: 0.5, 0.9: 0.75}
MIN_DELTA_LOGIT = min(LOGIT_DELTA_FLOOR.values())
#: the absence thresholds a logit-scale calibration may choose (the logit rise lets the neutral frame sit higher)
GRID_ABSENT_LOGIT = tuple(sorted(LOGIT_DELTA_FLOOR))


def logit_floor(absent: float) -> float:
    """The smallest logit-scale rise allowed with absence threshold ``absent`` (:data:`LOGIT_DELTA_FLOOR`; the
    next tabulated threshold up for one between them; NaN, so never allowed, above the largest measured)."""
    ks = [k for k in sorted(LOGIT_DELTA_FLOOR) if k >= float(absent) - 1e-9]
    return LOGIT_DELTA_FLOOR[ks[0]] if ks else float("nan")


def rise(p, ref, scale: str = "probability"):
    """How far ``p`` rose over ``ref`` (arrays or floats) on ``scale`` (:data:`RISE_SCALES`); the engine's
    :func:`smile2pay.decision.engine.raised` is its inverse."""
    if scale == "logit":
        return _logit(p) - _logit(ref)
    if scale != "probability":
        raise ValueError(f"rise scale must be one of {RISE_SCALES}, got {scale!r}")
    return np.asarray(p, np.float64) - np.asarray(ref, np.float64)


@dataclass
class Probes:
    """One population's probes for a rule with required AUs ``aus`` (arrays (N, len(aus)); NaN = none)."""

    name: str
    aus: tuple
    probe: np.ndarray
    neutral: np.ndarray
    baseline: np.ndarray
    smile: np.ndarray          # (N,) bool: the probe shows the pattern (ground truth)

    @classmethod
    def from_dicts(cls, name: str, aus, probes: list[dict], smile, neutral: list[dict | None] | None = None,
                   baseline: list[dict | None] | None = None) -> "Probes":
        aus = tuple(aus)

        def arr(rows):
            if rows is None:
                return np.full((len(probes), len(aus)), np.nan, np.float32)
            return np.array([[np.nan] * len(aus) if r is None else [float(r.get(a, 0.0)) for a in aus]
                             for r in rows], np.float32).reshape(len(probes), len(aus))

        return cls(name, aus, arr(probes), arr(neutral), arr(baseline), np.asarray(smile, bool))


def gate(pr: Probes, thresholds, delta: float, absent: float, scale: str = "probability") -> np.ndarray:
    """Which probes pass the gate at (per-AU thresholds, delta, absence threshold); the rises are judged on
    ``scale`` (:func:`rise`)."""
    t = np.asarray(thresholds, np.float32)[None]
    ok = (pr.probe >= t).all(1)
    with np.errstate(invalid="ignore"):
        for ref in (pr.baseline, pr.neutral):
            has = ~np.isnan(ref).any(1)
            ok &= ~has | (rise(pr.probe, ref, scale) >= delta - 1e-9).all(1)
        has_n = ~np.isnan(pr.neutral).any(1)
        # the neutral frame must be clearly neutral, and not itself show the pattern (engine: absent and not present)
        n_present = (pr.neutral >= t).all(1)
        has_b = ~np.isnan(pr.baseline).any(1)
        n_present &= ~has_b | (rise(pr.neutral, pr.baseline, scale) >= delta - 1e-9).all(1)
        ok &= ~has_n | ((pr.neutral < absent).all(1) & ~n_present)
    return ok


def rates(pr: Probes, thresholds, delta: float, absent: float, scale: str = "probability") -> dict:
    ok = gate(pr, thresholds, delta, absent, scale)
    s, o = pr.smile, ~pr.smile
    return {"smiles": int(s.sum()), "others": int(o.sum()),
            "tpr": float(ok[s].mean()) if s.any() else None, "fpr": float(ok[o].mean()) if o.any() else None}


def calibrate(pops: list[Probes], max_fpr: float = 0.015, grid_t=GRID_T, grid_delta=None,
              grid_absent=None, shared_threshold: bool = False, min_delta: float | None = None,
              rise_scale: str = "probability") -> dict:
    """Grid search of (per-AU thresholds, delta, absence threshold) on the mix (see the module doc).

    ``min_delta``: deltas below it are not tried (default :data:`MIN_DELTA`, or with ``rise_scale="logit"`` the
    floor :data:`LOGIT_DELTA_FLOOR` gives each absence threshold: above the frame-to-frame flicker of a still);
    0 for a single-frame calibration, which has no neutral frame to rise from. ``rise_scale``: the scale the rises
    are judged on (:func:`rise`); the delta and absence grids default to that scale's (:data:`GRID_DELTA` /
    :data:`GRID_ABSENT`, or :data:`GRID_DELTA_LOGIT` / :data:`GRID_ABSENT_LOGIT`)."""
    if rise_scale not in RISE_SCALES:
        raise ValueError(f"rise scale must be one of {RISE_SCALES}, got {rise_scale!r}")
    logit = rise_scale == "logit"
    grid_delta = (GRID_DELTA_LOGIT if logit else GRID_DELTA) if grid_delta is None else grid_delta
    grid_absent = (GRID_ABSENT_LOGIT if logit else GRID_ABSENT) if grid_absent is None else grid_absent
    default_floor = min_delta is None      # the flicker floors apply unless the caller sets its own minimum
    min_delta = (MIN_DELTA_LOGIT if logit else MIN_DELTA) if min_delta is None else min_delta
    if not pops:
        raise ValueError("no populations to calibrate on")
    grid_delta = tuple(d for d in grid_delta if d >= min_delta - 1e-9)
    if not grid_delta:
        raise ValueError(f"no delta in the grid reaches min_delta={min_delta}")
    aus = pops[0].aus
    if any(p.aus != aus for p in pops):
        raise ValueError("every population must be judged on the same AUs")
    t0 = time.time()
    best, best_key = None, None
    t_sets = ([(t,) * len(aus) for t in grid_t] if shared_threshold
              else list(itertools.product(grid_t, repeat=len(aus))))
    for ts in t_sets:
        for d in grid_delta:
            for a in grid_absent:
                if logit and default_floor and not d >= logit_floor(a) - 1e-9:
                    continue        # under the flicker of a still that sits below this absence threshold
                rs = [rates(p, ts, d, a, rise_scale) for p in pops]
                fprs = [r["fpr"] for r in rs if r["fpr"] is not None]
                tprs = [r["tpr"] for r in rs if r["tpr"] is not None]
                if not tprs or (fprs and max(fprs) > max_fpr):
                    continue
                # worst population's smile rate first, then the mean, then the lowest worst FPR
                key = (round(min(tprs), 6), round(float(np.mean(tprs)), 6), -round(max(fprs) if fprs else 0.0, 6))
                if best_key is None or key > best_key:
                    best_key, best = key, (ts, d, a, rs)
    if best is None:
        raise ValueError(f"no operating point keeps every population at FPR <= {max_fpr}")
    ts, d, a, rs = best
    return {"aus": list(aus), "thresholds": {au: float(t) for au, t in zip(aus, ts)}, "delta": float(d),
            "absent_threshold": float(a), "max_fpr": max_fpr, "min_delta": float(min_delta), "rise_scale": rise_scale,
            "populations": {p.name: r for p, r in zip(pops, rs)}, "seconds": round(time.time() - t0, 1)}


def calibration_section(result: dict, note: str = "") -> tuple[dict, dict]:
    """The ``au`` and ``au_change`` sections of a calibration file from :func:`calibrate`'s result."""
    au = {}
    for a, t in result["thresholds"].items():
        au[a] = {"threshold": round(t, 4), "absent_threshold": round(result["absent_threshold"], 4),
                 "chosen_at": {k: v for k, v in result["populations"].items()}}
    change = {"baseline_min_delta": round(result["delta"], 4), "burst_min_delta": round(result["delta"], 4),
              "max_fpr": result["max_fpr"], "note": note}
    if result.get("rise_scale", "probability") != "probability":
        change["rise_scale"] = result["rise_scale"]
    return au, change
