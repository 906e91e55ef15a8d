"""The capture-continuity cues added on 2026-12-07 (light balance, contrast) and the face window: their maths on
synthetic crops, their invariance to a camera's gain and to warp fill, and how calibration files switch them on."""
import json
import math

import numpy as np
import pytest

from smile2pay.decision import continuity as C
from smile2pay.decision.policy import Policy
from smile2pay.errors import ConfigError

LM = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], np.float32)


def _crop(left=150.0, right=90.0, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(left, right, 112)[None, :]
    g = np.clip(ramp + np.linspace(-10, 10, 112)[:, None] + rng.normal(0, 3, (112, 112)), 0, 255)
    return g.astype(np.uint8)


def test_balance_and_contrast_by_hand():
    g = np.zeros((112, 112), np.uint8)
    g[:, :56], g[:, 56:] = 120, 60
    s = C.signature(g, LM)
    assert s.balance == pytest.approx((120 - 60) / (90 + 1.0), rel=1e-5)
    assert s.contrast == pytest.approx(math.log((30 + 1e-3) / 91.0), rel=1e-5)
    m = C.signature(np.ascontiguousarray(g[:, ::-1]), LM)
    assert m.balance == pytest.approx(-s.balance, rel=1e-5)     # mirrored light, mirrored balance


def test_gain_leaves_the_new_cues_alone():
    a = _crop()
    b = np.clip(a.astype(np.float32) * 1.25, 0, 255).astype(np.uint8)     # auto-exposure: one gain
    ch = C.pair_change(C.signature(a, LM), C.signature(b, LM))
    assert ch["balance"] < 0.01 and ch["contrast"] < 0.01
    flipped = C.pair_change(C.signature(a, LM), C.signature(np.ascontiguousarray(a[:, ::-1]), LM))
    assert flipped["balance"] > 0.3


def test_scores_use_only_the_calibrated_cues():
    change = {"lighting": 1.0, "upper": 1.0, "yaw": 0.0, "roll": 0.0, "balance": 0.3, "contrast": 0.4}
    four = C.ContinuitySettings(scale_lighting=1.0, scale_upper=1.0, scale_yaw=1.0, scale_roll=1.0)
    assert set(four.scales()) == {"lighting", "upper", "yaw", "roll"}
    assert C.score(change, four) == pytest.approx(math.sqrt(2))
    six = C.ContinuitySettings(scale_lighting=1.0, scale_upper=1.0, scale_yaw=1.0, scale_roll=1.0,
                               scale_balance=0.1, scale_contrast=0.2, max_score=4.0)
    assert C.score(change, six) == pytest.approx(math.sqrt(1 + 1 + 9 + 4))
    assert C.excess(change, six) == pytest.approx(math.sqrt(15) / 4)


def test_light_from_the_other_side_is_discontinuous_with_the_new_cues():
    """Same pattern after standardising (a ramp mirrored is still a ramp in the 4x4 grid up to sign), but the
    balance flips: the six-cue score flags it."""
    s = C.ContinuitySettings(scale_lighting=1e3, scale_upper=1e3, scale_yaw=1e3, scale_roll=1e3,
                             scale_balance=0.05, scale_contrast=0.1, max_score=3.0)
    a, b = _crop(150, 90, 1), _crop(90, 150, 2)
    assert not C.check([C.signature(a, LM), C.signature(b, LM)], s).passed
    assert C.check([C.signature(a, LM), C.signature(_crop(150, 90, 3), LM)], s).passed


def _cal(tmp_path, cc):
    cal = {"format": "smile2pay.calibration/1", "model": "m:1",
           "identity": {"operating_points": [{"far": 1e-4, "threshold": 0.33}]}, "capture_continuity": cc}
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(cal))
    return p


