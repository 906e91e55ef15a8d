"""Decompression bombs and headers of unknown size are refused before any decoder sees the pixels.

Every bomb is crafted here, at test time, without ever allocating the image it describes: a PNG is
written chunk by chunk (IHDR + an IDAT streamed row by row through zlib + IEND), other formats are
small valid files whose header claims a huge size.
"""
from __future__ import annotations

import io
import struct
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from smile2pay.errors import ImageError
from smile2pay.imageio import load_image

from helpers import BOMBS, write_zero_png
FAST_S = 5.0  # a header check takes milliseconds; decoding a bomb takes seconds and gigabytes


def _code(src, **kw) -> ImageError:
    with pytest.raises(ImageError) as e:
        load_image(src, **kw)
    return e.value


def test_png_writer_makes_valid_files(tmp_path):
    # the same writer, small: decodable, so the bombs are real PNGs and not just corrupt files
    assert load_image(write_zero_png(tmp_path / "s8.png", 64, 48, 8)).shape == (48, 64, 3)
    img = load_image(write_zero_png(tmp_path / "s1.png", 40, 24, 1))
    assert img.shape == (24, 40, 3) and not img.any()


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_png_bomb_refused_before_decoding(png_bombs, name):
    path = png_bombs[name]
    for src in (path, str(path), path.read_bytes()):
        t = time.perf_counter()
        err = _code(src)
        dt = time.perf_counter() - t
        assert err.code == "IMAGE_TOO_LARGE", (err.code, err.message)
        assert dt < FAST_S, f"{name}: refusing took {dt:.1f}s -- was it decoded?"


# ------------------------------------------------------------------ other formats: patched headers
def _small(fmt: str, mode: str = "RGB", **kw) -> bytearray:
    b = io.BytesIO()
    Image.new(mode, (16, 16), 90).save(b, fmt, **kw)
    return bytearray(b.getvalue())


def _jpeg(w, h):
    d = _small("JPEG")
    i = d.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    d[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(d)


def _gif(w, h):
    d = _small("GIF", "P")
    d[6:10] = struct.pack("<HH", w, h)  # logical screen size
    return bytes(d)


def _bmp(w, h):
    d = _small("BMP")
    d[18:26] = struct.pack("<ii", w, h)  # BITMAPINFOHEADER width, height
    return bytes(d)


def _tiff(w, h):
    b = io.BytesIO()
    Image.new("L", (16, 16), 90).save(b, "TIFF", compression="tiff_deflate")
    d = bytearray(b.getvalue())
    assert d[:4] == b"II*\x00"
    ifd = struct.unpack("<I", d[4:8])[0]
    for k in range(struct.unpack("<H", d[ifd:ifd + 2])[0]):
        e = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", d[e:e + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            val = w if tag == 256 else h
            d[e + 8:e + 12] = struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val)
    return bytes(d)


def _webp(w, h):
    d = _small("WEBP", lossless=True)
    assert d[12:16] == b"VP8L" and d[20] == 0x2F
    bits = struct.unpack("<I", d[21:25])[0]
    bits = (bits & ~0xFFFFFFF) | ((w - 1) & 0x3FFF) | (((h - 1) & 0x3FFF) << 14)  # 14-bit sizes
    d[21:25] = struct.pack("<I", bits)
    return bytes(d)


def _ppm(w, h):
    return f"P5\n{w} {h}\n255\n".encode() + b"\x00" * (w * h if w * h <= 4096 else 256)


def _png(w, h):
    d = _small("PNG")
    d[16:24] = struct.pack(">II", w, h)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])) & 0xFFFFFFFF)
    return bytes(d)


PATCHED = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp, "tiff": _tiff, "webp": _webp, "ppm": _ppm}


