"""Model manifest, store errors, download errors, ONNX load errors: no weights needed."""
import hashlib

import pytest

from smile2pay.errors import ModelError
from smile2pay.models import MODELS, PACKS, ModelStore, download, get_pack, get_spec, sha256_file
from smile2pay.models.runtime import create_session


def test_licence_warning_on_insightface_weights():
    for name in ("det_500m", "w600k_mbf"):
        assert "non-commercial" in get_spec(name).licence
    assert "commercial use allowed" in get_spec("yunet").licence


def test_missing_file_error_names_file_digest_and_folders(tmp_path):
    store = ModelStore([tmp_path])
    with pytest.raises(ModelError) as e:
        store.path("w600k_mbf")
    err = e.value
    assert err.code == "MODEL_MISSING"
    assert "w600k_mbf.onnx" in err.message and str(tmp_path) in err.message
    assert err.details["expected_sha256"] == get_spec("w600k_mbf").sha256
    assert str(tmp_path) in err.details["searched"]


def test_unknown_model_and_pack():
    with pytest.raises(ModelError) as e:
        get_spec("nope")
    assert e.value.code == "MODEL_UNKNOWN"
    with pytest.raises(ModelError):
        get_pack("nope")


def test_download_unreachable_is_typed(tmp_path):
    with pytest.raises(ModelError) as e:
        download(["det_500m"], tmp_path, url=(tmp_path / "missing.zip").as_uri(), progress=False)
    assert e.value.code == "MODEL_DOWNLOAD_FAILED"


def test_corrupt_onnx_load_is_typed(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError) as e:
        create_session(bad, name="x")
    assert e.value.code == "MODEL_LOAD_FAILED"


def test_every_pack_names_known_models():
    for pack in PACKS.values():
        for n in pack.model_names():
            assert n in MODELS


def test_sha256_helper(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == hashlib.sha256(b"abc").hexdigest()
