"""HTTP service for payment backends (FastAPI; ``pip install smile2pay[server]``).

Endpoints (all but /healthz need the API key in ``X-API-Key`` or ``Authorization: Bearer``):

* ``POST /v1/verify``  JSON ``{"user_id", "frames": [base64 JPEG/PNG...], "require", "liveness", "nonce"}``
  or multipart (fields ``user_id``, ``require``, ``liveness``, ``nonce``; files ``frames``) -> Decision
* ``POST /v1/enroll``  JSON ``{"user_id", "images": [base64...], "kind", "mode"}`` or multipart -> result
* ``DELETE /v1/users/{user_id}``  erase a user (rows, vectors, baseline, lockout state; compacted)
* ``POST /v1/identify``  JSON ``{"images": [one base64 image], "k"}`` -> open-set 1:N candidates
* ``GET /healthz``  (with a PostgreSQL gallery: the change sequence position, lag and last contact)

Gallery or guard database unreachable (PostgreSQL fleet): 503 with ``Retry-After``.

Errors are JSON ``{"error": {"code", "message", ...}}`` with the SDK's stable codes. Request bodies
and frame counts are bounded; model sessions are shared by the worker threads (onnxruntime's
``run`` is thread-safe; the gallery and guard lock their own state).
"""
from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ..decision import population
from ..errors import GalleryError, RequestError, Smile2PayError
from .stream_routes import add_stream_routes, is_public

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 25 * 1024 * 1024
    max_frames: int = 30
    max_frame_bytes: int = 8 * 1024 * 1024


_STATUS = {"GALLERY_USER_NOT_FOUND": 404, "GALLERY_DUPLICATE": 409, "GALLERY_USER_EXISTS": 409,
           "REQUEST_TOO_LARGE": 413, "UNAUTHORIZED": 401}


def _status_for(e: Smile2PayError) -> int:
    if e.code in _STATUS:
        return _STATUS[e.code]
    if type(e).__name__ in ("ModelError",) or e.code in ("GUARD_UNAVAILABLE", "GALLERY_IO",
                                                         "GALLERY_UNAVAILABLE"):
        return 503
    return 400


def _b64(item: Any, what: str, limits: Limits) -> bytes:
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


