"""HTTP service for payment backends (FastAPI; ``pip install '.[server]'``).

Endpoints (all but /healthz need an API key in ``X-API-Key`` or ``Authorization: Bearer``). Two
scopes: the admin key (``create_app``'s ``api_key``; SMILE2PAY_API_KEY) may do everything; the optional
kiosk key (``kiosk_api_key``; SMILE2PAY_KIOSK_API_KEY) may only verify (``POST /v1/verify`` and the
``/v1/stream`` WebSocket), any other route answers 403 FORBIDDEN to it.

* ``POST /v1/verify``  JSON ``{"user_id", "frames": [base64 JPEG/PNG...], "require", "liveness", "nonce"}``
  or multipart (fields ``user_id``, ``require``, ``liveness``, ``nonce``; files ``frames``) -> Decision
* ``POST /v1/enroll``  JSON ``{"user_id", "images": [base64...], "kind", "mode"}`` or multipart -> result
* ``DELETE /v1/users/{user_id}``  erase a user (rows, vectors, baseline, lockout state; compacted)
* ``POST /v1/users/{user_id}/unlock``  lift a lockout early -> ``{"user_id", "was_locked"}`` (admin)
* ``POST /v1/identify``  JSON ``{"images": [one base64 image], "k"}`` -> open-set 1:N candidates
* ``GET /v1/users?offset=0&limit=100``  the enrolled user ids, paged -> ``{"users", "count", "offset", "limit",
  "next_offset"}`` (admin)
* ``GET /v1/users/{user_id}``  one user's record without templates: template count per kind, dates (admin)
* ``GET /healthz``  (with a PostgreSQL gallery: the change sequence position, lag and last contact)
* ``GET /docs``, ``GET /openapi.json``  the API reference (no key; ``create_app(docs=False)`` or
  ``SMILE2PAY_DOCS=0`` turns them off). The JSON bodies are documented by the pydantic models below
  (:class:`VerifyRequest`, :class:`EnrollRequest`, :class:`IdentifyRequest`) and their multipart forms;
  the routes still read the body themselves (bounded, see below), the models only describe it.

Gallery or guard database unreachable (PostgreSQL fleet): 503 with ``Retry-After``.

Errors are JSON ``{"error": {"code", "message", ...}}`` with the SDK's stable codes. Request bodies
are bounded by the bytes actually read (chunked uploads too, JSON and multipart alike), each frame by
``Limits.max_frame_bytes``, frame counts by ``Limits.max_frames``; verify (and stream starts) are
rate-limited per client (API key + remote address): 429 RATE_LIMITED with ``Retry-After``. Model
sessions are shared by the worker threads (onnxruntime's ``run`` is thread-safe; the gallery and
guard lock their own state).
"""
from __future__ import annotations

import base64
import binascii
import collections
import hmac
import json
import logging
import math
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Optional

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..decision import population
from ..errors import GalleryError, RequestError, Smile2PayError
from ..reasons import INTERNAL
from .stream_routes import add_stream_routes, is_public

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 25 * 1024 * 1024   # bytes read from any request body (chunked or not)
    max_frames: int = 30
    max_frame_bytes: int = 8 * 1024 * 1024   # each frame / image, base64 or multipart file
    #: verify requests (POST /v1/verify and /v1/stream starts) per minute per client, a client being
    #: the API key's scope + the remote address; bursts up to this many. 0: no limit.
    verify_per_minute: int = 60
    #: clients the rate limiter remembers (the least recently seen are forgotten beyond this)
    max_rate_clients: int = 10_000
    max_field_bytes: int = 64 * 1024         # a multipart text field (user_id, nonce...)


_STATUS = {"GALLERY_USER_NOT_FOUND": 404, "GALLERY_DUPLICATE": 409, "GALLERY_USER_EXISTS": 409,
           "REQUEST_TOO_LARGE": 413, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "RATE_LIMITED": 429}
#: what the kiosk key may call; every other authenticated route is the admin key's
KIOSK_ROUTES = frozenset({("POST", "/v1/verify")})
ADMIN, KIOSK = "admin", "kiosk"
#: the API reference (served without a key when docs are on: it holds no secret)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