def test_calibration_switches_the_cues_on(tmp_path):
    base = {"scale_lighting": 1.3, "scale_upper": 1.4, "scale_yaw": 0.02, "scale_roll": 1.3, "max_score": 4.0}
    pol = Policy.from_calibration(_cal(tmp_path, base), far=1e-4)
    assert set(pol.continuity.scales()) == {"lighting", "upper", "yaw", "roll"}
    pol = Policy.from_calibration(_cal(tmp_path, {**base, "scale_balance": 0.03, "scale_contrast": 0.05}), far=1e-4)
    assert pol.continuity.scale_balance == 0.03 and pol.continuity.scale_contrast == 0.05
    assert pol.continuity.max_score == 4.0


@pytest.mark.parametrize("bad", ["0.1", -0.1, 0, True, float("nan"), None])
def test_malformed_continuity_scale_is_a_config_error(tmp_path, bad):
    cc = {"scale_lighting": 1.3, "scale_upper": 1.4, "scale_yaw": 0.02, "scale_roll": 1.3, "max_score": 4.0,
          "scale_balance": bad}
    with pytest.raises(ConfigError) as e:
        Policy.from_calibration(_cal(tmp_path, cc), far=1e-4)
    assert e.value.code == "CALIBRATION_INVALID"


def test_shipped_calibration_uses_the_six_cues():
    pol = Policy.from_calibration()
    assert set(pol.continuity.scales()) == {"lighting", "upper", "yaw", "roll", "balance", "contrast"}


def test_streams_take_their_own_section(tmp_path):
    base = {"scale_lighting": 1.3, "scale_upper": 1.4, "scale_yaw": 0.02, "scale_roll": 1.3, "max_score": 4.0}
    p = _cal(tmp_path, {**base, "scale_balance": 0.05, "scale_contrast": 0.3, "max_score": 4.5})
    cal = json.loads(p.read_text())
    cal["capture_continuity_stream"] = base
    p.write_text(json.dumps(cal))
    pol = Policy.from_calibration(p, far=1e-4)
    assert pol.continuity.max_score == 4.5 and pol.stream_continuity.max_score == 4.0
    assert set(pol.stream_continuity.scales()) == {"lighting", "upper", "yaw", "roll"}
    cal["capture_continuity_stream"] = {**base, "max_score": "x"}
    p.write_text(json.dumps(cal))
    with pytest.raises(ConfigError) as e:
        Policy.from_calibration(p, far=1e-4)
    assert e.value.code == "CALIBRATION_INVALID" and "capture_continuity_stream" in str(e.value)
    cal["capture_continuity_stream"] = [1, 2]
    p.write_text(json.dumps(cal))
    with pytest.raises(ConfigError):
        Policy.from_calibration(p, far=1e-4)


def test_the_stream_machine_uses_the_stream_limits_unless_the_check_is_off():
    from dataclasses import replace

    from smile2pay.decision.rules import parse_rule
    from smile2pay.stream.machine import StreamMachine

    pol = Policy.from_calibration()
    assert pol.stream_continuity is not None                     # the shipped file has both sections
    assert StreamMachine(parse_rule("AU6+AU12"), pol).policy.continuity == pol.stream_continuity
    # since the face window both sections hold the same limits: tell them apart here
    pol = replace(pol, stream_continuity=replace(pol.stream_continuity, max_score=1.234))
    m = StreamMachine(parse_rule("AU6+AU12"), pol)
    assert m.policy.continuity == pol.stream_continuity and m.policy.continuity != pol.continuity
    off = replace(pol, continuity=replace(pol.continuity, enabled=False))
    assert not StreamMachine(parse_rule("AU6+AU12"), off).policy.continuity.enabled
    none = replace(pol, stream_continuity=None)
    assert StreamMachine(parse_rule("AU6+AU12"), none).policy.continuity == pol.continuity


def test_an_explicit_continuity_override_applies_to_streams_too():
    mine = C.ContinuitySettings(max_score=9.0)
    pol = Policy.from_calibration(continuity=mine)
    assert pol.continuity == mine and pol.stream_continuity is None
    both = Policy.from_calibration(continuity=mine, stream_continuity=C.ContinuitySettings(max_score=2.0))
    assert both.stream_continuity.max_score == 2.0


