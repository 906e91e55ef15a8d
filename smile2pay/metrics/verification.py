"""Verification metrics: pure functions of similarity scores and same/different labels.

Conventions (every function):

* ``scores``: 1-D array of similarities, higher = more alike (e.g. cosine). A pair that could
  not be scored (no face) should be given a score below every real one (e.g. -1 for cosine),
  i.e. counted as a reject, never dropped.
* ``labels``: 1-D array, 1/True = genuine (same identity), 0/False = impostor.
* A pair is **accepted** when ``score >= threshold``. ``FAR`` is the share of impostor pairs
  accepted, ``TAR`` the share of genuine pairs accepted, ``FRR = 1 - TAR``.

No face code here: the benchmarks, ``smile2pay bench`` and calibration build on these.
"""
from __future__ import annotations

import math
from typing import Iterable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "Roc", "Det", "roc_curve", "roc_auc", "eer", "tar_at_far", "clopper_pearson", "far_upper_bound",
    "min_impostors", "best_threshold", "accuracy_at", "kfold_accuracy", "det_curve", "probit",
    "verification_report",
]

#: rule of three: with N trials and no error, the one-sided 95% upper bound on the rate is ~3/N
RULE_OF_THREE = 3.0


class Roc(NamedTuple):
    far: np.ndarray         # increasing, starts at 0
    tar: np.ndarray         # non-decreasing, starts at 0
    thresholds: np.ndarray  # decreasing, starts at +inf (accept nothing)


class Det(NamedTuple):
    far: np.ndarray
    frr: np.ndarray
    thresholds: np.ndarray
    far_deviate: np.ndarray  # probit(far): the normal-deviate axis of a DET plot (-inf at 0)
    frr_deviate: np.ndarray


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.shape[0]} vs {y.shape[0]}")
    if s.size == 0:
        raise ValueError("no scores")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; give unscorable pairs a reject score (e.g. -1) instead")
    if y.dtype != bool:
        u = np.unique(y)
        if not np.all(np.isin(u, (0, 1))):
            raise ValueError(f"labels must be 0/1 or bool, got values {u[:5].tolist()}")
        y = y.astype(bool)
    return s, y


def _need_both(y: np.ndarray) -> tuple[int, int]:
    p, n = int(y.sum()), int((~y).sum())
    if p == 0 or n == 0:
        raise ValueError(f"need genuine and impostor pairs, got {p} genuine and {n} impostor")
    return p, n


def roc_curve(scores, labels) -> Roc:
    """ROC at every distinct score: (FAR, TAR, thresholds), one point per threshold.

    Equal scores form one point (a tie is accepted or rejected as a block), so the curve is
    the same as ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.
    """
    s, y = _check(scores, labels)
    n_gen, n_imp = _need_both(y)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each block of equal scores
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return Roc(np.r_[0.0, fps / n_imp], np.r_[0.0, tps / n_gen], np.r_[np.inf, s[last]])


def roc_auc(scores, labels) -> float:
    """Area under the ROC (trapezoids; a tie between a genuine and an impostor counts 1/2),
    i.e. P(genuine score > impostor score) + P(equal) / 2."""
    far, tar, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2.0))


def eer(scores, labels) -> tuple[float, float]:
    """Equal error rate and its threshold: ``(eer, threshold)``.

    The EER is where FAR and FRR cross, linearly interpolated between the two ROC points that
    bracket the crossing; the threshold is that of the first point with FAR >= FRR (the
    operating point to use: accept when score >= threshold).
    """
    s, y = _check(scores, labels)
    n_gen, n_imp = _need_both(y)
    far, tar, thr = roc_curve(s, y)
    frr = 1.0 - tar
    # compare FAR and FRR on integer counts so that an exact crossing is found exactly
    fps = np.rint(far * n_imp).astype(np.int64)
    fns = n_gen - np.rint(tar * n_gen).astype(np.int64)
    i = int(np.argmax(fps * n_gen >= fns * n_imp))  # first point with FAR >= FRR (never 0: FRR(0) = 1)
    d = far - frr
    if d[i - 1] == d[i]:  # pragma: no cover - FAR and FRR cannot both stay put between points
        return float(far[i]), float(thr[i])
    t = min(max(d[i - 1] / (d[i - 1] - d[i]), 0.0), 1.0)
    value = far[i - 1] + t * (far[i] - far[i - 1])
    return float(value), float(thr[i])


