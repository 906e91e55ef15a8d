"""The AU stage's fusion of the expression classifier's P(happy) into AU6 / AU12 (pure maths, no weights)."""
import math

import numpy as np
import pytest

from smile2pay.vision.au import FUSED_AUS, FUSION_WEIGHT, centre_crop, fuse_happy


def _hand(p, h, w):
    lg = lambda x: math.log(x / (1 - x))  # noqa: E731
    return 1 / (1 + math.exp(-(w * lg(p) + (1 - w) * lg(h))))


def test_fusion_by_hand_and_only_on_the_smile_aus():
    probs = {"AU1": 0.3, "AU6": 0.2, "AU12": 0.9, "AU25": 0.6}
    out = fuse_happy(probs, 0.7, 0.8)
    assert out["AU6"] == pytest.approx(_hand(0.2, 0.7, 0.8), abs=1e-12)
    assert out["AU12"] == pytest.approx(_hand(0.9, 0.7, 0.8), abs=1e-12)
    assert {k: out[k] for k in ("AU1", "AU25")} == {"AU1": 0.3, "AU25": 0.6}
    assert probs["AU6"] == 0.2                              # the input is not modified
    assert FUSED_AUS == ("AU6", "AU12") and 0.5 <= FUSION_WEIGHT < 1.0


def test_weight_one_is_the_model_alone_and_half_is_the_logit_mean():
    probs = {"AU6": 0.2, "AU12": 0.9}
    assert fuse_happy(probs, 0.99, 1.0) == probs
    # w = 0.5: logit mean; with happy = p the value is unchanged
    assert fuse_happy({"AU6": 0.3}, 0.3, 0.5)["AU6"] == pytest.approx(0.3)


def test_min_of_fused_is_the_fused_smile_score_and_monotone():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p6, p12, h = rng.uniform(0.001, 0.999, 3)
        out = fuse_happy({"AU6": p6, "AU12": p12}, h)
        assert min(out["AU6"], out["AU12"]) == pytest.approx(_hand(min(p6, p12), h, FUSION_WEIGHT), abs=1e-9)
        higher = fuse_happy({"AU6": p6, "AU12": p12}, min(h + 0.05, 0.999))
        assert higher["AU6"] >= out["AU6"] and higher["AU12"] >= out["AU12"]


def test_saturated_inputs_stay_finite():
    out = fuse_happy({"AU6": 0.0, "AU12": 1.0}, 1.0)
    assert all(0.0 < v < 1.0 and math.isfinite(v) for v in out.values())


def test_benchmark_fusion_is_the_products():
    """The benchmarks fuse precomputed matrices (smile2pay_tools.bench.au_population.fuse_matrix): same numbers."""
    from smile2pay_tools.bench.au_population import fuse_matrix

    names = ["AU1", "AU6", "AU12"]
    rng = np.random.default_rng(1)
    P = rng.uniform(0.01, 0.99, (50, 3)).astype(np.float32)
    H = rng.uniform(0.0, 1.0, 50)
    Q = fuse_matrix(P, names, H)
    for i in range(50):
        ref = fuse_happy(dict(zip(names, map(float, P[i]))), float(H[i]))
        assert Q[i].tolist() == pytest.approx([ref[n] for n in names], abs=1e-5)
    assert fuse_matrix(P, names, None) is P


def test_centre_crop_is_the_unpadded_template():
    crop = np.zeros((112, 112, 3), np.uint8)
    assert centre_crop(crop, 0.15).shape == (86, 86, 3)
    assert centre_crop(crop, 0.0).shape == (112, 112, 3)


def test_au_fusion_setting_from_env():
    from smile2pay.config import Settings
    from smile2pay.errors import ConfigError

    assert Settings.from_env({}).au_fusion is True
    assert Settings.from_env({"SMILE2PAY_AU_FUSION": "0"}).au_fusion is False
    with pytest.raises(ConfigError):
        Settings.from_env({"SMILE2PAY_AU_FUSION": "maybe"})


def test_one_clipped_logit_for_fusion_rise_and_engine():
    """smile2pay.metrics.probability is the one clipped logit / sigmoid: it matches scipy inside the clip, stays
    finite at 0 and 1, and the engine's scalar copy, the calibration's rise and the fusion agree with it."""
    from scipy.special import expit
    from scipy.special import logit as sp_logit

    from smile2pay.decision import au_calibration, engine
    from smile2pay.metrics.probability import PROB_CLIP, logit, sigmoid
    from smile2pay.vision.au import fuse_logits

    p = np.array([0.0, 1e-9, PROB_CLIP, 0.01, 0.3, 0.5, 0.77, 0.999, 1.0 - PROB_CLIP, 1.0])
    inside = (p >= PROB_CLIP) & (p <= 1 - PROB_CLIP)
    assert np.allclose(logit(p)[inside], sp_logit(p[inside]), rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(logit(p))) and logit(0.0) == logit(PROB_CLIP)
    assert logit(1.0) == pytest.approx(-logit(0.0), abs=1e-9)
    x = np.array([-800.0, -30.0, -1.5, 0.0, 2.0, 40.0, 800.0])
    assert np.allclose(sigmoid(x), expit(x), rtol=1e-15, atol=0)
    assert sigmoid(-800.0) == 0.0 and sigmoid(800.0) == 1.0
    assert [engine._logit(v) for v in p] == pytest.approx(logit(p).tolist(), abs=1e-12)
    assert au_calibration.rise(p, 0.5, "logit") == pytest.approx(logit(p) - 0.0, abs=1e-12)
    # the fusion by hand with the same clip: 0.8 logit(AU) + 0.2 logit(happy)
    by_hand = expit(0.8 * sp_logit(1 - PROB_CLIP) + 0.2 * sp_logit(PROB_CLIP))
    assert float(fuse_logits(1.0, 0.0, 0.8)) == pytest.approx(by_hand)
