"""Identity threshold self-calibration (issue 20): the tail maths on synthetic scores checked against
closed forms / brute force, and the estimate on synthetic populations."""

import numpy as np
import pytest

from smile2pay.decision import population as P
from smile2pay.metrics.tail import empirical_threshold, robust_loc_scale, tail_shape


# -- maths ---------------------------------------------------------------------------------------
def test_robust_loc_scale_is_mean_and_sigma_of_a_normal():
    x = np.random.default_rng(0).normal(0.2, 0.07, 200_000)
    loc, scale = robust_loc_scale(x)
    assert loc == pytest.approx(0.2, abs=1e-3) and scale == pytest.approx(0.07, rel=0.01)


def test_empirical_threshold_accepts_at_most_far():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    t = empirical_threshold(s, 0.1)           # one accept allowed: 0.9 only
    assert 0.8 < t <= 0.9 and (s >= t).sum() == 1
    t = empirical_threshold(s, 0.25)          # 2.5 -> two accepts
    assert (s >= t).sum() == 2


def test_tail_shape_z_of_a_normal():
    x = np.random.default_rng(1).normal(0.0, 1.0, 2_000_000)
    z = tail_shape(x, [1e-3])["z"]["0.001"]
    assert z == pytest.approx(3.09, abs=0.05)   # normal 1e-3 upper quantile


def test_pot_recovers_an_exponential_tail():
    beta = 0.05
    x = np.sort(np.random.default_rng(2).exponential(beta, 20_000))[::-1]
    t, p_u = P._pot(x, None, 1e-4)             # 20,000 pairs: fitted above the top 50, extrapolated
    assert p_u == pytest.approx(50 / 20_000)
    assert t == pytest.approx(beta * np.log(1e4), rel=0.15)
    t_emp, p = P._pot(x, None, 1e-2)           # 200 exceedances: the empirical quantile itself
    assert p == 1e-2 and (x >= t_emp).sum() <= 200


def test_cross_user_scores_is_max_over_template_blocks():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(9, 16))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    owner = np.array([2, 0, 1, 0, 2, 3, 1, 3, 3])
    s, a, b = P.cross_user_scores(e, owner)
    assert len(s) == 6
    for v, i, j in zip(s, a, b):
        brute = max(float(e[p] @ e[q]) for p in np.where(owner == i)[0] for q in np.where(owner == j)[0])
        assert v == pytest.approx(brute, abs=1e-6)


def _population(n, shift, rng, d=512):
    """Unit vectors around a common direction: the larger ``shift``, the more alike two people look."""
    m = np.zeros(d)
    m[0] = 1.0
    x = rng.normal(size=(n, d)) / np.sqrt(d) + shift * m
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_estimate_raises_for_a_harder_population_and_lowers_only_with_enough_users():
    rng = np.random.default_rng(4)
    kw = dict(far=1e-3, shipped=0.45, floor=0.30, z=3.7, bootstrap=50)
    hard = _population(300, 1.0, rng)           # impostors far more alike than the references
    r = P.estimate(hard, np.arange(300), **kw)
    held = _population(2000, 1.0, rng)          # new people of the same population
    imp = (held[:1000] @ held[1000:].T).ravel()
    assert r.source == "self-calibrated" and r.threshold > kw["shipped"]
    assert (imp >= r.threshold).mean() <= 3e-3                  # the FAR holds (within 3x)
    assert (imp >= kw["shipped"]).mean() > 10 * kw["far"]       # ... where the shipped one does not
    easy = _population(300, 0.0, rng)
    r = P.estimate(easy, np.arange(300), **kw)
    assert kw["floor"] <= r.threshold < kw["shipped"] and r.method.startswith("tail")
    r = P.estimate(easy[:20], np.arange(20), **kw)              # 20 users: never lowered
    assert r.threshold == kw["shipped"] and r.source == "shipped" and r.method.startswith("transfer")


def test_two_users_give_no_bound_and_json_safe_report():
    import json

    e = np.eye(4, dtype=np.float32)[:2]
    r = P.estimate(e, np.array(["a", "b"]), far=1e-4, shipped=0.41, floor=0.28, z=4.5)
    assert r.threshold == 0.41 and r.pairs == 1
    json.dumps(P.summary(r), allow_nan=False)        # no inf / NaN reaches /healthz or a Decision
