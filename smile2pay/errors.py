"""Typed errors with stable codes.

Every failure the SDK can detect is raised as a subclass of :class:`Smile2PayError`
carrying a stable ``code`` (a caller can branch on it), a human message, and a
``details`` dict that is safe to log (never images, never embeddings).
"""
from __future__ import annotations

import math
from typing import Any

from .reasons import NO_FACE


class Smile2PayError(Exception):
    """Base class. ``code`` is stable across releases; ``message`` is for people."""

    code = "SMILE2PAY_ERROR"
    #: CLI exit code for this family of errors (2 = bad input / setup).
    exit_code = 2

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "type": type(self).__name__,
                "code": self.code,
                "message": _text(self.message),
                "details": {k: _jsonable(v) for k, v in self.details.items()},
            }
        }

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"[{self.code}] {self.message}"


#: the longest text an error body repeats: a caller's 200 kB rule string is echoed as its head and its length
MAX_ECHO_CHARS = 2000


def _text(s: str) -> str:
    """``s`` as text any JSON encoder can write: a lone surrogate (``"\\ud800"`` from a JSON body or a
    non-UTF-8 argument) is escaped, as ``repr`` would, rather than failing the error's own rendering; text over
    :data:`MAX_ECHO_CHARS` is cut there (an error should not echo a megabyte of the caller's input back)."""
    if len(s) > MAX_ECHO_CHARS:
        s = f"{s[:MAX_ECHO_CHARS]}... ({len(s)} characters)"
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def bad_chars(s: str, *, controls: bool = True, delete: bool = False) -> bool:
    """True when ``s`` holds a lone surrogate (0xD800-0xDFFF, e.g. a JSON ``"\\ud800"`` or a command-line argument
    that is not UTF-8: not text, no database or hash can take it), or, with ``controls``, a control character
    below 32 (and DEL with ``delete``). The one character test of the ids and labels callers give."""
    for ch in s:
        o = ord(ch)
        if 0xD800 <= o <= 0xDFFF or (controls and o < 32) or (delete and o == 127):
            return True
    return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)     # NaN / inf are not JSON (an HTTP error body is rendered strictly)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {_text(str(k)): _jsonable(v) for k, v in value.items()}
    return _text(str(value))


class ImageError(Smile2PayError):
    """The input image could not be read or is not usable.

    Codes: IMAGE_NOT_FOUND, IMAGE_EMPTY, IMAGE_UNREADABLE, IMAGE_TOO_SMALL,
    IMAGE_TOO_LARGE, IMAGE_BAD_ARRAY, IMAGE_BAD_TYPE.
    """

    code = "IMAGE_UNREADABLE"


class ModelError(Smile2PayError):
    """A model file is missing, corrupt, unknown or failed to load.

    Codes: MODEL_MISSING, MODEL_CHECKSUM_MISMATCH, MODEL_UNKNOWN, MODEL_LOAD_FAILED,
    MODEL_DOWNLOAD_FAILED, MODEL_PROVIDER_UNAVAILABLE.
    """

    code = "MODEL_ERROR"


class ConfigError(Smile2PayError):
    """A setting has an invalid value (e.g. a threshold out of range)."""

    code = "CONFIG_INVALID"


class GalleryError(Smile2PayError):
    """The gallery (enrolled templates) cannot be opened or changed."""

    code = "GALLERY_ERROR"


class RuleError(Smile2PayError):
    """An AU rule such as ``"AU6+AU12-AU4"`` is malformed or names an unknown AU."""

    code = "RULE_INVALID"


class RequestError(Smile2PayError):
    """A request (API or HTTP) is malformed."""

    code = "REQUEST_INVALID"


class FaceError(Smile2PayError):
    """No usable face where exactly one was required (NO_FACE, MULTIPLE_FACES, LOW_QUALITY)."""

    code = NO_FACE
    exit_code = 1