@pytest.mark.parametrize("fmt", sorted(PATCHED))
def test_every_format_checks_the_header_size(fmt, tmp_path):
    make = PATCHED[fmt]
    # the unpatched file is a valid image, decoded as before
    ok = make(16, 16)
    assert load_image(ok).shape == (16, 16, 3)
    # a header far above Pillow's decompression-bomb limit (WebP sizes are 14-bit: 16384 max)
    big = 16384 if fmt == "webp" else 30000
    # and one above our limit (40 MP) but below Pillow's (2 x 89 MP): our own check answers, with the size
    for (w, h), sized in (((big, big), False), ((8000, 8000), True)):
        p = tmp_path / f"bomb_{w}.{fmt}"
        p.write_bytes(make(w, h))
        for src in (p, p.read_bytes()):
            t = time.perf_counter()
            err = _code(src)
            assert err.code == "IMAGE_TOO_LARGE", (fmt, w, h, err.code, err.message)
            assert time.perf_counter() - t < FAST_S
            if sized:
                assert (err.details["width"], err.details["height"]) == (w, h)
    # a smaller limit applies to the header as well
    assert _code(make(16, 16), max_pixels=100).code == "IMAGE_TOO_LARGE"


UNKNOWN_HEADERS = {
    # formats OpenCV decodes but whose header we do not parse: the size is unknown -> refused
    "pam": b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 1\nMAXVAL 255\nTUPLTYPE GRAYSCALE\nENDHDR\n" + b"\x00" * 256,
    "radiance_hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + b"\x00" * 256,
    "tga": b"\x00\x00\x03" + b"\x00" * 9 + struct.pack("<HH", 30000, 30000) + b"\x08\x00" + b"\x00" * 256,
    "random": bytes(np.random.RandomState(0).randint(0, 256, 4096, dtype=np.uint8)),
    "png_bad_ihdr": b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + b"\xff" * 17 + b"\x00" * 64,
}


@pytest.mark.parametrize("name", sorted(UNKNOWN_HEADERS))
def test_unparseable_header_is_refused_not_decoded(name, tmp_path):
    data = UNKNOWN_HEADERS[name]
    p = tmp_path / f"x.{name}"
    p.write_bytes(data)
    for src in (p, data):
        t = time.perf_counter()
        err = _code(src)
        assert err.code == "IMAGE_UNREADABLE", (name, err.code, err.message)
        assert time.perf_counter() - t < FAST_S


def test_pillow_limit_is_respected_and_not_needed(png_bombs, monkeypatch):
    p = png_bombs["png_30000x30000_8bit"]
    # Pillow's decompression-bomb limit is respected even when the caller allows more pixels
    assert _code(p, max_pixels=10 ** 10).code == "IMAGE_TOO_LARGE"
    # with Pillow's check switched off by the application, our own limit still holds, before decoding
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    t = time.perf_counter()
    err = _code(p)
    assert err.code == "IMAGE_TOO_LARGE" and (err.details["width"], err.details["height"]) == (30000, 30000)
    assert time.perf_counter() - t < FAST_S


def test_decompression_bomb_warning(monkeypatch, tmp_path):
    p = write_zero_png(tmp_path / "w.png", 48, 32)  # 1536 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1000 < 1536 <= 2 * 1000: Pillow warns
    with pytest.warns(Image.DecompressionBombWarning):
        assert load_image(p).shape == (32, 48, 3)  # a warning only: within our own limit, decoded
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert _code(p).code == "IMAGE_TOO_LARGE"  # warnings as errors: a typed error, no traceback


def test_decoder_failures_are_typed(monkeypatch, tmp_path):
    p = write_zero_png(tmp_path / "ok.png", 64, 48)

    def cv2_error(*a, **k):
        raise cv2.error("OpenCV(5.x) loadsave.cpp: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    def no_memory(*a, **k):
        raise MemoryError

    monkeypatch.setattr(cv2, "imdecode", cv2_error)
    assert _code(p).code == "IMAGE_UNREADABLE"
    monkeypatch.setattr(cv2, "imdecode", no_memory)
    assert _code(p).code == "IMAGE_TOO_LARGE"
    # a decoder that returns more pixels than the header said is still held to the limit
    monkeypatch.setattr(cv2, "imdecode", lambda *a, **k: np.zeros((8000, 8000), np.uint8))
    assert _code(p).code == "IMAGE_TOO_LARGE"
