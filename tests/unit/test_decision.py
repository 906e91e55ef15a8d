"""Decision logic on hand-made measurements: rules, policy files, the engine, lockout/nonce/audit."""
import json

import numpy as np
import pytest

from smile2pay.decision.engine import FrameObs, decide
from smile2pay.decision.lockout import GuardSettings
from smile2pay.decision.liveness import check_burst, crop_difference
from smile2pay.decision.policy import Policy, load_calibration
from smile2pay.decision.rules import KNOWN_AUS, Rule, parse_rule
from smile2pay.errors import ConfigError, RuleError
from smile2pay.gallery.guard import Guard


@pytest.mark.parametrize("text,req,forb", [
    ("AU6+AU12", ("AU6", "AU12"), ()),
    ("AU12", ("AU12",), ()),
    ("AU6+AU12-AU4", ("AU6", "AU12"), ("AU4",)),
    ("AU6+AU12 !AU4", ("AU6", "AU12"), ("AU4",)),
    (" au06 + AU12 ", ("AU6", "AU12"), ()),
])
def test_rule_parse(text, req, forb):
    r = parse_rule(text)
    assert r.required == req and r.forbidden == forb


@pytest.mark.parametrize("bad,code", [("", "RULE_INVALID"), ("smile", "RULE_INVALID"), ("AU6++AU12", "RULE_INVALID"),
                                      ("AU99", "RULE_UNKNOWN_AU"), ("-AU4", "RULE_INVALID"),
                                      ("AU6-AU6", "RULE_INVALID"), ("AU6+AU6", "RULE_INVALID"), (None, "RULE_INVALID"),
                                      ("AU6+", "RULE_INVALID")])
def test_rule_errors(bad, code):
    with pytest.raises(RuleError) as e:
        parse_rule(bad)
    assert e.value.code == code


# the parser's default AU list is what the shipped AU model outputs (its manifest entry), nothing else
@pytest.mark.parametrize("au", ["AU7", "AU14", "AU15", "AU23", "AU24", "AU27", "AU1", "AU26"])
def test_rule_accepts_every_au_the_model_outputs(au):
    assert parse_rule(f"AU12+{au}").required == ("AU12", au)


@pytest.mark.parametrize("au", ["AU43", "AU10", "AU3"])
def test_rule_rejects_an_au_the_model_does_not_output(au):
    with pytest.raises(RuleError) as e:
        parse_rule(f"AU6+AU12-{au}")
    assert e.value.code == "RULE_UNKNOWN_AU" and e.value.details["au"] == au


def test_rule_known_aus_are_the_shipped_models_and_can_be_passed_in():
    from smile2pay.models.manifest import AU_NAMES, get_pack, get_spec

    assert KNOWN_AUS == AU_NAMES == get_spec(get_pack("mobile").au).au_names
    assert len(KNOWN_AUS) == 17 and "AU43" not in KNOWN_AUS
    # another AU model: the caller passes its names
    assert parse_rule("AU43", known=("AU43",)).required == ("AU43",)
    with pytest.raises(RuleError) as e:
        parse_rule("AU6+AU12", known=["AU12"])
    assert e.value.code == "RULE_UNKNOWN_AU" and e.value.details["au"] == "AU6"
    # a Rule built by hand is checked too
    assert parse_rule(Rule(("AU6",))) == Rule(("AU6",))
    with pytest.raises(RuleError):
        parse_rule(Rule(("AU43",)))


def test_rule_parser_loads_no_model():
    import subprocess
    import sys

    code = ("import sys, smile2pay.decision.rules; "
            "print(sorted(m for m in ('onnxruntime', 'cv2', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rule_satisfied():
    r = parse_rule("AU6+AU12-AU4")
    assert r.satisfied({"AU6": True, "AU12": True})
    assert not r.satisfied({"AU6": True, "AU12": True, "AU4": True})
    assert not r.satisfied({"AU12": True})


POLICY = Policy(identity_threshold=0.4, identity_far=1e-4, identity_source="test",
                au_thresholds={"AU6": 0.5, "AU12": 0.5, "AU4": 0.5}, baseline_min_delta=0.25,
                absent_thresholds={"AU6": 0.5, "AU12": 0.5})
RULE = parse_rule("AU6+AU12")


def _frame(score, au6, au12, seed, au4=0.0, shift=0.0):
    rng = np.random.default_rng(seed)
    # one capture: the same lit face (a fixed gradient) with per-frame sensor noise
    base = np.linspace(60, 190, 112)[None, :, None] + np.linspace(-30, 30, 112)[:, None, None]
    crop = np.clip(base + rng.normal(0, 6, (112, 112, 3)), 0, 255).astype(np.uint8)
    lm = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], float) + shift
    return FrameObs(identity_score=score, au_probs={"AU6": au6, "AU12": au12, "AU4": au4}, crop=crop,
                    landmarks=lm)


