"""Decode and validate input images: a path, raw bytes or a NumPy array -> BGR uint8 (H, W, 3).

Anything that is not a usable image raises :class:`ImageError` with a stable code.
Conversions that are unambiguous are done (grey -> BGR, BGRA -> BGR, 16-bit -> 8-bit);
the rest is refused rather than guessed.

Files and bytes are safe by default: the image size is read from the header (Pillow parses headers
lazily) and checked against ``max_pixels`` before any decoder touches the pixels, so a small
decompression bomb (a 1 MB PNG of 30000x30000) costs nothing. A header that cannot be parsed means an
unknown size, and is refused rather than decoded.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import NamedTuple, Union

import cv2
import numpy as np

from .errors import ImageError

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_MIN_SIDE = 16


def load_image(src: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
               min_side: int = DEFAULT_MIN_SIDE) -> np.ndarray:
    """Return a C-contiguous BGR uint8 image of shape (H, W, 3)."""
    if isinstance(src, np.ndarray):
        img = from_array(src)
    elif isinstance(src, (bytes, bytearray, memoryview)):
        img = decode_bytes(bytes(src), max_pixels=max_pixels, max_bytes=max_bytes)
    elif isinstance(src, (str, os.PathLike)):
        img = decode_bytes(read_file(src, max_bytes=max_bytes), max_pixels=max_pixels, max_bytes=max_bytes,
                           name=str(src))
    else:
        raise ImageError(f"expected an image path, bytes or a NumPy array, got {type(src).__name__}",
                         code="IMAGE_BAD_TYPE", got=type(src).__name__)
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        raise ImageError(f"image is {w}x{h}; at least {min_side}x{min_side} pixels are needed to find a face",
                         code="IMAGE_TOO_SMALL", width=w, height=h, min_side=min_side)
    if h * w > max_pixels:
        raise ImageError(f"image is {w}x{h} = {w * h} pixels, above the limit of {max_pixels}",
                         code="IMAGE_TOO_LARGE", width=w, height=h, max_pixels=max_pixels)
    return img


def read_file(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {p}", code="IMAGE_NOT_FOUND", path=str(p)) from None
    except OSError as e:
        raise ImageError(f"cannot access {p}: {e.strerror}", code="IMAGE_UNREADABLE", path=str(p)) from None
    except ValueError as e:   # a path no file can have (an embedded NUL byte, e.g. from a CSV)
        raise ImageError(f"invalid image path {str(p)!r}: {e}", code="IMAGE_NOT_FOUND", path=str(p)) from None
    if not p.is_file():
        raise ImageError(f"not a regular file: {p}", code="IMAGE_UNREADABLE", path=str(p))
    if st.st_size == 0:
        raise ImageError(f"image file is empty (0 bytes): {p}", code="IMAGE_EMPTY", path=str(p))
    if st.st_size > max_bytes:
        raise ImageError(f"image file is {st.st_size} bytes, above the limit of {max_bytes}",
                         code="IMAGE_TOO_LARGE", path=str(p), bytes=st.st_size, max_bytes=max_bytes)
    try:
        return p.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {p}: {e.strerror}", code="IMAGE_UNREADABLE", path=str(p)) from None


#: Pillow formats whose header we trust to give the size cv2 will decode. Each has a strong magic
#: number that cv2 keys on too, so both libraries agree on what the file is. Anything else is refused
#: before decoding: a header we cannot read means a size we do not know.
#: (JPEG covers MPO too: Pillow opens multi-picture JPEGs through the JPEG plugin.)
_HEADER_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "JPEG2000", "AVIF", "SUN")

#: formats whose EXIF orientation is applied (reading EXIF from these never decodes pixels)
_EXIF_FORMATS = ("JPEG", "MPO")


class _Header(NamedTuple):
    width: int
    height: int
    format: str
    orientation: int


def _too_large(name: str, width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(f"image {name} is {width}x{height} pixels, above the limit of {max_pixels}",
                      code="IMAGE_TOO_LARGE", source=name, width=width, height=height, max_pixels=max_pixels)


def _bomb_error(name: str, exc: Exception, max_pixels: int) -> ImageError:
    """Pillow refused the header as a decompression bomb (above ``PIL.Image.MAX_IMAGE_PIXELS``)."""
    from PIL import Image

    details: dict = {"source": name, "max_pixels": max_pixels, "reason": "decompression_bomb"}
    m = re.search(r"\((\d+) pixels\)", str(exc))
    if m:
        details["pixels"] = int(m.group(1))
    if Image.MAX_IMAGE_PIXELS is not None:
        details["pillow_max_pixels"] = int(Image.MAX_IMAGE_PIXELS)
    pixels = f" ({details['pixels']} pixels)" if "pixels" in details else ""
    return ImageError(f"image {name}{pixels} is above the decoder's pixel limit (decompression bomb); "
                      f"not decoded", code="IMAGE_TOO_LARGE", **details)


def _read_header(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> _Header:
    """Parse the file header only (Pillow opens lazily: no pixel is decoded) and check the size.

    Raises IMAGE_TOO_LARGE above ``max_pixels`` -- or above Pillow's own decompression-bomb limit,
    ``PIL.Image.MAX_IMAGE_PIXELS``, which is respected, never raised -- and IMAGE_UNREADABLE when the
    header is unknown, corrupt or of a format we do not decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(data), formats=_HEADER_FORMATS)
    except Image.DecompressionBombError as e:
        raise _bomb_error(name, e, max_pixels) from None
    except Image.DecompressionBombWarning as e:  # only raised when warnings are turned into errors
        raise _bomb_error(name, e, max_pixels) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image in a supported format (PNG, JPEG, WebP, BMP, TIFF, GIF, "
                         f"PPM, JPEG 2000, AVIF)", code="IMAGE_UNREADABLE", source=name,
                         reason="unknown_format") from None
    except Exception as e:  # Pillow raises many types for corrupt headers: SyntaxError, OSError, struct.error...
        raise ImageError(f"{name} has a corrupt or truncated image header ({type(e).__name__})",
                         code="IMAGE_UNREADABLE", source=name, reason="corrupt_header") from None
    with im:
        fmt = str(im.format)
        width, height = int(im.size[0]), int(im.size[1])
        if width <= 0 or height <= 0:
            raise ImageError(f"{name} has an invalid image size {width}x{height} in its header",
                             code="IMAGE_UNREADABLE", source=name, reason="corrupt_header")
        if width * height > max_pixels:
            # Refuse before decoding: a 20000x20000 image would need 1.2 GB just to look at.
            raise _too_large(name, width, height, max_pixels)
        orientation = _exif_orientation(im) if fmt in _EXIF_FORMATS else 1
    return _Header(width, height, fmt, orientation)


