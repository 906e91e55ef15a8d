"""Model manifest against the real files, store (sha256 checks, typed errors), download (against local
files), runtime."""
import json
import shutil
import zipfile

import numpy as np
import pytest

from smile2pay.config import Settings
from smile2pay.errors import ModelError
from smile2pay.models import MODELS, ModelStore, download, get_pack, get_spec, sha256_file
from smile2pay.models.runtime import create_session


def test_manifest_matches_shared_files(models_dir):
    for name in get_pack("mobile").model_names():
        spec = get_spec(name)
        p = models_dir / spec.file
        if not p.exists():
            continue  # the project's own AU model ships inside the package
        assert p.stat().st_size == spec.size, name
        assert sha256_file(p) == spec.sha256, name
    for spec in MODELS.values():
        assert spec.licence and spec.source and spec.task


def test_store_resolution_order(tmp_path, models_dir, monkeypatch):
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    shutil.copy(models_dir / "face_detection_yunet_2023mar.onnx", explicit)
    monkeypatch.setenv("SMILE2PAY_MODELS", str(models_dir))
    s = Settings.from_env(models=str(explicit))
    assert s.model_dir_candidates()[0] == explicit
    assert ModelStore(s.model_dir_candidates()).path("yunet").parent == explicit
    s_env = Settings.from_env()
    assert s_env.model_dir_candidates()[0] == models_dir
    monkeypatch.delenv("SMILE2PAY_MODELS")
    home_first = Settings.from_env().model_dir_candidates()
    assert str(home_first[0]).endswith(".smile2pay/models")
    assert len(home_first) == len(set(home_first)), "each folder is searched (and reported) once"
    assert Settings.from_env(models="buffalo_l").pack_name() == "buffalo_l"


def test_corrupt_file_is_a_checksum_error(tmp_path, models_dir):
    bad = tmp_path / "det_500m.onnx"
    data = bytearray((models_dir / "det_500m.onnx").read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    store = ModelStore([tmp_path])
    with pytest.raises(ModelError) as e:
        store.path("det_500m")
    assert e.value.code == "MODEL_CHECKSUM_MISMATCH"
    assert e.value.details["expected_sha256"] == get_spec("det_500m").sha256
    r = store.check("det_500m")
    assert r.present and r.sha256_ok is False and not r.ok


def test_check_pack_ok(models_dir):
    """The mobile pack resolves fully: shared weights + the AU model shipped inside the package."""
    results = ModelStore(Settings.from_env(models=str(models_dir)).model_dir_candidates()).check_pack("mobile")
    assert results and all(r.ok for r in results), [r.to_dict() for r in results if not r.ok]
    au = [r for r in results if r.name == get_pack("mobile").au]
    assert au and au[0].sha256_ok is True and "smile2pay/models/weights" in au[0].path


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, src in files.items():
            z.write(src, arcname=name)


def test_download_from_local_archive_verifies_and_pins(tmp_path, models_dir):
    """Real download code (urllib + zip + sha256), fed a file:// URL: no network at test time."""
    archive = tmp_path / "buffalo_s.zip"
    _zip(archive, {"buffalo_s/det_500m.onnx": models_dir / "det_500m.onnx",
                   "buffalo_s/w600k_mbf.onnx": models_dir / "w600k_mbf.onnx"})
    dest = tmp_path / "home"
    paths = download(["det_500m", "w600k_mbf"], dest, url=archive.as_uri(), progress=False)
    assert sorted(p.name for p in paths) == ["det_500m.onnx", "w600k_mbf.onnx"]
    assert ModelStore([dest]).check_pack("buffalo_s")[0].ok
    # buffalo_l has no digest in the manifest: first download pins it (trust on first use)
    fake_l = tmp_path / "buffalo_l.zip"
    _zip(fake_l, {"det_10g.onnx": models_dir / "det_2.5g.onnx", "w600k_r50.onnx": models_dir / "w600k_mbf.onnx"})
    download(["det_10g", "w600k_r50"], dest, url=fake_l.as_uri(), progress=False)
    pins = json.loads((dest / "pins.json").read_text())
    assert pins["det_10g.onnx"] == sha256_file(models_dir / "det_2.5g.onnx")
    store = ModelStore([dest])
    assert store.check("det_10g").sha256_ok is True
    # tampering after pinning is caught
    (dest / "det_10g.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelError) as e:
        store.path("det_10g")
    assert e.value.code == "MODEL_CHECKSUM_MISMATCH"


def test_download_rejects_wrong_digest_and_leaves_nothing(tmp_path, models_dir):
    archive = tmp_path / "bad.zip"
    _zip(archive, {"det_500m.onnx": models_dir / "det_2.5g.onnx"})  # wrong bytes under the right name
    dest = tmp_path / "home"
    with pytest.raises(ModelError) as e:
        download(["det_500m"], dest, url=archive.as_uri(), progress=False)
    assert e.value.code == "MODEL_CHECKSUM_MISMATCH"
    assert not (dest / "det_500m.onnx").exists()
    # user-given digest for an unpinned file is enforced too
    archive2 = tmp_path / "l.zip"
    _zip(archive2, {"det_10g.onnx": models_dir / "det_2.5g.onnx"})
    with pytest.raises(ModelError):
        download(["det_10g"], dest, url=archive2.as_uri(), digests={"det_10g.onnx": "0" * 64}, progress=False)
    assert not (dest / "det_10g.onnx").exists()


def test_provider_list_is_what_was_asked_with_reported_fallback(models_dir, caplog):
    import onnxruntime as ort

    sess, rep = create_session(models_dir / "w600k_mbf.onnx", providers=("CPUExecutionProvider",))
    assert rep.active == ["CPUExecutionProvider"] and not rep.fallback
    # CUDA is asked for: on a CPU-only build it must be reported as a fallback, not dropped silently
    with caplog.at_level("WARNING"):
        sess, rep = create_session(models_dir / "w600k_mbf.onnx",
                                   providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert rep.active[0] == "CUDAExecutionProvider"
    else:
        assert rep.fallback and rep.active == ["CPUExecutionProvider"]
        assert rep.requested == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert any("CUDAExecutionProvider" in r.message for r in caplog.records)
    out = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 112, 112), np.float32)})[0]
    assert out.shape == (1, 512)


