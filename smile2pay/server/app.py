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
  ``SMILE2PAY_DOCS=0`` turns them off). The JSON bodies are documented by the pydantic models of
  :mod:`.schemas` (:class:`VerifyRequest`, :class:`EnrollRequest`, :class:`IdentifyRequest`, re-exported
  here) and their multipart forms;
  the routes still read the body themselves (bounded, see below), the models only describe it.

Gallery or guard database unreachable (PostgreSQL fleet): 503 with ``Retry-After``.

Errors are JSON ``{"error": {"code", "message", ...}}`` with the SDK's stable codes. Request bodies
are bounded by the bytes actually read (chunked uploads too, JSON and multipart alike), each frame by
``Limits.max_frame_bytes``, frame counts by ``Limits.max_frames``; verify (and stream starts) are
rate-limited per client (API key + remote address): 429 RATE_LIMITED with ``Retry-After``. Model
sessions are shared by the worker threads (onnxruntime's ``run`` is thread-safe; the gallery and
guard lock their own state).

Layout: this module assembles the app (key check, error handlers, route groups) and runs it (``serve``);
:mod:`.state` holds the limits, keys, rate limiter and the per-app :class:`ServerState` the routes read
(``app.state.server``); :mod:`.bodies` reads and parses request bodies; :mod:`.responses` makes the JSON
errors; :mod:`.schemas` the OpenAPI additions; ``routes_service`` (/healthz), ``routes_identity``
(/v1/identify), ``routes_payments`` (/v1/verify) and ``routes_users`` (/v1/enroll, /v1/users...) the
HTTP routes; :mod:`.stream_routes` the WebSocket stream and the kiosk page.
"""
from __future__ import annotations

import logging
import math
import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RequestError, Smile2PayError
from ..reasons import INTERNAL
from . import routes_identity, routes_payments, routes_service, routes_users
from .responses import error_response, sdk_error_response
from .schemas import (  # noqa: F401  (re-exported: the request models are documented as app's)
    ERROR_DESCRIPTIONS,
    ERROR_SCHEMA,
    REQUEST_BODIES,
    EnrollRequest,
    IdentifyRequest,
    VerifyRequest,
    document,
)
from .state import (  # noqa: F401  (re-exported: callers import Limits, RateLimiter from here)
    ADMIN,
    DOCS_PATHS,
    KIOSK,
    KIOSK_ROUTES,
    ApiKeys,
    Limits,
    RateLimiter,
    ServerState,
    server_state,
)
from .stream_routes import add_stream_routes, is_public

log = logging.getLogger(__name__)

DESCRIPTION = ("Smile to pay: face verification for payment backends. Every route but /healthz "
               "needs an API key (`X-API-Key` or `Authorization: Bearer`): the admin key may do "
               "everything, the kiosk key only `POST /v1/verify` and the `/v1/stream` WebSocket. "
               "Request bodies are JSON (images base64) or multipart/form-data (images as files). "
               "Errors: `{\"error\": {\"code\", \"message\"}}` with stable codes.")
#: the HTTP route groups, in registration order (the order of /openapi.json's paths)
ROUTE_GROUPS = (routes_service.routes, routes_identity.routes, routes_payments.routes, routes_users.routes)


def key_of(request: Request) -> str:
    """The API key of a request: ``X-API-Key``, else ``Authorization: Bearer``."""
    got = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if not got and auth.lower().startswith("bearer "):
        got = auth[7:]
    return got


async def auth(request: Request, call_next):
    """The key check (401 / 403 for the kiosk key off its routes) and the verify rate limit (429), both
    before the body is read."""
    st = server_state(request)
    path = request.url.path
    if path == "/healthz" or path in st.public or is_public(path):
        return await call_next(request)
    scope = st.keys.scope(key_of(request))
    if scope is None:
        return error_response(401, "UNAUTHORIZED", "missing or wrong API key")
    route = (request.method, path)
    if scope != ADMIN and route not in KIOSK_ROUTES:
        return error_response(403, "FORBIDDEN", "this API key may only verify; enrol, list, delete, identify and "
                                                "unlock need the admin key")
    if route == ("POST", "/v1/verify"):
        wait = st.rate_check(scope, request.client.host if request.client else None)
        if wait > 0:   # refused before the body is read
            return error_response(429, "RATE_LIMITED",
                                  f"over {st.limits.verify_per_minute} verify requests a minute from this client",
                                  headers={"Retry-After": str(max(1, math.ceil(wait)))})
    return await call_next(request)


# ------------------------------------------------------------------------------ errors as JSON
async def on_sdk_error(request: Request, e: Smile2PayError):
    return sdk_error_response(e)


async def on_internal(request: Request, e: Exception):  # never leak internals; log server-side
    log.exception("internal error on %s", request.url.path)
    return error_response(500, INTERNAL, "internal error; retry later", headers={"Retry-After": "1"})


async def on_404(request: Request, e):
    return error_response(404, "NOT_FOUND", f"no route {request.url.path}")


async def on_405(request: Request, e):
    return error_response(405, "METHOD_NOT_ALLOWED", "method not allowed")


async def on_http(request: Request, e: StarletteHTTPException):   # the framework's own: typed too
    status = e.status_code
    code = {400: "REQUEST_INVALID", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 413: "REQUEST_TOO_LARGE",
            429: "RATE_LIMITED"}.get(status, "REQUEST_INVALID" if 400 <= status < 500 else INTERNAL)
    msg = e.detail if isinstance(e.detail, str) else "request refused"
    return error_response(status, code, msg, headers=getattr(e, "headers", None))


async def on_validation(request: Request, e: RequestValidationError):
    return error_response(400, "REQUEST_INVALID", "invalid request parameters")


#: exception handlers, in registration order
ERROR_HANDLERS = ((Smile2PayError, on_sdk_error), (Exception, on_internal), (404, on_404), (405, on_405),
                  (StarletteHTTPException, on_http), (RequestValidationError, on_validation))


def create_app(s2p, api_key: str, limits: Limits = Limits(), *, kiosk_api_key: str | None = None,
               docs: bool = True) -> FastAPI:
    """The HTTP service. ``api_key``: the admin key (every route); ``kiosk_api_key`` (optional): a key
    that may only verify (POST /v1/verify, the /v1/stream WebSocket). ``docs``: serve the API reference
    at /docs and /openapi.json (without a key)."""
    keys = ApiKeys(api_key, kiosk_api_key)
    app = FastAPI(title="smile2pay", version="1", redoc_url=None, description=DESCRIPTION,
                  docs_url="/docs" if docs else None, openapi_url="/openapi.json" if docs else None)
    state = ServerState(s2p, limits, keys, RateLimiter(limits.verify_per_minute, limits.max_rate_clients),
                        public=DOCS_PATHS if docs else frozenset())
    app.state.server = state
    app.middleware("http")(auth)
    for exc, handler in ERROR_HANDLERS:
        app.add_exception_handler(exc, handler)
    for group in ROUTE_GROUPS:
        group.register(app)
    # /v1/stream (WebSocket: either key; a session start counts against the verify rate limit) and /kiosk
    add_stream_routes(app, s2p, keys.scope, limits, state.rate_check)
    if docs:
        document(app, limits)
    return app


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