def min_impostors(far: float) -> int:
    """Impostor comparisons needed before an observed FAR of 0 bounds the FAR at ``far``
    (95%, rule of three): ``ceil(3 / far)``."""
    if not (0 < far < 1):
        raise ValueError(f"far must be in (0, 1), got {far}")
    return int(math.ceil(RULE_OF_THREE / far - 1e-9))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided ``1 - alpha`` interval for a binomial rate k/n."""
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n <= 0 or not (0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def far_upper_bound(false_accepts: int, n_impostors: int, confidence: float = 0.95) -> float:
    """One-sided exact upper bound on the FAR (Clopper-Pearson). With 0 false accepts it is
    ``1 - (1 - confidence) ** (1 / n)``, about 3/n at 95% (the rule of three)."""
    from scipy.stats import beta

    k, n = int(false_accepts), int(n_impostors)
    if n <= 0 or not (0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    return 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))


def tar_at_far(scores, labels, far: float, confidence: float = 0.95) -> dict:
    """The operating point with the highest TAR whose observed FAR is <= ``far``.

    Returns a dict: ``far_target, tar, threshold`` (accept when score >= threshold; +inf when
    even the strictest distinct score lets in too many impostors), ``far_observed``,
    ``false_accepts``, ``true_accepts``, ``n_impostors``, ``n_genuine``, ``min_impostors``
    (rule of three), ``supported`` (``n_impostors >= 3 / far``: enough impostors to claim this
    FAR at 95% even with no false accept), ``far_ci95`` (Clopper-Pearson of the observed FAR),
    ``far_upper95`` (one-sided bound) and ``tar_ci95``.
    """
    if not (0 < far < 1):
        raise ValueError(f"far must be in (0, 1), got {far}")
    s, y = _check(scores, labels)
    n_gen, n_imp = _need_both(y)
    roc = roc_curve(s, y)
    fps = np.rint(roc.far * n_imp).astype(np.int64)
    tps = np.rint(roc.tar * n_gen).astype(np.int64)
    allowed = math.floor(far * n_imp * (1 + 1e-9))
    i = int(np.flatnonzero(fps <= allowed)[-1])  # fps is non-decreasing; index 0 (fps=0) always qualifies
    fa, ta = int(fps[i]), int(tps[i])
    alpha = 1 - confidence
    return {
        "far_target": far,
        "tar": ta / n_gen,
        "threshold": float(roc.thresholds[i]),
        "far_observed": fa / n_imp,
        "false_accepts": fa,
        "true_accepts": ta,
        "n_impostors": n_imp,
        "n_genuine": n_gen,
        "min_impostors": min_impostors(far),
        "supported": bool(n_imp >= RULE_OF_THREE / far * (1 - 1e-9)),
        "far_ci95": list(clopper_pearson(fa, n_imp, alpha)),
        "far_upper95": far_upper_bound(fa, n_imp, confidence),
        "tar_ci95": list(clopper_pearson(ta, n_gen, alpha)),
    }


def accuracy_at(scores, labels, threshold: float) -> float:
    """Share of pairs classified correctly when accepting ``score >= threshold``."""
    s, y = _check(scores, labels)
    return float(np.mean((s >= threshold) == y))


def best_threshold(scores, labels) -> tuple[float, float]:
    """Threshold of highest accuracy on these pairs: ``(threshold, accuracy)``.

    Candidates are the midpoints between consecutive distinct scores (plus one below the lowest
    and one above the highest), so the threshold does not sit on a training score. Among equally
    accurate candidates the middle one (by rank) is taken.
    """
    s, y = _check(scores, labels)
    u = np.unique(s)
    if u.size == 1:
        cand = np.array([u[0] - 1.0, u[0] + 1.0])
    else:
        gap = max(float(np.min(np.diff(u))), 1e-12)
        cand = np.r_[u[0] - gap, (u[1:] + u[:-1]) / 2.0, u[-1] + gap]
    gen = np.sort(s[y])
    imp = np.sort(s[~y])
    # accepted genuine: gen >= c; rejected impostors: imp < c
    correct = (gen.size - np.searchsorted(gen, cand, side="left")) + np.searchsorted(imp, cand, side="left")
    best = np.flatnonzero(correct == correct.max())
    j = int(best[(best.size - 1) // 2])
    return float(cand[j]), float(correct[j] / s.size)


def kfold_accuracy(scores, labels, folds) -> dict:
    """LFW protocol: for each fold, choose the threshold on the other folds (best accuracy),
    measure accuracy on the held-out fold. Returns ``mean``, ``std`` (population std over
    folds, as LFW results and InsightFace report it), ``per_fold``, ``thresholds``, ``folds``."""
    s, y = _check(scores, labels)
    f = np.asarray(folds).ravel()
    if f.shape != s.shape:
        raise ValueError(f"folds and scores differ in length: {f.shape[0]} vs {s.shape[0]}")
    ids = np.unique(f)
    if ids.size < 2:
        raise ValueError("need at least 2 folds")
    accs, thrs = [], []
    for k in ids:
        test = f == k
        thr, _ = best_threshold(s[~test], y[~test])
        thrs.append(thr)
        accs.append(float(np.mean((s[test] >= thr) == y[test])))
    a = np.asarray(accs)
    return {"mean": float(a.mean()), "std": float(a.std()), "per_fold": accs, "thresholds": thrs,
            "folds": [x.item() if hasattr(x, "item") else x for x in ids]}


def probit(p) -> np.ndarray:
    """Standard normal deviate of a probability (the axes of a DET plot); -inf at 0, +inf at 1."""
    from scipy.special import ndtri

    return ndtri(np.asarray(p, dtype=np.float64))


def det_curve(scores, labels) -> Det:
    """DET data: FAR and FRR at every distinct score, and their normal deviates."""
    far, tar, thr = roc_curve(scores, labels)
    frr = 1.0 - tar
    return Det(far, frr, thr, probit(far), probit(frr))


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def verification_report(scores, labels, folds: Sequence | np.ndarray | None = None,
                        fars: Iterable[float] = (1e-2, 1e-3, 1e-4, 1e-5)) -> dict:
    """Everything above in one JSON-ready dict (infinite thresholds become ``None``).

    Keys: ``n_pairs, n_genuine, n_impostors, auc, eer, eer_threshold, tar_at_far`` (list, one
    per FAR), ``best_accuracy`` (threshold fit on all pairs: optimistic), ``kfold`` (when
    ``folds`` is given), ``genuine`` / ``impostor`` score statistics and ``d_prime``.
    """
    s, y = _check(scores, labels)
    n_gen, n_imp = _need_both(y)
    e, e_thr = eer(s, y)
    thr, acc = best_threshold(s, y)
    ops = []
    for far in fars:
        op = tar_at_far(s, y, far)
        op["threshold"] = _finite(op["threshold"])
        ops.append(op)
    g, i = s[y], s[~y]
    rep = {
        "n_pairs": int(s.size), "n_genuine": n_gen, "n_impostors": n_imp,
        "auc": roc_auc(s, y), "eer": e, "eer_threshold": _finite(e_thr),
        "tar_at_far": ops,
        "best_accuracy": {"accuracy": acc, "threshold": thr, "note": "threshold fit on all pairs (optimistic)"},
        "genuine": {"mean": float(g.mean()), "std": float(g.std()), "min": float(g.min())},
        "impostor": {"mean": float(i.mean()), "std": float(i.std()), "max": float(i.max())},
        "d_prime": float((g.mean() - i.mean()) / math.sqrt(0.5 * (g.var() + i.var()))) if (g.var() + i.var()) > 0
        else None,
    }
    if folds is not None:
        rep["kfold"] = kfold_accuracy(s, y, folds)
    return rep
