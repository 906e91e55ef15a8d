"""The smile gate's calibration (pure maths on small arrays), its agreement with the decision engine,
and the shipped calibration's gate sections."""
import numpy as np
import pytest

from smile2pay.decision.au_calibration import Probes, calibrate, calibration_section, gate, rates
from smile2pay.decision.engine import FrameObs, decide, judge_frames
from smile2pay.decision.policy import Policy
from smile2pay.decision.rules import parse_rule
from smile2pay.metrics.calibration_error import expected_calibration_error, reliability_bins

RULE = parse_rule("AU6+AU12")


def _policy(t=0.5, delta=0.2, absent=0.4, burst=0.2, scale="probability"):
    return Policy(identity_threshold=0.3, identity_far=1e-4, identity_source="test",
                  au_thresholds={"AU6": t, "AU12": t}, absent_thresholds={"AU6": absent, "AU12": absent},
                  baseline_min_delta=delta, burst_min_delta=burst, rise_scale=scale)


def test_ece_hand_computed():
    # bin [0.8, 0.9): p = 0.8, 0.8, y = 1, 0 -> |0.5 - 0.8| = 0.3 ; bin [0.1, 0.2): p = 0.1, y = 0 -> 0.1
    p, y = [0.8, 0.8, 0.1], [1, 0, 0]
    assert expected_calibration_error(p, y) == pytest.approx(2 / 3 * 0.3 + 1 / 3 * 0.1)
    bins = reliability_bins(p, y)
    assert sum(b["n"] for b in bins) == 3 and bins[8]["freq"] == 0.5 and bins[1]["mean_p"] == pytest.approx(0.1)
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0       # 1.0 falls in the last bin
    with pytest.raises(ValueError):
        reliability_bins([0.1], [1, 0])


def test_ece_matches_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 5000)
    y = (rng.uniform(0, 1, 5000) < p ** 2).astype(int)
    freq, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
    bins = [b for b in reliability_bins(p, y) if b["n"]]
    assert np.allclose(freq, [b["freq"] for b in bins]) and np.allclose(mean_p, [b["mean_p"] for b in bins])


def test_burst_delta_requires_a_change_within_the_burst():
    pol = _policy(t=0.5, delta=0.0, absent=0.5, burst=0.3)
    # the neutral frame already sits at 0.45: a 0.6 "smile" is only +0.15 -> not present
    pres, absent, _ = judge_frames([{"AU6": 0.45, "AU12": 0.45}, {"AU6": 0.6, "AU12": 0.6}], RULE, pol)
    assert absent == [True, False] and pres == [False, False]
    pres, _, _ = judge_frames([{"AU6": 0.1, "AU12": 0.1}, {"AU6": 0.6, "AU12": 0.6}], RULE, pol)
    assert pres == [False, True]
    # a frame without probabilities is neither present nor absent and does not move the reference
    pres, absent, _ = judge_frames([None, {"AU6": 0.9, "AU12": 0.9}], RULE, pol)
    assert pres == [False, True] and absent == [False, False]


@pytest.mark.parametrize("scale,points", [
    ("probability", [(0.5, 0.2, 0.4), (0.35, 0.0, 0.6), (0.7, 0.35, 0.3)]),
    ("logit", [(0.35, 0.5, 0.9), (0.2, 1.0, 0.7), (0.6, 2.0, 0.5)])])
def test_gate_agrees_with_the_engine(scale, points):
    """calibrate()'s vectorised gate == the engine's decision on two-frame bursts (identity, liveness held fixed),
    with the rises judged on either scale."""
    rng = np.random.default_rng(1)
    n = 400
    neutral = rng.uniform(0, 0.9, (n, 2)).astype(np.float32)
    probe = rng.uniform(0, 1, (n, 2)).astype(np.float32)
    pr = Probes("synthetic", ("AU6", "AU12"), probe, neutral, neutral.copy(), np.ones(n, bool))
    for t, d, a in points:
        ok = gate(pr, (t, t), d, a, scale)
        assert 0 < ok.sum() < n      # the points are not degenerate
        pol = _policy(t, d, a, d, scale)
        crop0 = np.zeros((112, 112, 3), np.uint8)
        crop1 = np.full((112, 112, 3), 40, np.uint8)
        lm = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], float)
        for i in range(n):
            nb = {"AU6": float(neutral[i, 0]), "AU12": float(neutral[i, 1])}
            fr = [FrameObs(identity_score=0.9, au_probs=nb, crop=crop0, landmarks=lm),
                  FrameObs(identity_score=0.9, au_probs={"AU6": float(probe[i, 0]), "AU12": float(probe[i, 1])},
                           crop=crop1, landmarks=lm)]
            assert decide(fr, RULE, pol, baseline=nb).approved == bool(ok[i]), (i, t, d, a)


