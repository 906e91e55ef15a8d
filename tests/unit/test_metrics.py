"""smile2pay.metrics: checked against scikit-learn/SciPy and against small cases worked by hand.

Each hand case is chosen so that a plausible mistake (ties split, threshold taken on the test
fold, highest instead of lowest admissible threshold, ...) gives a different number.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import det_curve as sk_det_curve
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from smile2pay.metrics import (accuracy_at, best_threshold, clopper_pearson, det_curve, eer, far_upper_bound,
                               kfold_accuracy, min_impostors, probit, roc_auc, roc_curve, tar_at_far,
                               verification_report)

# 3 genuine, 3 impostor, with a genuine/impostor tie at 0.8 and at 0.5
TIES_S = np.array([0.9, 0.8, 0.8, 0.5, 0.5, 0.1])
TIES_Y = np.array([1, 1, 0, 1, 0, 0])


def _random(seed=0, n_gen=400, n_imp=1600, decimals=2):
    rng = np.random.default_rng(seed)
    s = np.r_[rng.normal(0.6, 0.15, n_gen), rng.normal(0.0, 0.12, n_imp)]
    y = np.r_[np.ones(n_gen, int), np.zeros(n_imp, int)]
    return np.round(s, decimals), y  # rounding creates many ties


# ------------------------------------------------------------------------------------------ ROC / AUC
def test_roc_ties_by_hand():
    far, tar, thr = roc_curve(TIES_S, TIES_Y)
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.8, 0.5, 0.1])
    np.testing.assert_allclose(far, [0, 0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 1, 1])


def test_auc_ties_by_hand():
    # Mann-Whitney: 0.9 beats 3; 0.8 ties 1 beats 2 -> 2.5; 0.5 ties 1 beats 1 -> 1.5; 7 of 9 pairs
    assert roc_auc(TIES_S, TIES_Y) == pytest.approx(7 / 9, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_matches_sklearn(seed):
    s, y = _random(seed)
    fpr, tpr, thr = sk_roc_curve(y, s, drop_intermediate=False)
    far, tar, mthr = roc_curve(s, y)
    np.testing.assert_allclose(far, fpr, atol=1e-12)
    np.testing.assert_allclose(tar, tpr, atol=1e-12)
    np.testing.assert_allclose(mthr[1:], thr[1:])
    assert mthr[0] == np.inf
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_label_types_and_order_do_not_matter():
    s, y = _random(3)
    perm = np.random.default_rng(0).permutation(s.size)
    a = roc_auc(s, y)
    assert roc_auc(s[perm], y[perm].astype(bool)) == pytest.approx(a, abs=1e-12)


# ------------------------------------------------------------------------------------------ EER
def test_eer_exact_crossing():
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 0, 0])
    # at threshold 0.7: FAR = 1/3 (0.7), FRR = 1/3 (0.3)
    e, t = eer(s, y)
    assert e == pytest.approx(1 / 3)
    assert t == 0.7


def test_eer_interpolated():
    s = np.array([0.9, 0.5, 0.6, 0.4, 0.3, 0.1])
    y = np.array([1, 1, 0, 0, 0, 0])
    # (FAR, FRR): t=0.6 -> (0.25, 0.5); t=0.5 -> (0.25, 0.0); the lines cross at 0.25
    e, t = eer(s, y)
    assert e == pytest.approx(0.25)
    assert t == 0.5


def test_eer_against_brute_force():
    s, y = _random(4)
    e, t = eer(s, y)
    far = np.mean(s[y == 0] >= t)
    frr = np.mean(s[y == 1] < t)
    # the interpolated EER lies between FAR and FRR of the reported operating point's neighbourhood
    assert abs(far - frr) < 0.02
    assert min(far, frr) - 0.02 <= e <= max(far, frr) + 0.02


# ------------------------------------------------------------------------------------------ TAR @ FAR
def _tar_far_fixture():
    imp = np.arange(1000) / 1000.0                      # 0.000 .. 0.999
    gen = np.array([0.995, 0.9905, 0.9895, 0.5])
    return np.r_[gen, imp], np.r_[np.ones(4, int), np.zeros(1000, int)]


def test_tar_at_far_takes_lowest_admissible_threshold():
    s, y = _tar_far_fixture()
    op = tar_at_far(s, y, 1e-2)
    # 10 impostors (0.990..0.999) may be accepted; 0.9895 (genuine) still lets in only those 10,
    # the next lower score (0.989, impostor) would be the 11th
    assert op["threshold"] == 0.9895
    assert op["false_accepts"] == 10
    assert op["tar"] == 0.75
    assert op["true_accepts"] == 3
    assert op["far_observed"] == 0.01
    assert op["n_impostors"] == 1000 and op["n_genuine"] == 4
    assert op["supported"] is True              # 1000 >= 3 / 0.01
    assert op["min_impostors"] == 300


def test_tar_at_far_unsupported_when_too_few_impostors():
    s, y = _tar_far_fixture()
    op = tar_at_far(s, y, 1e-3)
    assert op["false_accepts"] == 1 and op["threshold"] == 0.999 and op["tar"] == 0.0
    assert op["supported"] is False             # 1000 < 3000
    op4 = tar_at_far(s, y, 1e-4)                # no impostor may pass: threshold above 0.999
    assert op4["false_accepts"] == 0 and op4["threshold"] == np.inf and op4["tar"] == 0.0
    assert op4["far_upper95"] == pytest.approx(1 - 0.05 ** (1 / 1000))


def test_tar_at_far_against_brute_force():
    s, y = _random(5, n_gen=300, n_imp=3000, decimals=3)
    gen, imp = s[y == 1], s[y == 0]
    for far in (1e-1, 1e-2, 3e-3, 1e-3):
        admissible = [t for t in np.unique(s) if np.sum(imp >= t) <= np.floor(far * imp.size + 1e-9)]
        best_tar = max(np.mean(gen >= t) for t in admissible)
        op = tar_at_far(s, y, far)
        assert op["tar"] == pytest.approx(best_tar)
        assert op["threshold"] == min(admissible)
        assert op["far_observed"] <= far + 1e-12
        assert op["supported"] == (3000 >= 3 / far)


def test_min_impostors_rule_of_three():
    assert min_impostors(1e-3) == 3000
    assert min_impostors(1e-4) == 30000
    assert min_impostors(3e-3) == 1000


# ------------------------------------------------------------------------------------------ intervals
def test_clopper_pearson_closed_forms():
    n = 3000
    lo, hi = clopper_pearson(0, n)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    lo, hi = clopper_pearson(n, n)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / n), rel=1e-9)
    # rule of three: the one-sided 95% bound with no false accept is ~3/N
    assert far_upper_bound(0, n) == pytest.approx(3 / n, rel=0.01)


def test_clopper_pearson_tabulated_and_definition():
    from scipy.stats import binom

    lo, hi = clopper_pearson(5, 10)           # textbook: (0.1871, 0.8129)
    assert lo == pytest.approx(0.187086, abs=1e-5) and hi == pytest.approx(0.812914, abs=1e-5)
    k, n = 3, 3000
    lo, hi = clopper_pearson(k, n)
    assert binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-6)       # P(X <= k | hi) = alpha/2
    assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-6)    # P(X >= k | lo) = alpha/2
    assert lo < k / n < hi
    with pytest.raises(ValueError):
        clopper_pearson(4, 3)


# ------------------------------------------------------------------------------------------ accuracy
def test_best_threshold_midpoint_and_tie_break():
    s = np.array([0.6, 0.35, 0.4, 0.3])
    y = np.array([1, 1, 0, 0])
    # candidates: <0.3 (2/4), 0.325 (3/4), 0.375 (2/4), 0.5 (3/4), >0.6 (2/4) -> tie, first of the middle
    t, acc = best_threshold(s, y)
    assert acc == 0.75 and t == pytest.approx(0.325)
    assert accuracy_at(s, y, t) == 0.75


def test_kfold_threshold_comes_from_the_other_folds():
    # fold 0 separable at 0.5; fold 1 separable at 0.425 only. Thresholds chosen on the held-out
    # fold itself would give 100% on both.
    s = np.array([0.9, 0.8, 0.2, 0.1, 0.6, 0.45, 0.4, 0.3])
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    f = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    r = kfold_accuracy(s, y, f)
    np.testing.assert_allclose(r["thresholds"], [0.425, 0.5])
    np.testing.assert_allclose(r["per_fold"], [1.0, 0.75])
    assert r["mean"] == pytest.approx(0.875) and r["std"] == pytest.approx(0.125)


def test_kfold_ten_folds_close_to_best_accuracy():
    s, y = _random(6, n_gen=3000, n_imp=3000, decimals=4)
    folds = np.r_[np.arange(3000) % 10, np.arange(3000) % 10]
    r = kfold_accuracy(s, y, folds)
    _, best = best_threshold(s, y)
    assert len(r["per_fold"]) == 10
    assert r["mean"] <= best + 1e-12 and r["mean"] > best - 0.01


# ------------------------------------------------------------------------------------------ DET
def test_det_matches_sklearn_points():
    s, y = _random(7)
    fpr, fnr, thr = sk_det_curve(y, s)
    d = det_curve(s, y)
    for a, b, t in zip(fpr, fnr, thr):
        j = int(np.flatnonzero(d.thresholds == t)[0])
        assert d.far[j] == pytest.approx(a) and d.frr[j] == pytest.approx(b)
    assert probit(0.5) == pytest.approx(0.0)
    assert probit(0.15865525393145707) == pytest.approx(-1.0)
    assert d.far_deviate[0] == -np.inf                  # FAR 0 -> -inf (left off a plot)


# ------------------------------------------------------------------------------------------ report
def test_verification_report_json_ready():
    s, y = _random(8)
    folds = np.arange(s.size) % 10
    rep = verification_report(s, y, folds=folds, fars=(1e-2, 1e-3))
    json.dumps(rep, allow_nan=False)
    assert rep["auc"] == pytest.approx(roc_auc_score(y, s))
    assert [op["far_target"] for op in rep["tar_at_far"]] == [1e-2, 1e-3]
    assert rep["tar_at_far"][0]["supported"] is True and rep["tar_at_far"][1]["supported"] is False
    assert rep["n_genuine"] == 400 and rep["n_impostors"] == 1600
    assert 0.9 < rep["kfold"]["mean"] <= 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        roc_curve([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2], [1, 2])
