"""Module-level helpers shared by a tests/unit file and its tests/integration namesake (fixtures live in
conftest.py): ``from helpers import run`` the way the tests import ``conftest``."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from smile2pay.errors import ImageError
from smile2pay.gallery import open_gallery
from smile2pay.imageio import load_image


# ------------------------------------------------------------------- the CLI as a user runs it (a subprocess)
def run(*args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, "-m", "smile2pay.cli", *args], capture_output=True, text=True,
                       env=env, timeout=300)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------------- galleries (test_gallery*.py)
FP = "w600k_mbf:test"
#: galleries are encrypted by default (issue 16): the tests' galleries use this key unless they say otherwise
KEY = bytes.fromhex("3c" * 32)


def _open(url, **kw):
    kw.setdefault("fingerprint", FP)
    if "key" not in kw and not kw.get("plaintext"):
        kw["key"] = KEY
    return open_gallery(url, **kw)


# ------------------------------------------------------------------------- image input (test_imageio*.py)
def code_of(src, **kw):
    with pytest.raises(ImageError) as e:
        load_image(src, **kw)
    return e.value.code


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def write_zero_png(path: Path, width: int, height: int, bit_depth: int = 8) -> Path:
    """A complete, valid greyscale (colour type 0) PNG of zeros; only one row is ever in memory."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)  # filter byte 0 + packed samples
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


BOMBS = {  # name -> (width, height, bit depth)
    "png_30000x30000_8bit": (30000, 30000, 8),
    "png_40000x40000_1bit": (40000, 40000, 1),
}