# ------------------------------------------------------------------------------ request bodies (docs)
# The routes parse their bodies themselves (bounded reads, JSON or multipart, typed errors): these models
# describe the wire format in the OpenAPI schema (/docs) and are what a client can build requests from.
class VerifyRequest(BaseModel):
    """The payment decision's request. As multipart/form-data: the same fields, frames as image files."""

    user_id: str = Field(description="the claimed (enrolled) user id", examples=["alice"])
    frames: list[str] = Field(min_length=1, description="the burst, oldest first: base64 JPEG/PNG images "
                                                        "(data: URLs accepted); a neutral face, then the smile")
    require: str = Field("AU6+AU12", description="AU rule: required AUs joined by +, forbidden by -",
                         examples=["AU6+AU12", "AU6+AU12-AU4"])
    liveness: Literal["burst", "none"] = Field("burst", description="burst: the smile must appear during the "
                                                                    "frames; none needs allow_single_frame on the server")
    nonce: Optional[str] = Field(None, description="single-use request id: a replay is declined with REPLAY",
                                 examples=["order-8812"])


class EnrollRequest(BaseModel):
    """Enrol a user. As multipart/form-data: the same fields, images as image files."""

    user_id: str = Field(description="the id to enrol the images under", examples=["alice"])
    images: list[str] = Field(min_length=1, description="base64 JPEG/PNG images, one face each")
    kind: str = Field("neutral", description="template kind; a neutral image is also the user's AU baseline",
                      examples=["neutral", "smile"])
    mode: Literal["new", "append", "replace"] = Field(
        "new", description="new: refuse an existing user id; append: add templates; replace: drop the old ones")


class IdentifyRequest(BaseModel):
    """1:N identification. As multipart/form-data: images (one file) and k."""

    images: list[str] = Field(min_length=1, max_length=1, description="exactly one base64 JPEG/PNG image")
    k: int = Field(5, ge=1, le=100, description="how many candidates, best first")


#: model, its image list field, and the schema names in components/schemas (JSON body, multipart form)
REQUEST_BODIES = {"verify": (VerifyRequest, "frames"), "enroll": (EnrollRequest, "images"),
                  "identify": (IdentifyRequest, "images")}


def _body_schemas(limits: "Limits") -> dict[str, dict]:
    """components/schemas for the request models: ``<Model>`` (JSON) and ``<Model>Form`` (multipart)."""
    out = {}
    for model, field_name in REQUEST_BODIES.values():
        js = model.model_json_schema()
        js["properties"][field_name]["maxItems"] = 1 if model is IdentifyRequest else limits.max_frames
        out[model.__name__] = js
        form = json.loads(json.dumps(js))
        form["title"] = f"{model.__name__}Form"
        form["properties"][field_name] = {
            "type": "array", "items": {"type": "string", "format": "binary"},
            "maxItems": js["properties"][field_name]["maxItems"],
            "description": f"image files (each at most {limits.max_frame_bytes} bytes)"}
        out[f"{model.__name__}Form"] = form
    return out