def test_neutral_then_smile_approves():
    out = decide([_frame(0.7, 0.1, 0.05, 1), _frame(0.65, 0.9, 0.95, 2)], RULE, POLICY)
    assert out.approved and out.reasons == []
    assert out.liveness["onset_frame"] == 1 and out.liveness["neutral_frame"] == 0
    assert out.identity["score"] == 0.65


def test_smile_without_neutral_onset_declines():
    out = decide([_frame(0.7, 0.9, 0.9, 1), _frame(0.7, 0.92, 0.95, 2)], RULE, POLICY)
    assert not out.approved and "LIVENESS_FAILED" in out.reasons and "NO_ONSET" in out.reasons


def test_flickering_au_on_a_smile_is_not_an_onset():
    """AU12 stays high (a smiling still); AU6 wobbles around its threshold: no neutral frame."""
    out = decide([_frame(0.7, 0.45, 0.9, 1), _frame(0.7, 0.55, 0.92, 2)], RULE, POLICY)
    assert not out.approved and "NO_ONSET" in out.reasons


def test_presence_and_absence_thresholds_are_separate():
    """Absence (neutral start) is judged by its own thresholds, not by the presence thresholds."""
    from dataclasses import replace

    pol = replace(POLICY, au_thresholds={"AU6": 0.6, "AU12": 0.6}, baseline_min_delta=0.0)
    out = decide([_frame(0.7, 0.35, 0.35, 1), _frame(0.7, 0.9, 0.9, 2)], RULE, pol)
    assert out.approved and out.au["absent_thresholds"] == {"AU6": 0.5, "AU12": 0.5}
    strict_absent = replace(pol, absent_thresholds={"AU6": 0.2, "AU12": 0.2})
    assert "NO_ONSET" in decide([_frame(0.7, 0.35, 0.35, 1), _frame(0.7, 0.9, 0.9, 2)], RULE,
                                strict_absent).reasons


def test_smile_then_neutral_declines():
    out = decide([_frame(0.7, 0.9, 0.9, 1), _frame(0.7, 0.1, 0.1, 2)], RULE, POLICY)
    assert not out.approved and "LIVENESS_FAILED" in out.reasons


def test_repeated_still_is_replay():
    f = _frame(0.8, 0.9, 0.9, 1)
    out = decide([f, f, f, f], RULE, POLICY)
    assert not out.approved and "REPLAY" in out.reasons


def test_identity_switch_mid_burst_declines():
    out = decide([_frame(0.7, 0.1, 0.1, 1), _frame(0.12, 0.9, 0.9, 2)], RULE, POLICY)
    assert out.reasons == ["IDENTITY_MISMATCH"]
    assert out.frames[1]["identity_match"] is False


def test_no_smile_declines_with_pattern_absent():
    out = decide([_frame(0.7, 0.1, 0.1, 1), _frame(0.7, 0.2, 0.3, 2)], RULE, POLICY)
    assert "AU_PATTERN_ABSENT" in out.reasons


def test_forbidden_au_blocks():
    rule = parse_rule("AU6+AU12-AU4")
    out = decide([_frame(0.7, 0.1, 0.1, 1), _frame(0.7, 0.9, 0.9, 2, au4=0.8)], rule, POLICY)
    assert "AU_PATTERN_ABSENT" in out.reasons


def test_personal_baseline_raises_the_bar():
    """A resting face that already looks like a smile (baseline 0.6) must rise by 0.25 to count."""
    frames = [_frame(0.7, 0.2, 0.1, 1), _frame(0.7, 0.7, 0.7, 2)]
    assert decide(frames, RULE, POLICY).approved
    out = decide(frames, RULE, POLICY, baseline={"AU6": 0.6, "AU12": 0.6})
    assert not out.approved and "NO_CHANGE_FROM_BASELINE" in out.reasons
    assert out.au["thresholds"]["AU6"] == pytest.approx(0.85)
    frames2 = [_frame(0.7, 0.2, 0.1, 1), _frame(0.7, 0.9, 0.9, 2)]
    assert decide(frames2, RULE, POLICY, baseline={"AU6": 0.6, "AU12": 0.6}).approved


