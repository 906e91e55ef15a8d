"""The identity-feature smile teacher's maths (smile2pay_tools.train.id_teacher, au_mix distillation) and the
ranking figure of benchmarks/au_identity_features.py, on small synthetic arrays checked by hand."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from smile2pay_tools.train.au_mix import MixConfig, _distilled
from smile2pay_tools.train.id_teacher import pool_bands

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("au_identity_features", ROOT / "benchmarks" / "au_identity_features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pool_bands_by_hand():
    # one image, one channel, 7 rows: bands are rows 0-2, 3-4, 5-6 (np.array_split of 7 into 3)
    t = np.arange(7 * 2, dtype=np.float32).reshape(1, 1, 7, 2)
    out = pool_bands(t)
    assert out.shape == (1, 4)
    rows = t[0, 0]
    assert out[0, 0] == pytest.approx(rows.mean())
    assert out[0, 1] == pytest.approx(rows[0:3].mean())
    assert out[0, 2] == pytest.approx(rows[3:5].mean())
    assert out[0, 3] == pytest.approx(rows[5:7].mean())


def test_pool_bands_keeps_channels_in_blocks():
    t = np.zeros((2, 3, 14, 14), np.float32)
    t[:, 1] = 1.0                       # channel 1 everywhere 1
    out = pool_bands(t)
    assert out.shape == (2, 12)
    # block layout: [global c0 c1 c2, band0 c0 c1 c2, band1 ..., band2 ...]
    np.testing.assert_allclose(out[0], [0, 1, 0] * 4, atol=1e-6)


def test_distilled_mixes_only_rows_the_teacher_scored():
    cfg = MixConfig(distill_weight=0.5)
    t = np.zeros((3, 4), np.float32)
    t[:, 1] = [1.0, 0.0, 1.0]           # AU6 column 1, AU12 column 2
    t[:, 2] = [1.0, 0.0, 1.0]
    idx = np.array([10, 11, 12])
    teacher = (np.array([12, 10]), np.array([0.0, np.log(3.0)], np.float32))   # row 12: p 0.5, row 10: p 0.75
    out = _distilled(t.copy(), idx, teacher, cfg, 1, 2)
    assert out[0, 1] == pytest.approx(0.5 * 1.0 + 0.5 * 0.75)
    assert out[2, 2] == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert out[1].tolist() == t[1].tolist()      # no teacher score: the human label stays
    assert out[:, [0, 3]].tolist() == t[:, [0, 3]].tolist()   # other AUs untouched


def test_distilled_off_is_identity():
    t = np.random.RandomState(0).rand(5, 4).astype(np.float32)
    same = _distilled(t.copy(), np.arange(5), (np.arange(5), np.zeros(5, np.float32)), MixConfig(), 1, 2)
    assert np.array_equal(same, t)


def test_tpr_at_fpr_by_hand():
    b = _bench()
    y = np.array([True] * 4 + [False] * 100)
    s = np.concatenate([[5.0, 4.0, 0.95, 0.5], np.linspace(0.0, 0.99, 100)])
    # 2 % of 100 negatives may pass: the threshold is the third-highest negative (0.97); smiles above it: 5, 4
    assert b.tpr_at_fpr(y, s, 0.02) == pytest.approx(0.5)
    assert b.tpr_at_fpr(y, s, 0.0) == pytest.approx(0.5)      # above the top negative 0.99


def test_config_signature_unchanged_when_distillation_is_off():
    """v3 checkpoints resume only when the config dict is the same: the new field is left out while it is 0."""
    assert "distill_weight" not in MixConfig().to_dict()
    assert MixConfig(distill_weight=0.5).to_dict()["distill_weight"] == 0.5
    # load_net rebuilds the config from the dict (aus as a tuple)
    for cfg in (MixConfig(), MixConfig(distill_weight=0.5)):
        assert MixConfig(**{k: (tuple(v) if k == "aus" else v) for k, v in cfg.to_dict().items()}) == cfg


def test_lfw_smile_labels_by_hand_and_shared_by_teacher_and_training():
    """One rule picks LFW's labelled faces for the AU model's targets and for the teacher's rows."""
    from smile2pay_tools.train.au_mix import human_labels, lfw_smile_labels
    from smile2pay_tools.train.id_teacher import teacher_rows

    lfw = {"label": np.array(["happiness", "neutral", "", "anger", "happiness", "", "surprise"]),
           "smile": np.array([-1, -1, 1, -1, 0, -1, 1])}
    mask = np.array([True, True, True, True, True, True, False])
    idx, y = lfw_smile_labels(lfw, mask)
    # row 5: no label at all; row 6: outside the mask; Morishita's label wins over muxspace's (row 4)
    assert idx.tolist() == [0, 1, 2, 3, 4] and y.tolist() == [1, 0, 1, 0, 0]
    fer = {"votes": np.zeros((0, 10), np.float32)}
    _, _, li, ly = teacher_rows(fer, np.zeros(0, bool), lfw, mask)
    assert li.tolist() == idx.tolist() and ly.tolist() == y.astype(int).tolist()
    (_, hidx, t, _), = human_labels(None, None, lfw, mask, MixConfig())
    assert hidx.tolist() == idx.tolist()


