"""The identity network's smile probe on real weights and real images (smile2pay.vision.smile_probe)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from smile2pay_tools.bench.clips import lfw_expression_people

from smile2pay import Smile2Pay
from smile2pay.config import Settings
from smile2pay.decision.policy import Policy
from smile2pay.errors import ConfigError, ModelError
from smile2pay.models.manifest import MODELS
from smile2pay.models.runtime import create_session
from smile2pay.pipeline import FacePipeline
from smile2pay.vision.smile_probe import SmileProbe


@pytest.fixture(scope="module")
def lfw_people(data_dir):
    return lfw_expression_people(data_dir)[:12]


def test_pipeline_reads_the_shipped_probe(pipeline):
    p = pipeline.smile_probe
    assert p is not None and p.recognizer == pipeline.recognizer_spec.name
    assert p.sha256 == MODELS["smile_probe"].sha256 and p.w.shape == (3072,)


def test_probe_outputs_leave_the_embedding_unchanged(pipeline, t1_path, models_dir):
    faces = pipeline.analyze(str(t1_path), embed=True, au=False)
    assert len(faces) == 6 and all(f.smile_probe is not None and np.isfinite(f.smile_probe) for f in faces)
    # the recogniser as on disk, without the probe's extra outputs
    plain = create_session((models_dir / MODELS["w600k_mbf"].file).read_bytes(), threads=1, name="plain")[0]
    blob = pipeline.embedder.preprocess([f.identity_crop for f in faces])
    ref = plain.run(None, {plain.get_inputs()[0].name: blob})[0]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(np.stack([f.embedding for f in faces]) - ref).max() < 1e-5


def test_probe_ranks_happy_photos_above_neutral_ones(pipeline, data_dir, lfw_people):
    """Per person (LFW, labelled happy / neutral photos): the happy photo's logit above the neutral one's."""
    wins = 0
    for p in lfw_people:
        n = pipeline.single(str(data_dir / p["neutral"][0]), pick="center")
        h = pipeline.single(str(data_dir / p["happy"][0]), pick="center")
        wins += h.smile_probe > n.smile_probe
    assert len(lfw_people) == 12 and wins >= 10


def test_corrupt_probe_file_is_a_model_error():
    with pytest.raises(ModelError) as e:
        SmileProbe(b"not an npz")
    assert e.value.code == "MODEL_LOAD_FAILED"


def test_setting_off_reads_no_probe(models_dir):
    pipe = FacePipeline(Settings.from_env(models=str(models_dir), smile_probe=False))
    assert pipe.smile_probe is None and pipe.embedder.feature_outputs == ()
    assert Settings.from_env({"SMILE2PAY_SMILE_PROBE": "0"}).smile_probe is False


def test_decision_judges_with_the_probe_and_old_baselines_without(tmp_path, pipeline, data_dir, lfw_people):
    p = lfw_people[0]
    with Smile2Pay(tmp_path / "g", pipeline=pipeline) as s2p:
        s2p.enroll(p["subject"], [str(data_dir / p["neutral"][0])], kind="neutral")
        base = s2p.gallery.au_baseline(p["subject"])
        assert "smile_probe" in base["probs"]                     # the baseline keeps the probe's logit
        frames = [str(data_dir / p["neutral"][1]), str(data_dir / p["happy"][0])]
        d = s2p.verify(p["subject"], frames)
        assert d.au["smile_probe"]["weight"] == s2p.policy.probe_calibration["weight"]
        assert all("smile_probe" in f for f in d.frames)
        assert all(set(f["au_stage_probs"]) == {"AU6", "AU12"} for f in d.frames)
        # a rule the probe's operating point was not chosen for: the AU stage alone
        d_other = s2p.verify(p["subject"], frames, require="AU25")
        assert "smile_probe" not in d_other.au
        # an enrolment made before the probe (baseline without its logit): judged by the AU stage alone, as then
        s2p.gallery.set_au_baseline(p["subject"], {k: v for k, v in base["probs"].items() if k != "smile_probe"})
        d2 = s2p.verify(p["subject"], frames)
        assert "smile_probe" not in d2.au and all("au_stage_probs" not in f for f in d2.frames)


def test_calibration_for_another_probe_is_refused(tmp_path, pipeline):
    pol = Policy.from_calibration(model_fingerprint=pipeline.model_fingerprint)
    other = replace(pol, probe_calibration={**pol.probe_calibration, "model": "smile_probe:" + "0" * 64})
    with pytest.raises(ConfigError) as e:
        Smile2Pay(tmp_path / "g", pipeline=pipeline, policy=other)
    assert e.value.code == "CALIBRATION_MODEL_MISMATCH"


def test_single_frame_mode_uses_the_probes_single_frame_weight(tmp_path, pipeline, data_dir, lfw_people):
    """liveness="none" (opt-in) judges the one frame at the probe's single-frame weight and thresholds (shipped
    file); a burst of the same user keeps the burst weight."""
    p = lfw_people[0]
    with Smile2Pay(tmp_path / "g", pipeline=pipeline, allow_single_frame=True) as s2p:
        s2p.enroll(p["subject"], [str(data_dir / p["neutral"][0])], kind="neutral")
        cal = s2p.policy.probe_calibration
        assert cal["single_frame_weight"] != cal["weight"]           # the shipped file has its own weight
        one = s2p.verify(p["subject"], [str(data_dir / p["happy"][0])], liveness="none")
        assert one.au["smile_probe"]["weight"] == cal["single_frame_weight"]
        assert all(one.au["thresholds"][a] >= round(t, 4) for a, t in cal["single_frame_thresholds"].items())
        burst = s2p.verify(p["subject"], [str(data_dir / p["neutral"][1]), str(data_dir / p["happy"][0])])
        assert burst.au["smile_probe"]["weight"] == cal["weight"]
