"""Impostor-tail statistics: robust location/scale, empirical FAR quantile, reference tail shape.

Used by the calibration (:func:`smile2pay.metrics.calibration.calibrate` records each population's
tail shape) and by the gallery self-calibration (:mod:`smile2pay.decision.population`).
"""
from __future__ import annotations

import math

import numpy as np

LOW_Q, HIGH_Q = 0.158655, 0.841345   # +-1 sigma of a normal


def robust_loc_scale(scores: np.ndarray) -> tuple[float, float]:
    """Median and half the 15.9-84.1 percentile range (= sigma for a normal)."""
    s = np.asarray(scores, np.float64).ravel()
    lo, med, hi = np.quantile(s, [LOW_Q, 0.5, HIGH_Q])
    return float(med), float(max((hi - lo) / 2.0, 1e-6))


def empirical_threshold(scores: np.ndarray, far: float) -> float:
    """Smallest threshold (accept ``score >= t``) with at most ``far`` of ``scores`` accepted."""
    s = np.sort(np.asarray(scores, np.float64).ravel())[::-1]
    k = int(math.floor(far * s.size * (1 + 1e-12)))   # accepts allowed
    if k >= s.size:
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def tail_shape(impostor_scores: np.ndarray, fars) -> dict:
    """Reference statistics of one population's impostor scores: loc, scale and ``z`` per FAR."""
    loc, scale = robust_loc_scale(impostor_scores)
    out = {"loc": loc, "scale": scale, "impostors": int(np.asarray(impostor_scores).size), "z": {}}
    for f in fars:
        t = empirical_threshold(impostor_scores, f)
        out["z"][f"{f:g}"] = (t - loc) / scale
    return out
