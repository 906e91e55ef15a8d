"""Request bodies, read and parsed by the routes themselves: bounded by the bytes actually read (chunked
uploads too), JSON (images base64) or multipart/form-data (images as files), typed errors."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..errors import RequestError
from .state import Limits


def b64(item: Any, what: str, limits: Limits) -> bytes:
    if not isinstance(item, str):
        raise RequestError(f"{what} must be base64 strings", code="REQUEST_INVALID")
    if item.startswith("data:") and "," in item:   # data URLs from browsers
        item = item.split(",", 1)[1]
    if len(item) > limits.max_frame_bytes * 4 // 3 + 8:
        raise RequestError(f"a {what[:-1]} is larger than {limits.max_frame_bytes} bytes", code="REQUEST_TOO_LARGE")
    try:
        return base64.b64decode(item, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{what} must be valid base64", code="REQUEST_INVALID") from None


def _too_large(limits: Limits) -> RequestError:
    return RequestError(f"request body over {limits.max_body_bytes} bytes", code="REQUEST_TOO_LARGE")


async def body_of(request: Request, limits: Limits) -> bytes:
    """The body, refused as soon as more than ``max_body_bytes`` arrived (whatever the framing)."""
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > limits.max_body_bytes:
        raise _too_large(limits)
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limits.max_body_bytes:
                raise _too_large(limits)
    except ClientDisconnect:   # the client left mid-body: a bad request, not an internal error to log
        raise RequestError("the client disconnected before the request body was complete",
                           code="REQUEST_INVALID") from None
    return bytes(buf)


async def _form_files(form, list_field: str, limits: Limits) -> tuple[dict, list[bytes]]:
    """The parsed form's text fields and the contents of its ``list_field`` files (counted and bounded)."""
    fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    uploads = [f for f in form.getlist(list_field) if isinstance(f, UploadFile)]
    if not uploads:
        raise RequestError(f"'{list_field}' must hold at least one image file", code="REQUEST_INVALID")
    if len(uploads) > limits.max_frames:
        raise RequestError(f"at most {limits.max_frames} {list_field}", code="REQUEST_INVALID")
    for f in uploads:
        if (f.size or 0) > limits.max_frame_bytes:
            raise RequestError(f"a {list_field[:-1]} is larger than {limits.max_frame_bytes} bytes",
                               code="REQUEST_TOO_LARGE")
    return fields, [await f.read() for f in uploads]


async def multipart(request: Request, raw: bytes, list_field: str, limits: Limits) -> tuple[dict, list[bytes]]:
    async def chunks():   # the buffered body to the parser, 1 MiB at a time
        view = memoryview(raw)
        for i in range(0, len(raw), 1 << 20):
            yield bytes(view[i:i + (1 << 20)])

    parser = MultiPartParser(request.headers, chunks(), max_files=limits.max_frames + 1, max_fields=32,
                             max_part_size=limits.max_field_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise RequestError(f"malformed multipart body: {e.message}", code="REQUEST_INVALID") from None
    try:
        return await _form_files(form, list_field, limits)
    finally:
        await form.close()


def _json_items(raw: bytes, list_field: str, limits: Limits) -> tuple[dict, list[bytes]]:
    """A JSON body's object and its ``list_field`` images, base64-decoded."""
    try:
        data = json.loads(raw or b"null")
    except (ValueError, RecursionError):   # RecursionError: hostile nesting ([[[[...]]]])
        raise RequestError("body must be JSON or multipart/form-data (JSON nested at most ~900 deep)",
                           code="REQUEST_INVALID") from None
    if not isinstance(data, dict):
        raise RequestError("JSON body must be an object", code="REQUEST_INVALID")
    items = data.get(list_field)
    if not isinstance(items, list) or not items:
        raise RequestError(f"'{list_field}' must be a non-empty list of base64 images", code="REQUEST_INVALID")
    if len(items) > limits.max_frames:
        raise RequestError(f"at most {limits.max_frames} {list_field}", code="REQUEST_INVALID")
    return data, [b64(x, list_field, limits) for x in items]


async def parse(request: Request, list_field: str, limits: Limits) -> tuple[dict, list[bytes]]:
    """(the body's fields, its ``list_field`` images as bytes), JSON or multipart alike."""
    raw = await body_of(request, limits)   # bounded for every content type, before any parsing
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await multipart(request, raw, list_field, limits)
    return _json_items(raw, list_field, limits)


def field(d: dict, name: str, default=None, required=False):
    v = d.get(name, default)
    if required and (v is None or v == ""):
        raise RequestError(f"'{name}' is required", code="REQUEST_INVALID")
    if v is not None and not isinstance(v, str):
        raise RequestError(f"'{name}' must be a string", code="REQUEST_INVALID")
    return v