def test_rewritten_graphs_give_the_same_outputs_on_real_faces(pipeline, models_dir, data_dir):
    """The pipeline loads the identity and PAD models with PRelu rewritten and the PAD models' odd widths padded
    (smile2pay.models.graph); on real
    faces their outputs are those of the graphs as on disk (float rounding only), and ``graph_rewrite=False``
    loads the graphs unchanged."""
    from smile2pay.models.runtime import create_session
    from smile2pay.vision.pad import PresentationAttackDetector

    rec = pipeline.recognizer_spec.name
    assert pipeline.providers[rec].rewrites == {"prelu": 34, "prelu_skipped": 0}
    assert pipeline.providers["det_500m"].rewrites["prelu"] == 0   # SCRFD has no PRelu: loaded as on disk
    img = pipeline.load(str(data_dir / "samples" / "t1.jpg"))
    faces = pipeline.analyze(img, au=False)
    assert len(faces) >= 5
    raw, _ = create_session(models_dir / "w600k_mbf.onnx", rewrite=False, name=rec)
    emb = pipeline.embedder
    blob = emb.preprocess([f.identity_crop for f in faces])
    a = np.concatenate([raw.run([emb.output_name], {emb.input_name: b[None]})[0] for b in blob])
    b = np.concatenate([emb.session.run([emb.output_name], {emb.input_name: x[None]})[0] for x in blob])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99999, cos
    # and a different face is far: the comparison can fail
    assert float(a[0] @ b[1] / np.linalg.norm(a[0]) / np.linalg.norm(b[1])) < 0.5

    pad_rw = PresentationAttackDetector.from_pipeline(pipeline)
    assert all(pad_rw.providers[m.spec.name].rewrites["prelu"] == 33 for m in pad_rw.models)
    # MiniFASNet's pruned widths (103, 231, 13, ...) padded to 16-channel blocks: 15 blocks in each model
    assert all(pad_rw.providers[m.spec.name].rewrites["padded"] == 15 for m in pad_rw.models)
    pad_raw = PresentationAttackDetector(Settings.from_env(graph_rewrite=False), store=pipeline.store)
    assert all(pad_raw.providers[m.spec.name].rewrites == {} for m in pad_raw.models)
    boxes = [f.bbox for f in faces]
    p_rw, p_raw = pad_rw.probabilities(img, boxes), pad_raw.probabilities(img, boxes)
    np.testing.assert_allclose(p_rw, p_raw, atol=1e-4)


def test_read_checks_the_bytes_it_returns(tmp_path, models_dir):
    """ModelStore.read: one read, sha256 of those bytes; a session is built from them (no second read)."""
    import hashlib

    shutil.copy(models_dir / "det_500m.onnx", tmp_path / "det_500m.onnx")
    store = ModelStore([tmp_path])
    path, data = store.read("det_500m")
    assert path == tmp_path / "det_500m.onnx"
    assert hashlib.sha256(data).hexdigest() == get_spec("det_500m").sha256
    raw = bytearray(data)
    raw[1000] ^= 0xFF
    (tmp_path / "det_500m.onnx").write_bytes(bytes(raw))
    with pytest.raises(ModelError) as e:
        store.read("det_500m")
    assert e.value.code == "MODEL_CHECKSUM_MISMATCH"
    with pytest.raises(ModelError) as e:
        ModelStore([tmp_path / "nowhere"]).read("det_500m")
    assert e.value.code == "MODEL_MISSING"