def test_calibrate_keeps_every_population_under_max_fpr():
    rng = np.random.default_rng(2)

    def pop(name, shift):
        n = 600
        y = rng.uniform(0, 1, n) < 0.3
        probe = np.where(y[:, None], rng.normal(0.75 + shift, 0.12, (n, 2)), rng.normal(0.2 + shift, 0.12, (n, 2)))
        return Probes(name, ("AU6", "AU12"), probe.clip(0, 1).astype(np.float32), np.full((n, 2), np.nan, np.float32),
                      np.full((n, 2), np.nan, np.float32), y)

    pops = [pop("a", 0.0), pop("b", 0.12)]           # b's scores sit higher: its others pass a's best threshold
    res = calibrate(pops, max_fpr=0.01)
    for p in pops:
        r = rates(p, [res["thresholds"]["AU6"], res["thresholds"]["AU12"]], res["delta"], res["absent_threshold"])
        assert r["fpr"] <= 0.01 and r == res["populations"][p.name]
    alone = calibrate(pops[:1], max_fpr=0.01)
    assert max(alone["thresholds"].values()) <= max(res["thresholds"].values())
    au, change = calibration_section(res)
    assert set(au) == {"AU6", "AU12"} and change["burst_min_delta"] == res["delta"]
    with pytest.raises(ValueError):
        calibrate([])


def test_shipped_calibration_has_the_gate_sections():
    from smile2pay.decision.policy import CALIBRATION_DIR, Policy, load_calibration

    cal = load_calibration(CALIBRATION_DIR / "mobile.json")
    assert {"AU6", "AU12"} <= set(cal["au"]) and "burst_min_delta" in cal["au_change"]
    pol = Policy.from_calibration()
    assert pol.au_thresholds["AU12"] == cal["au"]["AU12"]["threshold"]
    assert pol.single_frame_au_thresholds["AU12"] == cal["au_single_frame"]["AU12"]["threshold"]
    # each population it was chosen on is recorded with its rates
    assert set(cal["au"]["AU12"]["chosen_at"]) == {"ckplus_oof_pairs", "lfw_calib_pairs"}
    # the required rise stays above a still's frame-to-frame flicker (benchmarks/au_flicker.py)
    from smile2pay.decision.au_calibration import MIN_DELTA

    assert pol.burst_min_delta >= MIN_DELTA and pol.baseline_min_delta >= MIN_DELTA
    # the smile probe's point: on its rise scale, at or above the flicker floor of its absence threshold
    from smile2pay.decision.au_calibration import logit_floor

    pp = pol.with_smile_probe()
    floor = MIN_DELTA if pp.rise_scale == "probability" else max(logit_floor(pp.absent_threshold(a))
                                                                   for a in ("AU6", "AU12"))
    assert pp.burst_min_delta >= floor and pp.baseline_min_delta >= floor


def _easy_pairs(seed: int) -> Probes:
    """Pairs where any rise would do: every smile rises far above its neutral frame, no other expression does."""
    rng = np.random.default_rng(seed)
    n = 400
    y = rng.uniform(0, 1, n) < 0.4
    neutral = rng.uniform(0.0, 0.1, (n, 2)).astype(np.float32)
    probe = np.where(y[:, None], rng.uniform(0.8, 1.0, (n, 2)), rng.uniform(0.0, 0.15, (n, 2))).astype(np.float32)
    return Probes("p", ("AU6", "AU12"), probe, neutral, neutral.copy(), y)


def test_calibrate_never_picks_a_rise_below_the_flicker_floor():
    """On pairs where any rise would do (every smile rises far above its neutral frame), the search would
    keep the smallest delta in its grid; the floor keeps it at MIN_DELTA, and only an explicit min_delta=0 (a
    single-frame calibration) goes under it."""
    from smile2pay.decision.au_calibration import MIN_DELTA

    pr = _easy_pairs(3)
    res = calibrate([pr], max_fpr=0.01)
    assert res["delta"] == pytest.approx(MIN_DELTA) and res["min_delta"] == MIN_DELTA
    assert calibrate([pr], max_fpr=0.01, min_delta=0.0)["delta"] == 0.0
    with pytest.raises(ValueError):
        calibrate([pr], max_fpr=0.01, min_delta=0.9)