def test_fit_settings_by_hand():
    ch = [{"lighting": x, "upper": x, "yaw": x, "roll": x, "balance": 2 * x, "contrast": 3 * x} for x in (1.0, 2.0, 3.0)]
    s = C.fit_settings(ch, C.ALL_CUES, percentile=50.0, margin=0.5)
    assert s.scale_lighting == 2.0 and s.scale_balance == 4.0 and s.scale_contrast == 6.0
    assert s.max_score == pytest.approx(0.5 * math.sqrt(6 * 1.5 ** 2))      # the largest pair: x = 3
    assert C.fit_settings(ch, C.FOUR_CUES).scale_balance is None
    with pytest.raises(ValueError):
        C.fit_settings([], C.ALL_CUES)
    with pytest.raises(ValueError):
        C.fit_settings(ch, ("lighting", "balance"))


def test_the_face_window_reads_the_face_not_the_warp_fill():
    """A tight crop aligned to 112 px has a border of warp fill (black as a file, grey on a camera canvas) whose
    extent moves with the alignment: the face window leaves it out, the whole crop does not."""
    face = _crop(140, 100, 4)
    a, b = face.copy(), face.copy()
    a[:, :14], a[:, -14:], a[:12] = 0, 0, 0            # black fill on three sides
    b[:, :20], b[:, -8:], b[:18] = 110, 110, 110         # the same face, fill of another extent and grey
    full = C.pair_change(C.signature(a, LM), C.signature(b, LM))
    win = C.pair_change(C.signature(a, LM, C.FACE_WINDOW), C.signature(b, LM, C.FACE_WINDOW))
    assert full["lighting"] > 0.5 and full["contrast"] > 0.05
    assert win["lighting"] == 0.0 and win["upper"] == 0.0 and win["balance"] == 0.0 and win["contrast"] == 0.0
    # the window is exactly that part of the crop (x 27..85, y 26..100 of 112 px)
    w, part = C.signature(face, LM, C.FACE_WINDOW), C.signature(np.ascontiguousarray(face[26:100, 27:85]), LM)
    assert np.array_equal(w.lighting, part.lighting) and np.array_equal(w.upper, part.upper)
    assert w.balance == part.balance and w.contrast == part.contrast and w.yaw == part.yaw


@pytest.mark.parametrize("bad", [(0.1, 0.1, 0.9), (0.5, 0.1, 0.4, 0.9), (0.1, 0.1, 1.2, 0.9), (0.3, 0.3, 0.45, 0.9),
                                 "face", None, (0.1, float("nan"), 0.9, 0.9)])
def test_a_bad_window_is_refused(bad, tmp_path):
    with pytest.raises(ValueError):
        C.check_window(bad)
    if bad is None:
        return          # a missing window is the whole crop (older files), not an error
    from smile2pay.decision.policy import CALIBRATION_DIR
    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    cal["capture_continuity"] = {**cal["capture_continuity"], "window": bad}
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(cal))
    with pytest.raises(ConfigError) as e:
        Policy.from_calibration(p, far=1e-4)
    assert e.value.code == "CALIBRATION_INVALID" and "window" in str(e.value)


def test_window_travels_from_fit_to_calibration_to_policy(tmp_path):
    ch = [{"lighting": x, "upper": x, "yaw": x, "roll": x, "balance": x, "contrast": x} for x in (1.0, 2.0)]
    s = C.fit_settings(ch, C.ALL_CUES, window=C.FACE_WINDOW)
    assert s.window == C.FACE_WINDOW and C.fit_settings(ch, C.ALL_CUES).window is None
    from smile2pay.decision.policy import CALIBRATION_DIR
    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    pol = Policy.from_calibration()
    # the shipped limits read the face window, bursts and streams alike
    assert cal["capture_continuity"]["window"] == list(C.FACE_WINDOW)
    assert pol.continuity.window == C.FACE_WINDOW and pol.stream_continuity.window == C.FACE_WINDOW
    del cal["capture_continuity"]["window"]             # a file from before the window: the whole crop
    p = tmp_path / "old.json"
    p.write_text(json.dumps(cal))
    assert Policy.from_calibration(p, far=1e-4).continuity.window is None
