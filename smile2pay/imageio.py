"""Decode and validate input images: a path, raw bytes or a NumPy array -> BGR uint8 (H, W, 3).

Anything that is not a usable image raises :class:`ImageError` with a stable code.
Conversions that are unambiguous are done (grey -> BGR, BGRA -> BGR, 16-bit -> 8-bit);
the rest is refused rather than guessed.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

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


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels, or None if unknown."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # Pillow raises many types for unknown/corrupt data; cv2 decides below
        return None


def decode_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
                 name: str = "<bytes>") -> np.ndarray:
    if len(data) == 0:
        raise ImageError(f"image {name} is empty (0 bytes)", code="IMAGE_EMPTY", source=name)
    if len(data) > max_bytes:
        raise ImageError(f"image {name} is {len(data)} bytes, above the limit of {max_bytes}",
                         code="IMAGE_TOO_LARGE", source=name, bytes=len(data))
    size = _header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        # Refuse before decoding: a 20000x20000 image would need 1.2 GB just to look at.
        raise ImageError(f"image {name} is {size[0]}x{size[1]} pixels, above the limit of {max_pixels}",
                         code="IMAGE_TOO_LARGE", source=name, width=size[0], height=size[1],
                         max_pixels=max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ImageError(f"{name} is not a decodable image (corrupt, truncated, or not an image format)",
                         code="IMAGE_UNREADABLE", source=name)
    try:
        img = _apply_exif_orientation(data, img)
        return from_array(img)
    except ImageError as e:
        raise ImageError(f"{name}: {e.message}", code=e.code, source=name) from None


def _apply_exif_orientation(data: bytes, img: np.ndarray) -> np.ndarray:
    """Rotate as the EXIF orientation tag says (phone photos), done once here for every caller."""
    if not data[:2] == b"\xff\xd8":
        return img
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return img
    ops = {3: lambda a: cv2.rotate(a, cv2.ROTATE_180), 6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
           8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE), 2: lambda a: cv2.flip(a, 1),
           4: lambda a: cv2.flip(a, 0)}
    op = ops.get(orientation)
    return op(img) if op else img


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