def test_single_frame_mode_says_liveness_not_checked():
    out = decide([_frame(0.7, 0.9, 0.9, 1)], RULE, POLICY, liveness="none")
    assert out.approved and out.liveness["checked"] is False and "NOT checked" in out.liveness["note"]
    out2 = decide([_frame(0.7, 0.9, 0.9, 1)], RULE, POLICY, liveness="burst")
    assert not out2.approved and "LIVENESS_FAILED" in out2.reasons


def test_face_errors_and_quality():
    out = decide([FrameObs(error="NO_FACE"), _frame(0.7, 0.9, 0.9, 2)], RULE, POLICY)
    assert "NO_FACE" in out.reasons and not out.approved
    f = _frame(0.7, 0.1, 0.1, 1)
    f.quality_reasons = ["BLURRY"]
    out = decide([f, _frame(0.7, 0.9, 0.9, 2)], RULE, POLICY)
    assert "LOW_QUALITY" in out.reasons and out.frames[0]["quality_reasons"] == ["BLURRY"]
    assert decide([f, _frame(0.7, 0.9, 0.9, 2)], RULE, POLICY, require_quality=False).approved


def test_still_detection_thresholds():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(int) + rng.normal(0, 4, a.shape), 0, 255).astype(np.uint8)
    assert crop_difference(a, a) == 0.0
    assert crop_difference(a, noisy) > 1.5
    lm = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], float)
    r = check_burst([a, a], [lm, lm], [False, True], [True, False])
    assert r.reasons == ["REPLAY"]
    r = check_burst([a, noisy], [lm, lm], [False, True], [True, False])
    assert r.passed


def test_guard_lockout_and_reset(tmp_path):
    g = Guard(tmp_path, GuardSettings(max_failures=3, window_s=100, lockout_s=50))
    t = 1000.0
    for i in range(2):
        g.record("bob", False, now=t + i)
    assert g.locked_until("bob", now=t + 3) is None
    g.record("bob", False, now=t + 3)
    assert g.locked_until("bob", now=t + 4) == pytest.approx(t + 53)
    assert g.locked_until("bob", now=t + 60) is None          # lockout expired
    assert g.locked_until("alice", now=t + 4) is None
    g.record("bob", True, now=t + 61)                          # a success resets the count
    g.record("bob", False, now=t + 62)
    assert g.locked_until("bob", now=t + 63) is None
    g.close()
    # persisted across instances (processes)
    g2 = Guard(tmp_path, GuardSettings(max_failures=1, lockout_s=50))
    assert g2.locked_until("bob", now=t + 63) == pytest.approx(t + 112)


def test_failures_spread_over_more_than_window_do_not_lock(tmp_path):
    g = Guard(tmp_path, GuardSettings(max_failures=3, window_s=10, lockout_s=1000))
    for ts in (0.0, 20.0, 40.0):
        g.record("eve", False, now=ts)
    assert g.locked_until("eve", now=41.0) is None


def test_nonce_single_use(tmp_path):
    g = Guard(tmp_path)
    assert g.use_nonce("n-1") is True
    assert g.use_nonce("n-1") is False
    assert g.use_nonce("n-2") is True
    g.close()
    assert Guard(tmp_path).use_nonce("n-1") is False   # persisted
    raw = (tmp_path / "guard.sqlite").read_bytes()
    assert b"n-1" not in raw                            # stored hashed


def test_audit_has_no_biometrics(tmp_path):
    g = Guard(tmp_path)
    g.audit({"user_id": "u1", "approved": False, "reasons": ["IDENTITY_MISMATCH"], "identity_score": 0.1})
    with pytest.raises(ValueError):
        g.audit({"user_id": "u1", "embedding": np.zeros(512, np.float32)})
    with pytest.raises(ValueError):
        g.audit({"user_id": "u1", "vector": [0.0] * 512})
    recs = g.audit_records()
    assert len(recs) == 1 and recs[0]["reasons"] == ["IDENTITY_MISMATCH"]


