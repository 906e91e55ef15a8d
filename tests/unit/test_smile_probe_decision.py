"""The decision under the smile probe: fusion maths by hand, judged frames and baseline, the calibration section."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from smile2pay.decision import engine
from smile2pay.decision.policy import CALIBRATION_DIR, Policy, parse_probe_section
from smile2pay.decision.rules import parse_rule
from smile2pay.errors import ConfigError
from smile2pay.models.manifest import MODELS, PACKS

RULE = parse_rule("AU6+AU12")


def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_fuse_probe_by_hand():
    p = {"AU6": 0.5, "AU12": 0.2, "AU25": 0.9}
    out = engine.fuse_probe(p, 2.0, 0.2, ("AU6", "AU12"))
    assert out["AU6"] == pytest.approx(_sig(0.2 * 2.0))                               # logit(0.5) = 0
    assert out["AU12"] == pytest.approx(_sig(0.8 * math.log(0.2 / 0.8) + 0.4))
    assert out["AU25"] == 0.9 and p["AU6"] == 0.5                                     # others and input untouched
    assert engine.fuse_probe(p, 7.0, 0.0, ("AU6",))["AU6"] == pytest.approx(0.5)     # weight 0: the AU stage
    assert engine.fuse_probe(p, -3.0, 1.0, ("AU6",))["AU6"] == pytest.approx(_sig(-3.0))  # weight 1: the probe
    edge = engine.fuse_probe({"AU6": 0.0, "AU12": 1.0}, -800.0, 0.5, ("AU6", "AU12"))
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in edge.values())


def _policy(weight=0.2):
    cal = {"weight": weight, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.6},
                                    "AU12": {"threshold": 0.5, "absent_threshold": 0.6}},
           "au_change": {"baseline_min_delta": 0.2, "burst_min_delta": 0.2},
           "au_single_frame": {"AU6": {"threshold": 0.25}, "AU12": {"threshold": 0.4}}}
    base = Policy(identity_threshold=0.3, identity_far=1e-4, identity_source="test",
                  au_thresholds={"AU6": 0.9, "AU12": 0.9}, probe_calibration=parse_probe_section(cal))
    return base, base.with_smile_probe()


def test_with_smile_probe_takes_the_probe_operating_point():
    base, pp = _policy()
    assert base.probe_weight == 0 and pp.probe_weight == 0.2 and pp.probe_aus == ("AU6", "AU12")
    assert pp.au_thresholds == {"AU6": 0.3, "AU12": 0.5} and pp.absent_thresholds == {"AU6": 0.6, "AU12": 0.6}
    assert pp.burst_min_delta == pp.baseline_min_delta == 0.2
    assert pp.single_frame_au_thresholds == {"AU6": 0.25, "AU12": 0.4}
    assert pp.identity_threshold == base.identity_threshold
    assert replace(base, probe_calibration=None).with_smile_probe() is None


@pytest.mark.parametrize("bad", [
    [], {"weight": 0, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}},
    {"weight": 1.5, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}},
    {"weight": 0.2}, {"weight": 0.2, "au": {"AU6": 0.3}},
    {"weight": 0.2, "au": {"AU6": {"threshold": "high", "absent_threshold": 0.5}}},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": float("nan")}}},
    {"weight": True, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "au_single_frame": {"AU6": 0.3}},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "au_single_frame": [1]},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "au_change": 0.2},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "model": 7},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "single_frame_weight": 0},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "single_frame_weight": 1.2},
    {"weight": 0.2, "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.5}}, "single_frame_weight": "0.6"},
])
def test_malformed_probe_section_is_a_config_error(bad):
    with pytest.raises(ConfigError) as e:
        parse_probe_section(bad)
    assert e.value.code == "CALIBRATION_INVALID"


def test_shipped_calibration_names_the_shipped_probe():
    cal = json.loads((CALIBRATION_DIR / "mobile.json").read_text())
    sec = parse_probe_section(cal["au_probe"])
    assert sec["model"] == f"smile_probe:{MODELS['smile_probe'].sha256}"
    assert PACKS["mobile"].smile_probe == "smile_probe"
    pol = Policy.from_calibration()
    assert pol.probe_calibration["weight"] == sec["weight"] > 0
    # the operating point was chosen with every calibration population at <= its FPR budget
    for r in cal["au_probe"]["chosen_at"]["bursts"].values():
        assert r["fpr"] <= 0.02


def test_judged_probs_and_baseline():
    base, pp = _policy()
    f = engine.FrameObs(au_probs={"AU6": 0.5, "AU12": 0.5}, smile_probe=None)
    assert engine.judged_probs(f, base) == f.au_probs
    assert engine.judged_probs(f, pp) is None                       # not embedded: not judged on the fused scale
    assert engine.judged_probs(engine.FrameObs(error="NO_FACE"), pp) is None
    g = replace(f, smile_probe=1.0)
    assert engine.judged_probs(g, pp)["AU12"] == pytest.approx(_sig(0.2))
    assert engine.judged_baseline({"AU6": 0.1, "AU12": 0.1}, pp) is None      # enrolled without the probe
    b = engine.judged_baseline({"AU6": 0.1, "AU12": 0.1, "smile_probe": -2.0}, pp)
    assert b["AU6"] == pytest.approx(_sig(0.8 * math.log(0.1 / 0.9) - 0.4)) and "smile_probe" not in b
    assert engine.judged_baseline({"AU6": 0.1}, base) == {"AU6": 0.1}


def _frame(p6, p12, z, seed=0):
    rng = np.random.RandomState(seed)
    return engine.FrameObs(identity_score=0.9, au_probs={"AU6": p6, "AU12": p12}, smile_probe=z,
                           crop=rng.randint(0, 255, (112, 112, 3), np.uint8),
                           landmarks=np.array([[38, 51], [73, 51], [56, 71], [41, 92], [70, 92]], np.float32))


def test_decide_judges_fused_scores():
    base, pp = _policy()
    # the AU stage alone sees no smile (0.3 / 0.35: below the 0.9 thresholds); the probe's logit lifts the second frame
    frames = [_frame(0.1, 0.1, -6.0, 0), _frame(0.3, 0.35, 8.0, 1)]
    out_plain = engine.decide(frames, RULE, replace(base, continuity=replace(base.continuity, enabled=False)))
    assert engine.AU_PATTERN_ABSENT in out_plain.reasons
    pp_nc = replace(pp, continuity=replace(pp.continuity, enabled=False))
    out = engine.decide(frames, RULE, pp_nc)
    assert engine.AU_PATTERN_ABSENT not in out.reasons and out.au["present_frames"] == [1]
    assert out.au["smile_probe"]["weight"] == 0.2
    assert out.frames[1]["smile_probe"] == 8.0 and out.frames[1]["au_stage_probs"] == {"AU6": 0.3, "AU12": 0.35}
    # a frame without the probe's logit is not judged; a non-finite logit is an invalid observation
    out2 = engine.decide([frames[0], replace(frames[1], smile_probe=None)], RULE, pp_nc)
    assert engine.AU_PATTERN_ABSENT in out2.reasons and out2.frames[1]["pattern"] == "not judged (not embedded)"
    out3 = engine.decide([frames[0], replace(frames[1], smile_probe=float("nan"))], RULE, pp_nc)
    assert engine.INVALID_OBSERVATION in out3.reasons and not out3.approved


def test_single_frame_mode_takes_the_probes_single_frame_weight():
    """au_probe.single_frame_weight replaces the probe's weight (and the thresholds the single-frame ones) in
    single-frame mode only; without it single frames keep the burst weight."""
    base, pp = _policy()
    assert engine.au_policy(pp, "none").probe_weight == 0.2                     # no single_frame_weight: as bursts
    sec = parse_probe_section({"weight": 0.2, "single_frame_weight": 0.6,
                               "au": {"AU6": {"threshold": 0.3, "absent_threshold": 0.6},
                                      "AU12": {"threshold": 0.5, "absent_threshold": 0.6}},
                               "au_single_frame": {"AU6": {"threshold": 0.25}, "AU12": {"threshold": 0.4}}})
    assert sec["single_frame_weight"] == 0.6 and sec["weight"] == 0.2
    pp6 = replace(base, probe_calibration=sec).with_smile_probe()
    one = engine.au_policy(pp6, "none")
    assert one.probe_weight == 0.6 and one.au_thresholds == {"AU6": 0.25, "AU12": 0.4}
    assert engine.au_policy(pp6, "burst").probe_weight == 0.2
    assert engine.au_policy(base, "none").probe_weight == 0                      # no probe policy: untouched
    # a frame judged in single-frame mode is fused at 0.6: AU6 0.3 with logit 3 -> sigmoid(0.4 logit(0.3) + 1.8)
    f = engine.FrameObs(identity_score=0.9, au_probs={"AU6": 0.3, "AU12": 0.3}, smile_probe=3.0, quality_reasons=[])
    assert engine.judged_probs(f, one)["AU6"] == pytest.approx(_sig(0.4 * math.log(0.3 / 0.7) + 1.8))
    out = engine.decide([f], RULE, pp6, liveness="none")
    assert out.au["smile_probe"]["weight"] == 0.6
