"""The smile tail (the recogniser's 462 -> 509 stages fine-tuned for smiles; v3 read 473 -> 509) on real weights and
real faces."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from smile2pay.config import PACKAGE_WEIGHTS
from smile2pay.errors import ModelError
from smile2pay.models.graph import add_outputs
from smile2pay.models.manifest import MODELS, PACKS
from smile2pay.models.runtime import create_session
from smile2pay.vision.smile_probe import SmileProbe, pool_bands


@pytest.fixture(scope="module")
def t1_tensors(pipeline, t1_path, models_dir):
    """The recogniser's own 473, 509 and 462 tensors of t1.jpg's six identity crops."""
    faces = pipeline.analyze(str(t1_path), embed=False, au=False)
    data = add_outputs((models_dir / MODELS["w600k_mbf"].file).read_bytes(), ("473", "509", "462"))
    sess = create_session(data, threads=1, name="rec")[0]
    blob = pipeline.embedder.preprocess([f.identity_crop for f in faces])
    out = sess.run(["473", "509", "462"], {sess.get_inputs()[0].name: blob})
    assert out[0].shape == out[2].shape == (6, 256, 14, 14)
    return out


def test_the_pack_reads_the_shipped_tail(pipeline):
    probe = pipeline.smile_probe
    assert PACKS["mobile"].smile_tail == "smile_tail" and "smile_tail" in PACKS["mobile"].model_names()
    data = (PACKAGE_WEIGHTS / MODELS["smile_tail"].file).read_bytes()
    assert hashlib.sha256(data).hexdigest() == MODELS["smile_tail"].sha256 == probe.tail_sha256
    assert probe.tail_input == "462"
    assert probe.recognizer_tensors == ("462",) and pipeline.embedder.feature_outputs == ("462",)


def test_product_features_are_the_training_features(pipeline, t1_tensors):
    """What the product scores (SmileProbe.features on the recogniser's 462) is what the probe was fitted on
    (smile2pay_tools.train.id_teacher.tail_features on cached 462 tensors, stored as float16)."""
    from smile2pay_tools.train.id_teacher import tail_features

    t462 = t1_tensors[2]
    product = pipeline.smile_probe.features([t462])
    training = tail_features(t462.astype(np.float16), PACKAGE_WEIGHTS / MODELS["smile_tail"].file).astype(np.float32)
    assert product.shape == training.shape == (6, 3072)
    np.testing.assert_allclose(product, training, rtol=2e-2, atol=2e-3)
    # the tail is fine-tuned: both its 473 and its 509 differ from the recogniser's own
    assert np.abs(product[:, :1024] - pool_bands(t1_tensors[0])).max() > 1e-2
    assert np.abs(product[:, 1024:] - pool_bands(t1_tensors[1])).max() > 1e-2


def test_untrained_tail_is_the_recognisers_own_stage(models_dir, t1_tensors, tmp_path):
    """The training module's torch copy of nodes 473 -> 509, exported as the product loads it, reproduces the
    recogniser's own 509 before any training (so epoch 0 is the frozen probe exactly)."""
    pytest.importorskip("torch")
    from smile2pay_tools.train.smile_tail import export_tail, make_tail, tail_nodes

    rec = (models_dir / MODELS["w600k_mbf"].file).read_bytes()
    path = tmp_path / "tail.onnx"
    sha = export_tail(make_tail(rec), path)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    sess = create_session(path.read_bytes(), threads=1, name="tail")[0]
    out = sess.run(None, {sess.get_inputs()[0].name: t1_tensors[0]})[0]
    np.testing.assert_allclose(out, t1_tensors[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="no path"):
        tail_nodes(rec, start="no_such_tensor")
    with pytest.raises(ValueError, match="unsupported op Flatten"):      # past 509 the graph leaves the tail's ops
        tail_nodes(rec, start="473", stop="no_such_tensor")


def _probe_with_tail(sha: str) -> bytes:
    shipped = np.load(PACKAGE_WEIGHTS / MODELS["smile_probe"].file, allow_pickle=False)
    buf = io.BytesIO()
    np.savez(buf, **{k: shipped[k] for k in shipped.files if k != "tail_sha256"}, tail_sha256=np.array(sha))
    return buf.getvalue()


def test_a_probe_refuses_a_missing_or_foreign_tail(pipeline, t1_tensors):
    probe = SmileProbe(_probe_with_tail(MODELS["smile_tail"].sha256))
    with pytest.raises(ModelError, match="needs its smile tail") as e:
        probe.features([t1_tensors[2]])
    assert e.value.code == "MODEL_LOAD_FAILED"
    with pytest.raises(ModelError, match="fitted on the smile tail"):
        probe.attach_tail(pipeline.smile_probe._tail, "0" * 64)
    probe.attach_tail(pipeline.smile_probe._tail, MODELS["smile_tail"].sha256)
    np.testing.assert_allclose(probe.logits([t1_tensors[2]]), pipeline.smile_probe.logits([t1_tensors[2]]))


def test_the_deeper_tail_untrained_is_the_recognisers_own_tensors(pipeline, models_dir, t1_tensors, tmp_path):
    """The tail one block deeper (``--start 462``, what the pack ships): the probe names its input
    (``tail_input``), the recogniser returns 462 only, and the tail's own 473 and 509 are pooled. Untrained, the
    tail reproduces the recogniser's tensors, so the product's and the training's features are the frozen ones
    (epoch 0 is the frozen probe). A tail reading another tensor than the probe's input is refused, both ways."""
    pytest.importorskip("torch")
    from smile2pay_tools.train.id_teacher import save_probe, tail_features, tail_layout
    from smile2pay_tools.train.smile_tail import export_tail, make_tail

    rec = (models_dir / MODELS["w600k_mbf"].file).read_bytes()
    deep, v3 = tmp_path / "tail462.onnx", tmp_path / "tail473.onnx"
    sha = export_tail(make_tail(rec, start="462", outputs=("473", "509")), deep, start="462", outputs=("473", "509"))
    sha_v3 = export_tail(make_tail(rec), v3)
    assert tail_layout(deep) == ("462", ("473", "509")) and tail_layout(v3) == ("473", ("509",))
    t473, t509, t462 = t1_tensors
    shipped = np.load(PACKAGE_WEIGHTS / MODELS["smile_probe"].file, allow_pickle=False)
    save_probe(tmp_path / "p462.npz", shipped["w"], float(shipped["b"]), {}, tail_sha256=sha, tail_input="462")
    save_probe(tmp_path / "p473.npz", shipped["w"], float(shipped["b"]), {}, tail_sha256=sha_v3)
    probe = SmileProbe((tmp_path / "p462.npz").read_bytes())
    probe_v3 = SmileProbe((tmp_path / "p473.npz").read_bytes())
    assert probe.tail_input == "462" and probe.recognizer_tensors == ("462",)
    assert probe_v3.tail_input is None and probe_v3.recognizer_tensors == ("473",)
    deep_sess = create_session(deep.read_bytes(), threads=1, name="tail")[0]
    v3_sess = create_session(v3.read_bytes(), threads=1, name="tail")[0]
    with pytest.raises(ModelError, match="reads t473"):
        probe.attach_tail(v3_sess, sha)
    with pytest.raises(ModelError, match="reads t462"):
        probe_v3.attach_tail(deep_sess, sha_v3)
    probe.attach_tail(deep_sess, sha)
    probe_v3.attach_tail(v3_sess, sha_v3)
    frozen = np.concatenate([pool_bands(t473), pool_bands(t509)], 1)
    np.testing.assert_allclose(probe.features([t462]), frozen, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe_v3.features([t473]), frozen, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tail_features(t462.astype(np.float16), deep).astype(np.float32), frozen,
                               rtol=2e-2, atol=2e-3)