def _exif_orientation(im) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF is ignored, as viewers do
        return 1
    return value if 1 <= value <= 8 else 1


def decode_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                 name: str = "<bytes>") -> np.ndarray:
    if len(data) == 0:
        raise ImageError(f"image {name} is empty (0 bytes)", code="IMAGE_EMPTY", source=name)
    if len(data) > max_bytes:
        raise ImageError(f"image {name} is {len(data)} bytes, above the limit of {max_bytes}",
                         code="IMAGE_TOO_LARGE", source=name, bytes=len(data))
    # The size comes from the header, before any decoder sees the pixels; no header, no decode.
    header = _read_header(data, name=name, max_pixels=max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        img = None
    except MemoryError:
        raise ImageError(f"not enough memory to decode {name} ({header.width}x{header.height})",
                         code="IMAGE_TOO_LARGE", source=name, width=header.width, height=header.height,
                         reason="out_of_memory") from None
    if img is None:
        raise ImageError(f"{name} is not a decodable image (corrupt, truncated, or not an image format)",
                         code="IMAGE_UNREADABLE", source=name, reason="decode_failed")
    h, w = img.shape[:2]
    if h * w > max_pixels:  # the decoder disagreed with the header; never hand on more than allowed
        raise _too_large(name, w, h, max_pixels)
    try:
        img = _apply_exif_orientation(img, header.orientation)
        return from_array(img)
    except ImageError as e:
        raise ImageError(f"{name}: {e.message}", code=e.code, source=name) from None


#: EXIF orientation -> the operation that makes the stored pixels upright (as ImageOps.exif_transpose)
_ORIENT = {
    2: lambda a: a[:, ::-1],                       # mirror horizontally
    3: lambda a: a[::-1, ::-1],                    # rotate 180
    4: lambda a: a[::-1],                          # mirror vertically
    5: lambda a: a.swapaxes(0, 1),                 # transpose
    6: lambda a: np.rot90(a, -1),                  # rotate 90 clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),     # transverse
    8: lambda a: np.rot90(a, 1),                   # rotate 90 counter-clockwise
}


def _apply_exif_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip as the EXIF orientation tag says (phone photos), done once here for every caller."""
    op = _ORIENT.get(orientation)
    return np.ascontiguousarray(op(img)) if op else img


def from_array(arr: np.ndarray) -> np.ndarray:
    """Validate/convert an array (BGR convention, like OpenCV) to BGR uint8 (H, W, 3)."""
    if not isinstance(arr, np.ndarray):
        raise ImageError(f"expected a NumPy array, got {type(arr).__name__}", code="IMAGE_BAD_TYPE")
    a = arr
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {a.shape}",
                         code="IMAGE_BAD_ARRAY", shape=list(a.shape))
    if a.size == 0:
        raise ImageError(f"image array is empty (shape {a.shape})", code="IMAGE_EMPTY", shape=list(a.shape))
    if a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageError(
            f"image array must be uint8 (or uint16); got {a.dtype}. Convert float images in [0, 1] with "
            f"(img * 255).round().astype(np.uint8)", code="IMAGE_BAD_ARRAY", dtype=str(a.dtype))
    if a.ndim == 2:
        a = cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    elif a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(a)