def test_fuse_probe_matrix_is_the_engines_fusion():
    """The benchmarks' vectorised fusion equals the decision's own (smile2pay.decision.engine.fuse_probe)."""
    from smile2pay.decision.engine import fuse_probe
    from smile2pay_tools.bench.au_population import fuse_probe_matrix

    rng = np.random.RandomState(0)
    names = ["AU1", "AU6", "AU12"]
    P = rng.uniform(0, 1, (50, 3)).astype(np.float32)
    P[0] = [0.0, 0.0, 1.0]                                   # clipped ends
    z = rng.normal(0, 8, 50)
    Q = fuse_probe_matrix(P, names, z, 0.2)
    for i in range(50):
        ref = fuse_probe(dict(zip(names, map(float, P[i]))), float(z[i]), 0.2, ("AU6", "AU12"))
        assert np.allclose(Q[i], [ref[n] for n in names], atol=1e-6)
    assert np.array_equal(Q[:, 0], P[:, 0])                  # an AU not fused is left as it was


def test_ck_smile_coded():
    from smile2pay_tools.bench.au_population import ck_smile_coded

    got = ck_smile_coded({"aus": np.array(["6;12", "12", "1;6;12;25", "", "16;2"])})
    assert got.tolist() == [True, False, True, False, False]


def test_soft_rows_by_hand():
    """Soft targets become weighted 0/1 rows: t > 0 a positive of weight t, t < 1 a negative of weight 1 - t."""
    from smile2pay_tools.train.id_teacher import soft_rows

    X = np.arange(8, dtype=np.float64).reshape(4, 2)
    Xs, ys, ws = soft_rows(X, np.array([1.0, 0.0, 0.6, 0.25]))
    assert Xs.tolist() == [[0, 1], [4, 5], [6, 7], [2, 3], [4, 5], [6, 7]]
    assert ys.tolist() == [1, 1, 1, 0, 0, 0]
    assert np.allclose(ws, [1.0, 0.6, 0.25, 1.0, 0.4, 0.75])
    for bad in (np.array([0.5, 1.2, 0, 0]), np.array([0.5, np.nan, 0, 0]), np.array([0.5, 0.5])):
        with pytest.raises(ValueError):
            soft_rows(X, bad)


def test_probe_soft_targets_match_the_cross_entropy_minimum():
    """probe_params on 0/1 targets is sklearn's plain fit; on soft targets it minimises the soft cross-entropy
    (checked against a direct minimisation of the same penalised objective with scipy)."""
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from smile2pay_tools.train.id_teacher import TEACHER_C, probe_params

    rng = np.random.RandomState(1)
    X = rng.normal(0, 1, (300, 5)).astype(np.float32)
    X[:, 0] *= 3.0
    y01 = (X[:, 1] + 0.5 * X[:, 2] + rng.normal(0, 1, 300) > 0).astype(int)
    w, b = probe_params(X, y01)
    sc = StandardScaler().fit(X)
    ref = LogisticRegression(C=TEACHER_C, max_iter=3000).fit(sc.transform(X), y01)
    assert np.allclose(X @ w + b, ref.decision_function(sc.transform(X)), atol=1e-4)

    t = 1.0 / (1.0 + np.exp(-(X[:, 1] - X[:, 3])))                  # soft targets
    w, b = probe_params(X, t)
    Z = sc.transform(X).astype(np.float64)

    def loss(p):                                                      # sklearn's objective: 0.5|w|^2 + C sum CE
        z = Z @ p[:-1] + p[-1]
        return 0.5 * p[:-1] @ p[:-1] + TEACHER_C * np.sum(np.logaddexp(0, z) - t * z)

    opt = minimize(loss, np.zeros(6), method="BFGS", options={"gtol": 1e-10})
    assert np.allclose(X @ w + b, Z @ opt.x[:-1] + opt.x[-1], atol=1e-3)


def test_pick_single_frame_weight_by_hand():
    """Single frames' probe weight: the most FER+ Valid smiles, then the fewest others, then the smaller weight;
    never 0 (the AU stage alone) and never a weight whose calibration failed."""
    pick = _bench().pick_single_frame_weight

    def g(tpr, fpr):
        return {"single_frame_calibration": {"fer_valid": {"tpr": tpr, "fpr": fpr}}}

    gate = {"0.0": g(0.99, 0.0), "0.2": g(0.90, 0.01), "0.4": g(0.93, 0.019), "0.6": g(0.93, 0.015),
            "0.8": g(0.93, 0.015), "0.9": {"error": "no operating point"}}
    assert pick(gate) == "0.6"
    gate["0.8"] = g(0.931, 0.02)
    assert pick(gate) == "0.8"
    with pytest.raises(SystemExit):
        pick({"0.0": g(0.9, 0.0), "0.5": {"error": "x"}})