def _request_body(name: str) -> dict:
    """``openapi_extra`` declaring a route's request body (JSON or multipart) by reference."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}},
        "multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{name}Form"}}}}}


ERROR_SCHEMA = {"title": "Error", "type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string", "description": "stable error code, e.g. IMAGE_UNREADABLE"},
                   "message": {"type": "string"}, "type": {"type": "string"}, "details": {"type": "object"}}}}}
ERROR_DESCRIPTIONS = {"400": "bad request, image or rule (REQUEST_INVALID, IMAGE_UNREADABLE, RULE_INVALID, ...)",
                      "401": "missing or wrong API key (UNAUTHORIZED)",
                      "403": "the kiosk key on an admin route (FORBIDDEN)",
                      "429": "over the verify rate limit (RATE_LIMITED, with Retry-After)"}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="seconds")


def _status_for(e: Smile2PayError) -> int:
    if e.code in _STATUS:
        return _STATUS[e.code]
    if type(e).__name__ in ("ModelError",) or e.code in ("GUARD_UNAVAILABLE", "GALLERY_IO",
                                                         "GALLERY_UNAVAILABLE"):
        return 503
    return 400


#: answers that may leave a request body unread: the connection is closed after them, so the server
#: stops receiving (without ``Connection: close`` uvicorn would read and discard the rest of the body)
_CLOSE_AFTER = frozenset({401, 403, 413, 429})


def _headers_for(status: int, headers: dict | None) -> dict | None:
    if status in _CLOSE_AFTER:
        return {**(headers or {}), "Connection": "close"}
    return headers


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=_headers_for(status, headers))


class RateLimiter:
    """Token bucket per client: ``per_minute`` tokens, refilled continuously (one every 60/per_minute
    seconds). ``check(client)`` takes a token and returns 0.0, or the seconds until one is available
    (nothing taken). Bounded memory: the ``max_clients`` most recently seen clients are kept."""

    def __init__(self, per_minute: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(max(0, per_minute))
        self.rate = self.burst / 60.0
        self.max_clients = max(1, max_clients)
        self.clock = clock
        self._buckets: collections.OrderedDict[Any, tuple[float, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def check(self, client) -> float:
        if self.burst <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + max(0.0, now - then) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class ApiKeys:
    """The admin key and the optional kiosk key; ``scope(key)`` compares against both in constant time."""

    def __init__(self, admin: str, kiosk: str | None = None) -> None:
        if not isinstance(admin, str) or len(admin) < 16:
            raise RequestError("the server needs an API key of at least 16 characters", code="CONFIG_INVALID")
        if kiosk is not None:
            if not isinstance(kiosk, str) or len(kiosk) < 16:
                raise RequestError("the kiosk API key needs at least 16 characters", code="CONFIG_INVALID")
            if hmac.compare_digest(kiosk.encode(), admin.encode()):
                raise RequestError("the kiosk API key must differ from the admin key", code="CONFIG_INVALID")
        self._admin = admin.encode()
        self._kiosk = kiosk.encode() if kiosk is not None else None

    def scope(self, key) -> str | None:
        """ADMIN, KIOSK or None (missing or wrong key)."""
        if not isinstance(key, str):
            return None
        got = key.encode("utf-8", "surrogatepass")   # a JSON "\\ud800" is a wrong key, not a crash
        is_admin = hmac.compare_digest(got, self._admin)   # both compared, each in constant time
        is_kiosk = self._kiosk is not None and hmac.compare_digest(got, self._kiosk)
        return ADMIN if is_admin else KIOSK if is_kiosk else None


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


def create_app(s2p, api_key: str, limits: Limits = Limits(), *, kiosk_api_key: str | None = None,
               docs: bool = True) -> FastAPI:
    """The HTTP service. ``api_key``: the admin key (every route); ``kiosk_api_key`` (optional): a key
    that may only verify (POST /v1/verify, the /v1/stream WebSocket). ``docs``: serve the API reference
    at /docs and /openapi.json (without a key)."""
    keys = ApiKeys(api_key, kiosk_api_key)
    app = FastAPI(title="smile2pay", version="1", redoc_url=None,
                  docs_url="/docs" if docs else None, openapi_url="/openapi.json" if docs else None,
                  description="Smile to pay: face verification for payment backends. Every route but /healthz "
                              "needs an API key (`X-API-Key` or `Authorization: Bearer`): the admin key may do "
                              "everything, the kiosk key only `POST /v1/verify` and the `/v1/stream` WebSocket. "
                              "Request bodies are JSON (images base64) or multipart/form-data (images as files). "
                              "Errors: `{\"error\": {\"code\", \"message\"}}` with stable codes.")
    public = DOCS_PATHS if docs else frozenset()
    rate = RateLimiter(limits.verify_per_minute, limits.max_rate_clients)

    def err(e: Smile2PayError) -> JSONResponse:
        status = _status_for(e)
        headers = None
        if status == 503:   # a clean "try again": the shared gallery/guard database is unreachable
            headers = {"Retry-After": str(max(1, int(round(float(e.details.get("retry_after_s") or 1)))))}
        return JSONResponse(e.to_dict(), status_code=status, headers=_headers_for(status, headers))

    def key_of(request: Request) -> str:
        got = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if not got and auth.lower().startswith("bearer "):
            got = auth[7:]
        return got

    def rate_check(scope: str, host: str | None) -> float:
        """0.0 (go ahead, counted) or the seconds to wait: one budget per (key scope, remote address)."""
        return rate.check((scope, host or "?"))

    def too_large() -> RequestError:
        return RequestError(f"request body over {limits.max_body_bytes} bytes", code="REQUEST_TOO_LARGE")

    async def body_of(request: Request) -> bytes:
        """The body, refused as soon as more than ``max_body_bytes`` arrived (whatever the framing)."""
        cl = request.headers.get("content-length")
        if cl and cl.isdigit() and int(cl) > limits.max_body_bytes:
            raise too_large()
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limits.max_body_bytes:
                raise too_large()
        return bytes(buf)

    async def multipart(request: Request, raw: bytes, list_field: str) -> tuple[dict, list[bytes]]:
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
            files = [await f.read() for f in uploads]
        finally:
            await form.close()
        return fields, files

    async def parse(request: Request, list_field: str) -> tuple[dict, list[bytes]]:
        raw = await body_of(request)   # bounded for every content type, before any parsing
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return await multipart(request, raw, list_field)
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
        path = request.url.path
        if path == "/healthz" or path in public or is_public(path):
            return await call_next(request)
        scope = keys.scope(key_of(request))
        if scope is None:
            return _error(401, "UNAUTHORIZED", "missing or wrong API key")
        route = (request.method, path)
        if scope != ADMIN and route not in KIOSK_ROUTES:
            return _error(403, "FORBIDDEN", "this API key may only verify; enrol, list, delete, identify and "
                                            "unlock need the admin key")
        if route == ("POST", "/v1/verify"):
            wait = rate_check(scope, request.client.host if request.client else None)
            if wait > 0:   # refused before the body is read
                return _error(429, "RATE_LIMITED",
                              f"over {limits.verify_per_minute} verify requests a minute from this client",
                              headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return await call_next(request)

    @app.exception_handler(Smile2PayError)
    async def on_sdk_error(request: Request, e: Smile2PayError):
        return err(e)

    @app.exception_handler(Exception)
    async def on_internal(request: Request, e: Exception):  # never leak internals; log server-side
        log.exception("internal error on %s", request.url.path)
        return _error(500, INTERNAL, "internal error; retry later", headers={"Retry-After": "1"})

    @app.exception_handler(404)
    async def on_404(request: Request, e):
        return _error(404, "NOT_FOUND", f"no route {request.url.path}")

    @app.exception_handler(405)
    async def on_405(request: Request, e):
        return _error(405, "METHOD_NOT_ALLOWED", "method not allowed")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, e: StarletteHTTPException):   # the framework's own: typed too
        status = e.status_code
        code = {400: "REQUEST_INVALID", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 413: "REQUEST_TOO_LARGE",
                429: "RATE_LIMITED"}.get(status, "REQUEST_INVALID" if 400 <= status < 500 else INTERNAL)
        msg = e.detail if isinstance(e.detail, str) else "request refused"
        return _error(status, code, msg, headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, e: RequestValidationError):
        return _error(400, "REQUEST_INVALID", "invalid request parameters")

    @app.get("/healthz", tags=["service"], summary="Health, model pack, policy, identity threshold (no key)")
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

    @app.post("/v1/identify", tags=["identity"], summary="1:N: who is this? (admin key)",
              openapi_extra=_request_body("IdentifyRequest"))
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

    @app.post("/v1/verify", tags=["payments"], summary="The payment decision: the enrolled user, smiling, live",
              openapi_extra=_request_body("VerifyRequest"))
    async def verify(request: Request):
        """Approved only when every frame is the claimed user, the smile appears during the burst and above
        the user's neutral baseline, the frames are not one still photo, the user is not locked out and the
        nonce is fresh. Answers the Decision (``approved``, ``reasons``, scores, thresholds) with 200."""
        data, frames = await parse(request, "frames")
        if len(frames) > limits.max_frames:
            raise RequestError(f"at most {limits.max_frames} frames", code="REQUEST_INVALID")
        uid = field(data, "user_id", required=True)
        d = await run_in_threadpool(s2p.verify, uid, frames, require=field(data, "require", "AU6+AU12"),
                                    liveness=field(data, "liveness", "burst"), nonce=field(data, "nonce"),
                                    request_id=request.headers.get("x-request-id"))
        return d.to_dict()

    @app.post("/v1/enroll", tags=["users"], summary="Enrol a user from one or more images (admin key)",
              openapi_extra=_request_body("EnrollRequest"))
    async def enroll(request: Request):
        data, images = await parse(request, "images")
        uid = field(data, "user_id", required=True)
        res = await run_in_threadpool(s2p.enroll, uid, images, kind=field(data, "kind", "neutral"),
                                      mode=field(data, "mode", "new"))
        return res.to_dict()

    @app.get("/v1/users", tags=["users"], summary="The enrolled user ids, paged (admin key)")
    def list_users(offset: int = Query(0, ge=0, description="skip this many users (sorted by id)"),
                   limit: int = Query(100, ge=1, le=1000, description="at most this many users")):
        total = s2p.count()
        users = s2p.list(offset, limit)
        nxt = offset + len(users)
        return {"users": users, "count": total, "offset": offset, "limit": limit,
                "next_offset": nxt if nxt < total else None}

    @app.get("/v1/users/{user_id}", tags=["users"], summary="One user's record, without templates (admin key)")
    def get_user(user_id: str):
        """Template count per kind and dates; never an embedding."""
        rec = s2p.get(user_id)
        kinds = Counter(t.kind for t in rec.templates)
        return {"user_id": rec.user_id, "templates": len(rec.templates), "kinds": dict(sorted(kinds.items())),
                "created": _iso(rec.created), "updated": _iso(rec.updated),
                "last_template_added": _iso(max((t.created for t in rec.templates), default=None))}

    @app.delete("/v1/users/{user_id}", tags=["users"], summary="Erase a user; the gallery is compacted (admin key)")
    def remove(user_id: str):
        try:
            n = s2p.remove(user_id)
        except GalleryError as e:
            return err(e)
        s2p.compact()
        return {"removed": user_id, "templates": n}

    @app.post("/v1/users/{user_id}/unlock", tags=["users"], summary="Lift a lockout early (admin key; audited)")
    async def unlock(user_id: str):
        """Lift a user's lockout early (an operator's action; audited by the SDK)."""
        return await run_in_threadpool(s2p.unlock, user_id)

    # /v1/stream (WebSocket: either key; a session start counts against the verify rate limit) and /kiosk
    add_stream_routes(app, s2p, keys.scope, limits, rate_check)
    if docs:
        _document(app, limits)
    return app


def _document(app: FastAPI, limits: Limits) -> None:
    """Complete the generated OpenAPI schema: the request body models and the API key scheme."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        comps = schema.setdefault("components", {})
        comps.setdefault("schemas", {}).update(_body_schemas(limits))
        comps["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                       "description": "the admin key (SMILE2PAY_API_KEY) or the verify-only kiosk key"},
            "Bearer": {"type": "http", "scheme": "bearer"}}
        schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
        comps["schemas"]["Error"] = ERROR_SCHEMA
        comps["schemas"].pop("HTTPValidationError", None)   # invalid parameters answer 400 with an Error
        comps["schemas"].pop("ValidationError", None)
        for path, ops in schema.get("paths", {}).items():
            for method, op in ops.items():
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                if path == "/healthz" or is_public(path):   # no key
                    op["security"] = []
                    continue
                for status in ("400", "401", "403") + (("429",) if path == "/v1/verify" else ()):
                    responses.setdefault(status, {"description": ERROR_DESCRIPTIONS[status], "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def serve(args) -> None:  # pragma: no cover - exercised through a real server in the tests
    import uvicorn

    from ..api import Smile2Pay
    from ..cli.main import settings_from
    from ..config import api_key_from_env
    from ..cli.gallery import gallery_settings_from

    s2p = Smile2Pay(args.gallery, settings=settings_from(args), gallery_settings=gallery_settings_from(args),
                    policy=args.policy, far=args.far, create=bool(getattr(args, "create", False)))
    kiosk = os.environ.get("SMILE2PAY_KIOSK_API_KEY", "").strip() or None   # verify-only key for kiosks
    per_min = os.environ.get("SMILE2PAY_VERIFY_PER_MINUTE", "").strip()
    try:
        limits = Limits(verify_per_minute=int(per_min)) if per_min else Limits()
    except ValueError:
        raise RequestError(f"SMILE2PAY_VERIFY_PER_MINUTE must be an integer, got {per_min!r}",
                           code="CONFIG_INVALID") from None
    docs = os.environ.get("SMILE2PAY_DOCS", "1").strip().lower() not in ("0", "false", "no", "off")
    app = create_app(s2p, api_key_from_env(args.api_key_file), limits, kiosk_api_key=kiosk, docs=docs)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
