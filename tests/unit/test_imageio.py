"""Bad input never crashes or hangs: each case gives a typed error or a correct conversion (synthetic files
and arrays, no images from SMILE2PAY_DATA)."""
import time

import cv2
import numpy as np
import pytest

from smile2pay.imageio import load_image

from helpers import code_of


def test_missing_file(tmp_path):
    assert code_of(tmp_path / "nope.jpg") == "IMAGE_NOT_FOUND"


def test_path_with_a_nul_byte(tmp_path):
    """A path no file can have (a CSV cell with a NUL byte): a typed error, not os.stat's ValueError."""
    assert code_of(str(tmp_path / "a\x00b.png")) == "IMAGE_NOT_FOUND"


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert code_of(p) == "IMAGE_EMPTY"
    assert code_of(b"") == "IMAGE_EMPTY"


def test_directory(tmp_path):
    assert code_of(tmp_path) == "IMAGE_UNREADABLE"


def test_text_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not an image\n" * 10)
    assert code_of(p) == "IMAGE_UNREADABLE"


def test_one_pixel(tmp_path):
    ok, buf = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    assert code_of(buf.tobytes()) == "IMAGE_TOO_SMALL"
    assert code_of(np.zeros((1, 1, 3), np.uint8)) == "IMAGE_TOO_SMALL"


def _grey_png(path, width, height):
    """A complete, valid greyscale PNG of zeros, written row by row (cheap even at 20000x20000)."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(1)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_huge_image_refused_from_header_fast(tmp_path):
    # a 20000x20000 PNG of zeros compresses to ~0.4 MB; we must refuse it without decoding 400 MB+
    p = tmp_path / "huge.png"
    _grey_png(p, 20000, 20000)
    small = tmp_path / "small.png"
    _grey_png(small, 64, 48)
    assert load_image(small).shape == (48, 64, 3)  # the writer makes valid PNGs
    t = time.perf_counter()
    assert code_of(p) == "IMAGE_TOO_LARGE"
    assert time.perf_counter() - t < 30  # generous: a hang would be minutes; not a perf threshold


def test_wrong_arrays():
    assert code_of(np.zeros((64, 64, 3), np.float32)) == "IMAGE_BAD_ARRAY"
    assert code_of(np.zeros((64, 64, 3), np.int64)) == "IMAGE_BAD_ARRAY"
    assert code_of(np.zeros((64, 64, 2), np.uint8)) == "IMAGE_BAD_ARRAY"
    assert code_of(np.zeros((4, 64, 64, 3), np.uint8)) == "IMAGE_BAD_ARRAY"
    assert code_of(np.zeros((64,), np.uint8)) == "IMAGE_BAD_ARRAY"
    assert code_of(np.zeros((0, 64, 3), np.uint8)) in ("IMAGE_EMPTY", "IMAGE_TOO_SMALL")
    assert code_of([[1, 2], [3, 4]]) == "IMAGE_BAD_TYPE"
    assert code_of(12345) == "IMAGE_BAD_TYPE"


def _pattern(h=48, w=80):
    """An asymmetric BGR pattern of flat 16x16 blocks (JPEG-friendly): every flip/rotation differs."""
    img = np.zeros((h, w, 3), np.uint8)
    for i in range(h // 16):
        for j in range(w // 16):
            img[i * 16:(i + 1) * 16, j * 16:(j + 1) * 16] = (40 * j + 20, 80 * i + 30, (70 * (i * 5 + j)) % 256)
    return img


#: EXIF orientation -> what makes the stored pixels upright (EXIF 2.3 / ImageOps.exif_transpose)
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],                    # mirrored horizontally
    3: lambda a: np.rot90(a, 2),                # rotated 180
    4: lambda a: a[::-1],                       # mirrored vertically
    5: lambda a: np.transpose(a, (1, 0, 2)),    # transpose
    6: lambda a: np.rot90(a, -1),               # rotate 90 clockwise
    7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2),  # transverse
    8: lambda a: np.rot90(a, 1),                # rotate 90 counter-clockwise
}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientations_all(tmp_path, orientation):
    from PIL import Image, ImageOps

    stored = _pattern()
    im = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    im.save(p, exif=exif, quality=95, subsampling=0)
    expected = np.ascontiguousarray(UPRIGHT[orientation](stored))
    # the table agrees with Pillow's own reading of the tag
    with Image.open(p) as check:
        ref = cv2.cvtColor(np.asarray(ImageOps.exif_transpose(check)), cv2.COLOR_RGB2BGR)
    assert ref.shape == expected.shape and np.abs(ref.astype(int) - expected).mean() < 3
    for src in (p, p.read_bytes()):
        out = load_image(src)
        assert out.shape == expected.shape, (orientation, out.shape, expected.shape)
        err = np.abs(out.astype(int) - expected.astype(int)).mean()
        assert err < 3, (orientation, err)
        # and it is not any of the other seven candidates
        for o, op in UPRIGHT.items():
            other = op(stored)
            if o != orientation and other.shape == out.shape and not np.array_equal(other, expected):
                assert np.abs(out.astype(int) - other.astype(int)).mean() > 10, (orientation, o)


def test_malformed_orientation_ignored(tmp_path):
    from PIL import Image

    stored = _pattern()
    for value in (0, 9, 300):
        im = Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB))
        exif = im.getexif()
        exif[0x0112] = value
        p = tmp_path / f"bad{value}.jpg"
        im.save(p, exif=exif, quality=95, subsampling=0)
        out = load_image(p)
        assert out.shape == stored.shape and np.abs(out.astype(int) - stored).mean() < 3