def _cal(tmp_path, **extra):
    cal = {"format": "smile2pay.calibration/1", "model": "m:1",
           "identity": {"operating_points": [{"far": 1e-3, "threshold": 0.25}, {"far": 1e-4, "threshold": 0.33}]},
           "au": {"AU6": {"threshold": 0.4}, "AU12": {"threshold": 0.6}}}
    cal.update(extra)
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(cal))
    return p


def test_policy_from_calibration(tmp_path):
    p = _cal(tmp_path)
    pol = Policy.from_calibration(p, far=1e-4)
    assert pol.identity_threshold == 0.33 and pol.identity_far == 1e-4
    assert pol.au_threshold("AU12") == 0.6 and pol.au_threshold("AU1") == 0.5
    assert "far=0.0001" in pol.version
    assert Policy.from_calibration(p, far=1e-3).identity_threshold == 0.25
    with pytest.raises(ConfigError) as e:
        Policy.from_calibration(p, far=1e-5)
    assert e.value.code == "CALIBRATION_NO_OPERATING_POINT"
    with pytest.raises(ConfigError) as e:
        Policy.from_calibration(p, model_fingerprint="other:2")
    assert e.value.code == "CALIBRATION_MODEL_MISMATCH"


def test_bad_calibration_files(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_calibration(tmp_path / "none.json")
    assert e.value.code == "CALIBRATION_MISSING"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError):
        load_calibration(bad)
    with pytest.raises(ConfigError):
        load_calibration(_cal(tmp_path, identity={"operating_points": []}))


@pytest.mark.parametrize("extra", [
    {"identity": [1]},
    {"identity": {"operating_points": {"far": 1e-4, "threshold": 0.3}}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": float("nan")}]}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": -5}]}},        # would accept everyone
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": float("inf")}]}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": None}]}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": "0.3"}]}},
    {"identity": {"operating_points": [{"far": "abc", "threshold": 0.3}]}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": 0.3, "per_population": [1]}]}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": 0.3}], "tail_shape": [1]}},
    {"identity": {"operating_points": [{"far": 1e-4, "threshold": 0.3}], "tail_shape": {"z": [1]}}},
    {"au": [1, 2]}, {"au": {"AU6": 0.5}}, {"au": {"AU6": {"threshold": "x"}}},
    {"au": {"AU6": {"threshold": float("nan")}}}, {"au": {"AU6": {"threshold": -3}}},
    {"au": {"AU6": {"absent_threshold": 7}}},
    {"au_change": [1]}, {"au_change": "baseline_min_delta"}, {"au_change": {"baseline_min_delta": "x"}},
    {"au_change": {"burst_min_delta": float("nan")}},
    {"au_single_frame": [1]}, {"au_single_frame": {"AU6": {"threshold": "x"}}}])
def test_malformed_calibration_sections_are_calibration_invalid(tmp_path, extra):
    """Every section verify() reads is checked: a wrong type or a NaN, infinite or out-of-range number is a
    ConfigError CALIBRATION_INVALID naming the file (never a TypeError, nor a threshold that passes everyone)."""
    p = _cal(tmp_path, **extra)
    with pytest.raises(ConfigError) as e:
        Policy.from_calibration(p, far=1e-4)
    assert e.value.code == "CALIBRATION_INVALID" and str(p) in e.value.message


def test_calibration_file_with_a_byte_order_mark_loads(tmp_path):
    p = _cal(tmp_path)
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert Policy.from_calibration(p, far=1e-4).identity_threshold == 0.33


def test_calibration_threshold_and_counts_hand_case():
    """4 subjects x 2 images, hand-made 2-d embeddings: every pair score is known."""
    from smile2pay.metrics.calibration import calibrate, pair_scores, threshold_at_far

    ang = np.radians([0, 10, 90, 97, 180, 183, 270, 284])  # no tied impostor scores
    emb = np.stack([np.cos(ang), np.sin(ang)], 1)
    subj = ["a", "a", "b", "b", "c", "c", "d", "d"]
    imp, sa, sb, gen = pair_scores(emb, subj)
    assert imp.size == 24 and gen.size == 4
    np.testing.assert_allclose(np.sort(gen), np.sort(np.cos(np.radians([10, 7, 3, 14]))), atol=1e-6)
    srt = np.sort(imp)[::-1]
    # FAR 1/24 allows exactly one false accept: the threshold sits just above the 2nd highest impostor
    t = threshold_at_far(srt, 1 / 24)
    assert np.count_nonzero(imp >= t) == 1 and t > srt[1]
    assert np.count_nonzero(imp >= threshold_at_far(srt, 0.01)) == 0
    cal = calibrate(emb, subj, fars=(0.1,), bootstrap=20)
    op = cal["operating_points"][0]
    assert op["false_accepts"] == 2 and op["impostors"] == 24      # floor(0.1 * 24) = 2
    assert op["tar"] == 1.0 and op["supported"] is False            # 24 < 3 / 0.1
    lo, hi = op["threshold_ci95_subject_bootstrap"]
    assert lo <= hi