def create_app(s2p, api_key: str, limits: Limits = Limits()) -> FastAPI:
    if not api_key or len(api_key) < 16:
        raise RequestError("the server needs an API key of at least 16 characters", code="CONFIG_INVALID")
    app = FastAPI(title="smile2pay", version="1", docs_url=None, redoc_url=None)
    expected = api_key.encode()

    def err(e: Smile2PayError) -> JSONResponse:
        status = _status_for(e)
        headers = None
        if status == 503:   # a clean "try again": the shared gallery/guard database is unreachable
            headers = {"Retry-After": str(max(1, int(round(float(e.details.get("retry_after_s") or 1)))))}
        return JSONResponse(e.to_dict(), status_code=status, headers=headers)

    def authorised(request: Request) -> bool:
        got = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not got and auth.lower().startswith("bearer "):
            got = auth[7:]
        return hmac.compare_digest(got.encode(), expected)

    async def body_of(request: Request) -> bytes:
        cl = request.headers.get("content-length")
        if cl and cl.isdigit() and int(cl) > limits.max_body_bytes:
            raise RequestError(f"request body over {limits.max_body_bytes} bytes", code="REQUEST_TOO_LARGE")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limits.max_body_bytes:
                raise RequestError(f"request body over {limits.max_body_bytes} bytes", code="REQUEST_TOO_LARGE")
        return bytes(buf)

    async def parse(request: Request, list_field: str) -> tuple[dict, list[bytes]]:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            cl = request.headers.get("content-length")
            if cl and cl.isdigit() and int(cl) > limits.max_body_bytes:
                raise RequestError(f"request body over {limits.max_body_bytes} bytes", code="REQUEST_TOO_LARGE")
            form = await request.form(max_files=limits.max_frames + 1, max_fields=32)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            files = [await f.read() for f in form.getlist(list_field) if not isinstance(f, str)]
            return fields, files
        raw = await body_of(request)
        import json

        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise RequestError("body must be JSON or multipart/form-data", code="REQUEST_INVALID") from None
        if not isinstance(data, dict):
            raise RequestError("JSON body must be an object", code="REQUEST_INVALID")
        items = data.get(list_field)
        if not isinstance(items, list) or not items:
            raise RequestError(f"'{list_field}' must be a non-empty list of base64 images", code="REQUEST_INVALID")
        if len(items) > limits.max_frames:
            raise RequestError(f"at most {limits.max_frames} {list_field}", code="REQUEST_INVALID")
        return data, [_b64(x, list_field, limits) for x in items]

    def field(d: dict, name: str, default=None, required=False):
        v = d.get(name, default)
        if required and (v is None or v == ""):
            raise RequestError(f"'{name}' is required", code="REQUEST_INVALID")
        if v is not None and not isinstance(v, str):
            raise RequestError(f"'{name}' must be a string", code="REQUEST_INVALID")
        return v

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if request.url.path != "/healthz" and not is_public(request.url.path) and not authorised(request):
            return JSONResponse({"error": {"code": "UNAUTHORIZED", "message": "missing or wrong API key"}},
                                status_code=401)
        return await call_next(request)

    @app.exception_handler(Smile2PayError)
    async def on_sdk_error(request: Request, e: Smile2PayError):
        return err(e)

    @app.exception_handler(Exception)
    async def on_internal(request: Request, e: Exception):  # never leak internals; log server-side
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": {"code": "INTERNAL", "message": "internal error; retry later"}},
                            status_code=500, headers={"Retry-After": "1"})

    @app.exception_handler(404)
    async def on_404(request: Request, e):
        return JSONResponse({"error": {"code": "NOT_FOUND", "message": f"no route {request.url.path}"}},
                            status_code=404)

    @app.exception_handler(405)
    async def on_405(request: Request, e):
        return JSONResponse({"error": {"code": "METHOD_NOT_ALLOWED", "message": "method not allowed"}},
                            status_code=405)

    @app.get("/healthz")
    def healthz():
        out = {"ok": True, "model_pack": s2p.pipeline.pack.name, "policy": s2p.policy.version}
        try:
            out["identity"] = population.summary(s2p.identity_operating_point())
        except Smile2PayError:
            pass           # database down: reported below with the gallery's own state
        health = getattr(s2p.gallery, "health", None)
        if health is not None:     # PostgreSQL gallery: change sequence position, lag, last contact
            out["gallery"] = health()
        try:
            out["users"] = s2p.count()
        except Smile2PayError as e:   # database down: still serving 1:N / 1:1 from the cached index
            out["users"] = None
            out["gallery_error"] = e.code
        return out

    @app.post("/v1/identify")
    async def identify(request: Request):
        """1:N: JSON ``{"images": [one base64 image], "k": 5}`` -> candidates (``match``: >= threshold)."""
        data, images = await parse(request, "images")
        if len(images) != 1:
            raise RequestError("identify takes exactly one image", code="REQUEST_INVALID")
        k = data.get("k", 5)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
            raise RequestError("'k' must be an integer in 1..100", code="REQUEST_INVALID")
        matches = await run_in_threadpool(s2p.identify, images[0], k)
        best = matches[0].user_id if matches and matches[0].match else None
        return {"identified": best, "threshold": s2p.identity_threshold,
                "candidates": [m.to_dict() for m in matches]}

    @app.post("/v1/verify")
    async def verify(request: Request):
        data, frames = await parse(request, "frames")
        if len(frames) > limits.max_frames:
            raise RequestError(f"at most {limits.max_frames} frames", code="REQUEST_INVALID")
        uid = field(data, "user_id", required=True)
        d = await run_in_threadpool(s2p.verify, uid, frames, require=field(data, "require", "AU6+AU12"),
                                    liveness=field(data, "liveness", "burst"), nonce=field(data, "nonce"),
                                    request_id=request.headers.get("x-request-id"))
        return d.to_dict()

    @app.post("/v1/enroll")
    async def enroll(request: Request):
        data, images = await parse(request, "images")
        uid = field(data, "user_id", required=True)
        res = await run_in_threadpool(s2p.enroll, uid, images, kind=field(data, "kind", "neutral"),
                                      mode=field(data, "mode", "new"))
        return res.to_dict()

    @app.delete("/v1/users/{user_id}")
    def remove(user_id: str):
        try:
            n = s2p.remove(user_id)
        except GalleryError as e:
            return err(e)
        s2p.compact()
        return {"removed": user_id, "templates": n}

    add_stream_routes(app, s2p, expected, limits)   # /v1/stream (WebSocket) and the /kiosk page
    return app


def serve(args) -> None:  # pragma: no cover - exercised through a real server in the tests
    import uvicorn

    from ..api import Smile2Pay
    from ..cli import settings_from
    from ..config import api_key_from_env
    from ..cli_gallery import _gsettings

    s2p = Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=_gsettings(args),
                    policy=args.policy, far=args.far)
    app = create_app(s2p, api_key_from_env(args.api_key_file))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
