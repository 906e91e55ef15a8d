"""Fast OpenCV paths against the NumPy formulas they replace (synthetic arrays, no weights)."""
import numpy as np
import pytest

from smile2pay.decision.liveness import crop_difference
from smile2pay.models.manifest import ModelSpec


def _spec(color, mean, std):
    return ModelSpec(name="t", file="t.onnx", task="t", sha256=None, size=None, licence="", source="",
                     color=color, mean=mean, std=std)


def _numpy_blob(images, color, mean, std):
    arr = np.asarray(images, np.float32)
    if color == "RGB":
        arr = arr[..., ::-1]
    return (arr.transpose(0, 3, 1, 2) - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / \
        np.asarray(std, np.float32).reshape(1, 3, 1, 1)


@pytest.mark.parametrize("color,mean,std", [("RGB", (10.0, 20.0, 30.0), (127.5,) * 3),
                                            ("BGR", (1.0, 2.0, 3.0), (2.0,) * 3),
                                            ("BGR", (0.0, 0.0, 0.0), (1.0,) * 3),
                                            ("RGB", (127.5,) * 3, (50.0, 60.0, 70.0))])   # per-channel std: NumPy path
def test_to_blob_matches_the_numpy_formula(color, mean, std):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 17, 11, 3), dtype=np.uint8)    # not square: width/height order
    out = _spec(color, mean, std).to_blob(images)
    assert out.dtype == np.float32 and out.shape == (3, 3, 17, 11) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, _numpy_blob(images, color, mean, std), rtol=1e-6, atol=1e-6)


def test_crop_difference_matches_the_channel_mean_formula():
    rng = np.random.default_rng(0)
    for _ in range(10):
        a = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-40, 40, size=a.shape), 0, 255).astype(np.uint8)
        ref = float(np.abs(a.mean(axis=2).astype(np.float32) - b.mean(axis=2).astype(np.float32)).mean())
        assert crop_difference(a, b) == pytest.approx(ref, rel=1e-5)
    a = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    assert crop_difference(a, a) == 0.0
    # hand case: one pixel differs by (30, 0, 0): grey differs by 10 in 1 of 4 pixels
    x = np.zeros((2, 2, 3), np.uint8)
    y = x.copy()
    y[0, 0, 0] = 30
    assert crop_difference(x, y) == pytest.approx(2.5)
    assert crop_difference(x[..., 0], y[..., 0]) == pytest.approx(7.5)     # grey crops: the NumPy path
    with pytest.raises(ValueError):
        crop_difference(x, np.zeros((3, 3, 3), np.uint8))
