"""Calibration of probabilities: reliability bins and expected calibration error (ECE)."""
from __future__ import annotations

import numpy as np


def reliability_bins(p, y, n_bins: int = 10) -> list[dict]:
    """Equal-width bins over [0, 1]: count, mean predicted probability and observed frequency per bin."""
    p = np.asarray(p, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length: {p.shape} vs {y.shape}")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    out = []
    for k in range(n_bins):
        m = b == k
        n = int(m.sum())
        out.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "n": n,
                    "mean_p": float(p[m].mean()) if n else None, "freq": float(y[m].mean()) if n else None})
    return out


def expected_calibration_error(p, y, n_bins: int = 10) -> float:
    """ECE = sum_k (n_k / N) * |freq_k - mean_p_k| over equal-width bins (Guo et al. 2017)."""
    bins = reliability_bins(p, y, n_bins)
    n = sum(b["n"] for b in bins)
    if n == 0:
        raise ValueError("no samples")
    return float(sum(b["n"] / n * abs(b["freq"] - b["mean_p"]) for b in bins if b["n"]))