def test_logit_rise_by_hand():
    """0.5 -> 0.73 is a logit rise of ~1.0 and 0.9 -> 0.95 one of ~0.747; raised() inverts rise()."""
    from smile2pay.decision.au_calibration import rise
    from smile2pay.decision.engine import raised

    assert rise(0.7310585786, 0.5, "logit") == pytest.approx(1.0, abs=1e-8)
    assert rise(0.95, 0.9, "logit") == pytest.approx(np.log(19) - np.log(9))
    assert rise(0.95, 0.9) == pytest.approx(0.05)
    for v, d in [(0.1, 0.5), (0.9, 0.5), (0.0, 1.0), (0.999, 2.0)]:
        assert rise(raised(v, d, "logit"), v, "logit") == pytest.approx(d, abs=1e-9) or v == 0.0
        assert raised(v, d) == pytest.approx(v + d)
    with pytest.raises(ValueError):
        rise(0.5, 0.2, "log")
    # past the clip at 1 - 1e-6 nothing rises that far, in the engine as in the calibration
    assert raised(1.0 - 1e-7, 0.75, "logit") > 1.0 and rise(1.0, 1.0 - 1e-7, "logit") < 0.75


def test_calibrate_on_the_logit_scale_keeps_its_own_floor_and_section():
    """A logit-scale calibration searches its own grids, never goes under MIN_DELTA_LOGIT, and writes the scale
    into the au_change section; a probability-scale one writes none (files stay as before)."""
    from smile2pay.decision.au_calibration import GRID_DELTA_LOGIT, MIN_DELTA_LOGIT

    pr = _easy_pairs(4)
    res = calibrate([pr], max_fpr=0.01, rise_scale="logit")
    assert res["rise_scale"] == "logit" and res["delta"] == pytest.approx(MIN_DELTA_LOGIT)
    assert res["delta"] in GRID_DELTA_LOGIT
    assert calibration_section(res)[1]["rise_scale"] == "logit"
    assert "rise_scale" not in calibration_section(calibrate([pr], max_fpr=0.01))[1]
    # a higher absence threshold needs the larger rise its stills' flicker asks for
    from smile2pay.decision.au_calibration import LOGIT_DELTA_FLOOR, logit_floor

    assert logit_floor(0.9) == LOGIT_DELTA_FLOOR[0.9] > logit_floor(0.7) and logit_floor(0.85) == logit_floor(0.9)
    assert np.isnan(logit_floor(0.95))
    high = calibrate([pr], max_fpr=0.01, rise_scale="logit", grid_absent=(0.9,))
    assert high["delta"] >= LOGIT_DELTA_FLOOR[0.9]
    with pytest.raises(ValueError):
        calibrate([pr], max_fpr=0.01, rise_scale="logit", grid_absent=(0.95,))
    with pytest.raises(ValueError):
        calibrate([pr], max_fpr=0.01, rise_scale="log")


def test_probe_section_rise_scale_is_checked():
    from smile2pay.decision.policy import parse_probe_section
    from smile2pay.errors import ConfigError

    sec = {"weight": 0.15, "au": {"AU6": {"threshold": 0.35, "absent_threshold": 0.9},
                                  "AU12": {"threshold": 0.35, "absent_threshold": 0.9}},
           "au_change": {"baseline_min_delta": 1.5, "burst_min_delta": 1.5, "rise_scale": "logit"}}
    out = parse_probe_section(sec)
    assert out["rise_scale"] == "logit" and out["burst_min_delta"] == 1.5
    for bad in ({"rise_scale": "log"}, {"rise_scale": 1}, {"burst_min_delta": 1.5}, {"burst_min_delta": -0.1},
                {"rise_scale": "logit", "burst_min_delta": 9.0}):
        with pytest.raises(ConfigError) as e:
            parse_probe_section({**sec, "au_change": bad})
        assert e.value.code == "CALIBRATION_INVALID"


def test_csv_errors_name_the_file_line(tmp_path):
    """Blank lines are skipped by the CSV reader: the error names the row's line in the file, not its row count."""
    from smile2pay.cli.calibrate_au import read_csv_rows, read_frames
    from smile2pay.errors import RequestError

    f = tmp_path / "frames.csv"
    f.write_text("path,subject,label\n\na.png,s1,neutral\n\n\nb.png,s1,grin\n")
    _, rows, lines = read_csv_rows(f, ("path", "subject", "label"), "frames")
    assert [r["path"] for r in rows] == ["a.png", "b.png"] and lines == [3, 6]
    with pytest.raises(RequestError, match="line 6: label must be one of"):
        read_frames(f)
