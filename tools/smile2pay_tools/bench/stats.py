"""Pure metric helpers of the benches (no face code; tested on hand-made arrays).

* :func:`side_sedi_scores`: cosine scores of every pair of images, split into SIDE (same identity,
  different expression) and SEDI (same expression, different identity), plus the two remaining
  cells (same/same, different/different) for context.
* :func:`separability`: AUC between two score samples (P(a > b) + P(a = b) / 2).
* :func:`far_by_group`: FAR (and FRR) per group at given thresholds, with Clopper-Pearson bounds.
"""
from __future__ import annotations

import numpy as np

from smile2pay.metrics.verification import clopper_pearson, far_upper_bound, roc_auc

__all__ = ["side_sedi_scores", "side_sedi_counts", "summary", "separability", "far_by_group"]


def _codes(values) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray([str(x) for x in values])
    u, inv = np.unique(v, return_inverse=True)
    return u, inv.astype(np.int64)


def side_sedi_scores(emb: np.ndarray, subjects, expressions, *, block: int = 1024,
                     exclude=None) -> dict[str, np.ndarray]:
    """Cosine (dot product of the rows; L2-normalise first) of every pair i < j, by cell.

    Returns ``{"side", "sedi", "sise", "dide"}`` (1-D float arrays): SIDE = same subject, different
    expression; SEDI = same expression, different subject; SISE = same subject and expression;
    DIDE = both different. Rows whose expression is ``""`` (unlabelled) or whose embedding has a NaN
    (no face) join no pair. ``exclude``: optional labels (e.g. the video sequence); pairs with equal
    ``exclude`` labels are skipped (near-duplicate frames of one sequence).
    """
    e = np.asarray(emb, dtype=np.float32)
    n = e.shape[0]
    subj = np.asarray([str(s) for s in subjects])
    expr = np.asarray([str(x) for x in expressions])
    if subj.shape[0] != n or expr.shape[0] != n:
        raise ValueError(f"emb has {n} rows, subjects {subj.shape[0]}, expressions {expr.shape[0]}")
    ok = (expr != "") & ~np.isnan(e).any(axis=1)
    _, s = _codes(subj)
    _, x = _codes(expr)
    seq = _codes(exclude)[1] if exclude is not None else None
    e = np.where(ok[:, None], e, 0.0).astype(np.float32)
    cells: dict[str, list[np.ndarray]] = {"side": [], "sedi": [], "sise": [], "dide": []}
    cols = np.arange(n)[None, :]
    for i0 in range(0, n, block):
        i1 = min(n, i0 + block)
        sims = e[i0:i1] @ e.T
        valid = (cols > np.arange(i0, i1)[:, None]) & ok[i0:i1, None] & ok[None, :]
        if seq is not None:
            valid &= seq[i0:i1, None] != seq[None, :]
        ss = s[i0:i1, None] == s[None, :]
        sx = x[i0:i1, None] == x[None, :]
        cells["side"].append(sims[valid & ss & ~sx])
        cells["sedi"].append(sims[valid & ~ss & sx])
        cells["sise"].append(sims[valid & ss & sx])
        cells["dide"].append(sims[valid & ~ss & ~sx])
    return {k: (np.concatenate(v).astype(np.float64) if v else np.zeros(0)) for k, v in cells.items()}


def side_sedi_counts(subjects, expressions) -> dict[str, int]:
    """Pair counts per cell without embeddings (every row valid); for checks and planning."""
    _, s = _codes(subjects)
    _, x = _codes(expressions)
    iu = np.triu_indices(len(s), 1)
    ss, sx = s[iu[0]] == s[iu[1]], x[iu[0]] == x[iu[1]]
    return {"side": int(np.sum(ss & ~sx)), "sedi": int(np.sum(~ss & sx)), "sise": int(np.sum(ss & sx)),
            "dide": int(np.sum(~ss & ~sx))}


def summary(x) -> dict:
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "median": float(np.median(a)),
            "p05": float(np.percentile(a, 5)), "p95": float(np.percentile(a, 95)),
            "min": float(a.min()), "max": float(a.max())}


def separability(a, b) -> float | None:
    """AUC of telling sample ``a`` (as positives) from ``b``: P(a > b) + P(a == b) / 2.
    1.0 = every ``a`` above every ``b``; 0.5 = no separation; None when a sample is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0 or b.size == 0:
        return None
    return roc_auc(np.r_[a, b], np.r_[np.ones(a.size, bool), np.zeros(b.size, bool)])


def far_by_group(scores, labels, groups, thresholds: dict, *, confidence: float = 0.95,
                 min_impostors: int = 1) -> dict:
    """FAR and FRR per group at each named threshold (accept when ``score >= threshold``).

    ``groups``: one label per pair (see :func:`smile2pay_tools.datasets_id.pair_group`); ``""`` means
    unlabelled and is skipped. Returns ``{group: {"impostors", "genuine", "at": {name: {...}}}}``
    where each entry holds ``threshold, false_accepts, far, far_ci95, far_upper95, false_rejects, frr``
    (FAR fields None when the group has no impostor pair, FRR fields None with no genuine pair).
    Groups with fewer than ``min_impostors`` impostor pairs are still listed, flagged ``too_few``.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    g = np.asarray([str(v) for v in groups])
    if not (s.shape == y.shape == g.shape):
        raise ValueError(f"scores, labels, groups differ in length: {s.shape}, {y.shape}, {g.shape}")
    alpha = 1 - confidence
    out = {}
    for grp in sorted(set(g.tolist()) - {""}):
        m = g == grp
        imp, gen = s[m & ~y], s[m & y]
        row = {"impostors": int(imp.size), "genuine": int(gen.size), "too_few": bool(imp.size < min_impostors),
               "at": {}}
        for name, t in thresholds.items():
            if t is None:
                continue
            fa, fr = int(np.sum(imp >= t)), int(np.sum(gen < t))
            row["at"][name] = {
                "threshold": float(t),
                "false_accepts": fa,
                "far": fa / imp.size if imp.size else None,
                "far_ci95": list(clopper_pearson(fa, imp.size, alpha)) if imp.size else None,
                "far_upper95": far_upper_bound(fa, imp.size, confidence) if imp.size else None,
                "false_rejects": fr,
                "frr": fr / gen.size if gen.size else None,
            }
        out[grp] = row
    return out
