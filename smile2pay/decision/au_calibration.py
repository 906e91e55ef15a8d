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


def gate(pr: Probes, thresholds, delta: float, absent: float) -> np.ndarray:
    """Which probes pass the gate at (per-AU thresholds, delta, absence threshold)."""
    t = np.asarray(thresholds, np.float32)[None]
    ok = (pr.probe >= t).all(1)
    with np.errstate(invalid="ignore"):
        for ref in (pr.baseline, pr.neutral):
            has = ~np.isnan(ref).any(1)
            ok &= ~has | ((pr.probe - ref) >= delta - 1e-9).all(1)
        has_n = ~np.isnan(pr.neutral).any(1)
        # the neutral frame must be clearly neutral, and not itself show the pattern (engine: absent and not present)
        n_present = (pr.neutral >= t).all(1)
        has_b = ~np.isnan(pr.baseline).any(1)
        n_present &= ~has_b | ((pr.neutral - pr.baseline) >= delta - 1e-9).all(1)
        ok &= ~has_n | ((pr.neutral < absent).all(1) & ~n_present)
    return ok


def rates(pr: Probes, thresholds, delta: float, absent: float) -> dict:
    ok = gate(pr, thresholds, delta, absent)
    s, o = pr.smile, ~pr.smile
    return {"smiles": int(s.sum()), "others": int(o.sum()),
            "tpr": float(ok[s].mean()) if s.any() else None, "fpr": float(ok[o].mean()) if o.any() else None}


def calibrate(pops: list[Probes], max_fpr: float = 0.015, grid_t=GRID_T, grid_delta=GRID_DELTA,
              grid_absent=GRID_ABSENT, shared_threshold: bool = False, min_delta: float = MIN_DELTA) -> dict:
    """Grid search of (per-AU thresholds, delta, absence threshold) on the mix (see the module doc).

    ``min_delta``: deltas below it are not tried (:data:`MIN_DELTA`: above the frame-to-frame flicker of a still);
    0 for a single-frame calibration, which has no neutral frame to rise from."""
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
                rs = [rates(p, ts, d, a) for p in pops]
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
            "absent_threshold": float(a), "max_fpr": max_fpr, "min_delta": float(min_delta),
            "populations": {p.name: r for p, r in zip(pops, rs)}, "seconds": round(time.time() - t0, 1)}


def calibration_section(result: dict, note: str = "") -> tuple[dict, dict]:
    """The ``au`` and ``au_change`` sections of a calibration file from :func:`calibrate`'s result."""
    au = {}
    for a, t in result["thresholds"].items():
        au[a] = {"threshold": round(t, 4), "absent_threshold": round(result["absent_threshold"], 4),
                 "chosen_at": {k: v for k, v in result["populations"].items()}}
    change = {"baseline_min_delta": round(result["delta"], 4), "burst_min_delta": round(result["delta"], 4),
              "max_fpr": result["max_fpr"], "note": note}
    return au, change
