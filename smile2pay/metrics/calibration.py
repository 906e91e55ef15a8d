"""Threshold calibration at target FARs, with the uncertainty a reviewer needs.

From embeddings and subject labels, every cross-subject pair is an impostor comparison and every
same-subject pair a genuine one (so FAR 1e-4 rests on millions of comparisons rather than
LFW's 3,000). For each target FAR the file records the threshold, the observed false accepts and
impostor count, a Clopper-Pearson interval on the observed FAR, and a bootstrap over **subjects**
(attempts by one person are correlated; ISO/IEC 19795-1 practice) for the threshold itself.
"""
from __future__ import annotations

import math

import numpy as np

from .tail import tail_shape
from .verification import clopper_pearson, far_upper_bound, min_impostors


def pair_scores(emb: np.ndarray, subjects) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All i<j cosine scores split into impostor (with both subject indices) and genuine.

    Returns ``(imp_scores, imp_subject_a, imp_subject_b, gen_scores)``; subject indices refer to
    ``np.unique(subjects)``.
    """
    e = np.asarray(emb, dtype=np.float32)
    _, sid = np.unique(np.asarray(subjects), return_inverse=True)
    sid = sid.astype(np.int32)
    n = e.shape[0]
    imp, sa, sb, gen = [], [], [], []
    block = 1024
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = e[start:stop] @ e.T                          # (b, n)
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(n)[None, :]
        upper = cols > rows
        same = sid[start:stop, None] == sid[None, :]
        m_imp = upper & ~same
        m_gen = upper & same
        imp.append(s[m_imp])
        gen.append(s[m_gen])
        r, c = np.nonzero(m_imp)
        sa.append(sid[start:stop][r])
        sb.append(sid[c])
    return (np.concatenate(imp), np.concatenate(sa).astype(np.int32), np.concatenate(sb).astype(np.int32),
            np.concatenate(gen))


def threshold_at_far(imp_sorted_desc: np.ndarray, far: float, weights_cum: np.ndarray | None = None) -> float:
    """Smallest threshold (accept ``score >= t``) whose impostor accept share is <= ``far``.

    ``imp_sorted_desc``: impostor scores sorted high to low. ``weights_cum``: cumulative pair weights
    in that order (bootstrap); None = every pair weighs 1.
    """
    n = imp_sorted_desc.shape[0]
    if weights_cum is None:
        k = int(math.floor(far * n * (1 + 1e-12)))      # false accepts allowed
        if k >= n:
            return float(imp_sorted_desc[-1])
        # rejecting the (k+1)-th highest score, and everything with the same value
        return float(np.nextafter(np.float32(imp_sorted_desc[k]), np.float32(np.inf)))
    total = weights_cum[-1]
    idx = int(np.searchsorted(weights_cum, far * total * (1 + 1e-12), side="right"))
    if idx >= n:
        return float(imp_sorted_desc[-1])
    return float(np.nextafter(np.float32(imp_sorted_desc[idx]), np.float32(np.inf)))


def operating_points(gen, imp, fars=(1e-3, 1e-4, 1e-5), *, imp_sa=None, imp_sb=None, bootstrap: int = 100,
                     seed: int = 0, confidence: float = 0.95) -> dict:
    """Operating points for each FAR from genuine and impostor scores (see the module docstring).

    The bootstrap resamples subjects when ``imp_sa``/``imp_sb`` (subject index of each impostor
    pair's two sides) are given, else impostor pairs. Thresholds are exact (not rounded: rounding to
    nearest could land on an impostor score and accept one more than counted).
    """
    imp = np.asarray(imp, np.float64)
    gen = np.asarray(gen, np.float64)
    if imp.size == 0 or gen.size == 0:
        raise ValueError("need genuine and impostor pairs to calibrate")
    order = np.argsort(-imp, kind="stable")
    imp_sorted = imp[order]
    rng = np.random.default_rng(seed)
    boot: dict[float, list[float]] = {f: [] for f in fars}
    by_subject = imp_sa is not None and imp_sb is not None
    n_subj = None
    if by_subject:
        sa, sb = np.asarray(imp_sa)[order], np.asarray(imp_sb)[order]
        n_subj = int(max(sa.max(), sb.max())) + 1
    for _ in range(int(bootstrap)):
        if by_subject:
            w = np.bincount(rng.integers(0, n_subj, n_subj), minlength=n_subj).astype(np.float64)
            cum = np.cumsum(w[sa] * w[sb])
        else:
            cum = np.cumsum(np.bincount(rng.integers(0, imp.size, imp.size), minlength=imp.size).astype(np.float64))
        if cum[-1] <= 0:
            continue
        for f in fars:
            boot[f].append(threshold_at_far(imp_sorted, f, cum))
    alpha = 1 - confidence
    n_imp = int(imp.size)
    ops = []
    for f in fars:
        t = threshold_at_far(imp_sorted, f)
        fa = int(np.count_nonzero(imp_sorted >= t))
        b = np.asarray(boot[f]) if boot[f] else np.asarray([t])
        ops.append({
            "far": f,
            "threshold": t,
            "false_accepts": fa,
            "impostors": n_imp,
            "far_observed": fa / n_imp,
            "far_ci95": list(clopper_pearson(fa, n_imp, alpha)),
            "far_upper95": far_upper_bound(fa, n_imp, confidence),
            "supported": bool(n_imp >= min_impostors(f)),
            "tar": float(np.mean(gen >= t)),
            "genuine": int(gen.size),
            "threshold_ci95_subject_bootstrap" if by_subject else "threshold_ci95_pair_bootstrap":
                [float(np.percentile(b, 100 * alpha / 2)), float(np.percentile(b, 100 * (1 - alpha / 2)))],
            "bootstrap_rounds": int(len(boot[f])),
        })
    return {"subjects": n_subj, "operating_points": ops, "impostor_mean": float(imp.mean()),
            "genuine_mean": float(gen.mean())}


def calibrate(emb: np.ndarray, subjects, fars=(1e-3, 1e-4, 1e-5), *, bootstrap: int = 100,
              seed: int = 0, confidence: float = 0.95) -> dict:
    """Operating points for each FAR over all pairs of ``emb`` (cross-subject = impostor), with a
    bootstrap over subjects."""
    imp, sa, sb, gen = pair_scores(emb, subjects)
    if imp.size == 0 or gen.size == 0:
        raise ValueError("need at least two subjects and one subject with two or more images")
    res = operating_points(gen, imp, fars, imp_sa=sa, imp_sb=sb, bootstrap=bootstrap, seed=seed,
                           confidence=confidence)
    res["images"] = int(np.asarray(emb).shape[0])
    res["tail_shape"] = tail_shape(imp, fars)   # for the gallery self-calibration (decision.population)
    return res
