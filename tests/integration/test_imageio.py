"""Bad input never crashes or hangs, on real images: each case gives a typed error or a correct conversion."""

import cv2
import numpy as np
import pytest

from smile2pay.errors import ImageError
from smile2pay.imageio import load_image

from helpers import code_of


@pytest.fixture(scope="module")
def face_bgr(data_dir):
    img = cv2.imread(str(data_dir / "samples" / "t1.jpg"))
    assert img is not None
    return img


def test_truncated_jpeg(tmp_path, data_dir):
    data = (data_dir / "samples" / "t1.jpg").read_bytes()
    p = tmp_path / "trunc.jpg"
    p.write_bytes(data[:200])  # header only: no scan data
    assert code_of(p) == "IMAGE_UNREADABLE"
    # a JPEG cut in the middle of its scan decodes partially (grey bottom) -- it must not crash
    half = data[: len(data) // 2]
    try:
        img = load_image(half)
        assert img.dtype == np.uint8 and img.ndim == 3
    except ImageError as e:
        assert e.code == "IMAGE_UNREADABLE"


def test_file_size_limit(tmp_path, data_dir):
    assert code_of(data_dir / "samples" / "t1.jpg", max_bytes=1000) == "IMAGE_TOO_LARGE"


def test_grey_rgba_16bit_converted(tmp_path, face_bgr):
    grey = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2GRAY)
    out = load_image(grey)
    assert out.shape == face_bgr.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 2], grey)
    rgba = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 7
    assert np.array_equal(load_image(rgba), face_bgr)
    # through the file codecs too
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), rgba)
    assert np.array_equal(load_image(p), face_bgr)
    p16 = tmp_path / "b16.png"
    cv2.imwrite(str(p16), face_bgr.astype(np.uint16) * 257)
    assert np.array_equal(load_image(p16), face_bgr)
    pg = tmp_path / "g.png"
    cv2.imwrite(str(pg), grey)
    assert load_image(pg).shape == face_bgr.shape


def test_non_contiguous_array(face_bgr):
    view = face_bgr[:, ::-1]  # mirrored view, negative stride
    out = load_image(view)
    assert out.flags["C_CONTIGUOUS"] and np.array_equal(out, np.ascontiguousarray(view))


def test_exif_rotation(tmp_path, face_bgr):
    from PIL import Image

    rgb = cv2.cvtColor(face_bgr, cv2.COLOR_BGR2RGB)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=95)
    out = load_image(p)
    assert out.shape[:2] == (face_bgr.shape[1], face_bgr.shape[0])


def test_pipeline_rejects_bad_input_with_typed_error(pipeline, tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0garbage")
    with pytest.raises(ImageError):
        pipeline.analyze(p)
    with pytest.raises(ImageError):
        pipeline.analyze(np.zeros((100, 100, 3), np.float64))
    # a blank image is valid input with no face in it
    assert pipeline.analyze(np.full((240, 320, 3), 128, np.uint8)) == []