# -- the decision function is total: nothing non-finite or missing approves (issue 16) -------------
def test_nan_identity_score_declines():
    """min() with a NaN first would skip the threshold comparison and approve."""
    out = decide([_frame(float("nan"), 0.1, 0.05, 1), _frame(0.65, 0.9, 0.95, 2)], RULE, POLICY)
    assert not out.approved and "INVALID_OBSERVATION" in out.reasons
    out = decide([_frame(0.7, 0.1, 0.05, 1), _frame(float("inf"), 0.9, 0.95, 2)], RULE, POLICY)
    assert not out.approved and "INVALID_OBSERVATION" in out.reasons


def test_nan_au_probability_declines():
    f = _frame(0.7, 0.1, 0.05, 1)
    g = _frame(0.65, 0.9, 0.95, 2)
    g.au_probs["AU4"] = float("nan")          # a forbidden AU that no comparison would catch
    out = decide([f, g], parse_rule("AU6+AU12-AU4"), POLICY)
    assert not out.approved and "INVALID_OBSERVATION" in out.reasons


def test_frame_without_crop_fails_liveness():
    f, g = _frame(0.7, 0.1, 0.05, 1), _frame(0.65, 0.9, 0.95, 2)
    g.crop = None
    out = decide([f, g], RULE, POLICY)
    assert not out.approved and "LIVENESS_FAILED" in out.reasons


def test_no_frames_declines_in_every_mode():
    for mode in ("burst", "none"):
        out = decide([], RULE, POLICY, liveness=mode)
        assert not out.approved and "INVALID_OBSERVATION" in out.reasons


def test_two_photos_are_a_capture_discontinuity():
    """Neutral and smile frames lit from opposite sides (two photos, not one capture) decline."""
    f, g = _frame(0.7, 0.1, 0.05, 1), _frame(0.65, 0.9, 0.95, 2)
    g.crop = np.ascontiguousarray(g.crop[:, ::-1])          # the light now comes from the other side
    out = decide([f, g], RULE, POLICY)
    assert not out.approved and out.reasons == ["CAPTURE_DISCONTINUITY"]
    assert out.liveness["continuity"]["worst"]["excess"] > 1.0
    g2 = _frame(0.65, 0.9, 0.95, 2, shift=0.0)
    assert decide([f, g2], RULE, POLICY).approved                 # same light: one capture


def test_two_photos_cross_faded_are_a_capture_discontinuity():
    """The same two photos cross-faded over 12 frames: every consecutive pair is continuous, the first and the
    last frame are not, and that declines (every pair of a burst is compared, not only consecutive ones)."""
    f, g = _frame(0.7, 0.1, 0.05, 1), _frame(0.65, 0.9, 0.95, 2)
    g.crop = np.ascontiguousarray(g.crop[:, ::-1])
    k = 12
    frames = []
    for i in range(k + 2):
        a = i / (k + 1)
        frames.append(FrameObs(identity_score=0.7, au_probs={"AU6": 0.1 + 0.8 * a, "AU12": 0.05 + 0.9 * a,
                                                             "AU4": 0.0},
                               crop=np.clip((1 - a) * f.crop.astype(float) + a * g.crop.astype(float) + 0.5, 0,
                                            255).astype(np.uint8),
                               landmarks=f.landmarks))
    out = decide(frames, RULE, POLICY)
    cont = out.liveness["continuity"]
    assert max(p["excess"] for p in cont["pairs"]) < 1.0          # no single cut
    assert not out.approved and out.reasons == ["CAPTURE_DISCONTINUITY"]
    assert cont["worst"]["excess"] > 1.0 and cont["worst"]["frames"][1] - cont["worst"]["frames"][0] > 1
