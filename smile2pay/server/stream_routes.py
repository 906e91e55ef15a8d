"""Live stream over WebSocket (``/v1/stream``) and the kiosk page (``/kiosk``).

Protocol (JSON text messages, frames as binary messages):

1. the client connects to ``/v1/stream`` (browsers cannot set headers on a WebSocket, so the API
   key travels in the first message or, for non-browser clients, in ``?key=``); instead of a key, a
   short-lived kiosk token from ``POST /v1/kiosk/token`` (admin key; ``{"minutes": 60}``) may travel
   in the first message as ``"token"`` (or ``"api_key"``): it opens stream sessions only (the kiosk
   scope, never an HTTP route); an expired token -> ``TOKEN_EXPIRED`` (4401), an unknown one ->
   ``UNAUTHORIZED`` (4401). The kiosk page keeps its credential in the browser's localStorage, never
   in the URL;
2. client -> ``{"type": "start", "api_key": "...", "user_id": "alice", "require": "AU6+AU12",
   "nonce": "order-42", "options": {"timeout_s": 15, "window_s": 5, "smoothing": 0.6}}``;
   a wrong/missing key -> ``{"type": "error", "error": {"code": "UNAUTHORIZED", ...}}`` and close (4401).
   The admin key and the kiosk (verify-only) key are both accepted. A session start counts against
   the client's verify rate limit (same budget as ``POST /v1/verify``): over it ->
   ``{"type": "error", "error": {"code": "RATE_LIMITED", "retry_after_s": ...}}`` and close (4429);
3. server -> ``{"type": "started", "request_id": ...}``;
4. client -> binary messages, each one JPEG/PNG frame (at most ``Limits.max_frame_bytes``), as fast
   as it likes: the server keeps only the latest frame waiting (a one-slot mailbox; the others are
   counted as skipped), so nothing queues;
5. server -> ``{"type": "update", ...}`` after each processed frame (state, prompt, reasons, box,
   smoothed AU probabilities, thresholds, identity score), and finally
   ``{"type": "final", ..., "decision": {...}}``, then closes (1000).
   Client -> ``{"type": "end"}`` declines an undecided session (TIMEOUT) and gets the final message.

The stream's timestamps are the server's receive times; a session that gets no frames still ends
at its timeout.
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from ..errors import RequestError, Smile2PayError
from .routing import RouteGroup

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
KIOSK_FILES = {"kiosk.js": "application/javascript", "kiosk.css": "text/css"}
PUBLIC_PREFIXES = ("/kiosk",)
#: options a client may set, with their allowed ranges
CLIENT_OPTIONS = {"timeout_s": (1.0, 120.0), "window_s": (0.5, 30.0), "smoothing": (0.05, 1.0),
                  "neutral_frames": (1, 30), "smile_frames": (1, 30), "mismatch_frames": (1, 300)}
#: switches a client may set: ``challenge`` = the server picks when "Now smile" comes (against replayed clips)
BOOL_OPTIONS = ("challenge",)
START_TIMEOUT_S = 10.0
MAX_SESSIONS = 4
#: kiosk tokens (``POST /v1/kiosk/token``): lifetime bounds in minutes, and how many are remembered
TOKEN_MINUTES = (1, 24 * 60)
TOKEN_DEFAULT_MINUTES = 60
TOKEN_PREFIX = "s2pk_"
MAX_TOKENS = 10_000


class KioskTokens:
    """Short-lived bearer tokens for the ``/v1/stream`` WebSocket only (kiosk scope), kept in memory.
    Expired tokens are remembered for a day so that a kiosk gets ``TOKEN_EXPIRED`` rather than a bare
    ``UNAUTHORIZED``; a server restart forgets every token (the kiosk asks for a new one)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tokens: dict[str, float] = {}

    def issue(self, minutes: float) -> tuple[str, float]:
        now = self.clock()
        self._prune(now)
        tok = TOKEN_PREFIX + secrets.token_urlsafe(24)
        self._tokens[tok] = now + 60.0 * minutes
        return tok, self._tokens[tok]

    def check(self, tok: str) -> str:
        """``"ok"``, ``"expired"`` or ``"unknown"``."""
        exp = None
        for known, e in self._tokens.items():   # constant-time comparison against every live token
            if len(known) == len(tok) and secrets.compare_digest(known.encode(), tok.encode()):
                exp = e
        if exp is None:
            return "unknown"
        return "ok" if self.clock() < exp else "expired"

    def _prune(self, now: float) -> None:
        for k in [k for k, e in self._tokens.items() if e < now - 86400]:
            del self._tokens[k]
        while len(self._tokens) >= MAX_TOKENS:   # oldest expiry first
            del self._tokens[min(self._tokens, key=self._tokens.get)]


def is_public(path: str) -> bool:
    """Paths served without the API key: the kiosk page and its assets (they hold no secrets)."""
    return path == "/kiosk" or path.startswith("/kiosk/")


def _options(raw) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RequestError("'options' must be an object", code="REQUEST_INVALID")
    out = {}
    for k, v in raw.items():
        if k in BOOL_OPTIONS:
            if not isinstance(v, bool):
                raise RequestError(f"option {k} must be true or false", code="REQUEST_INVALID")
            out[k] = v
            continue
        if k not in CLIENT_OPTIONS:
            raise RequestError(f"unknown option {k!r}; allowed: {sorted(CLIENT_OPTIONS) + list(BOOL_OPTIONS)}",
                               code="REQUEST_INVALID")
        lo, hi = CLIENT_OPTIONS[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise RequestError(f"option {k} must be a number in [{lo}, {hi}]", code="REQUEST_INVALID")
        out[k] = int(v) if isinstance(lo, int) else float(v)
    return out


@dataclass
class StreamState:
    """One app's stream state (``app.state.stream``): the SDK instance, the key check, the limits, the
    verify rate limit, the kiosk tokens and the live-session slots."""

    s2p: Any
    scope_of: Callable[[str], str | None]
    limits: Any
    rate_check: Callable[[str, str | None], float] | None
    tokens: KioskTokens
    slots: asyncio.Semaphore


def stream_state(conn) -> StreamState:
    """The :class:`StreamState` of the app serving this request or WebSocket."""
    return conn.app.state.stream


routes = RouteGroup()


def add_stream_routes(app: FastAPI, s2p, scope_of: Callable[[str], str | None], limits,
                      rate_check: Callable[[str, str | None], float] | None = None,
                      tokens: KioskTokens | None = None) -> None:
    """``scope_of(key)``: the key's scope (``"admin"``/``"kiosk"``) or None for a wrong key (constant-time
    comparison); ``rate_check(scope, host)``: 0.0 or the seconds to wait (the verify rate limit);
    ``tokens``: the kiosk token store (a fresh one by default; ``app.state.kiosk_tokens``)."""
    slots = asyncio.Semaphore(MAX_SESSIONS)
    tokens = tokens or KioskTokens()
    app.state.kiosk_tokens = tokens
    app.state.stream = StreamState(s2p, scope_of, limits, rate_check, tokens, slots)
    routes.register(app)


def _json_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# ------------------------------------------------------------------------------ kiosk token and page
@routes.post("/v1/kiosk/token", tags=["stream"], summary="A short-lived kiosk token for the stream WebSocket",
             description="Admin key only. Body (optional): `{\"minutes\": 60}` (1 to 1440). The token opens "
                         "`/v1/stream` sessions (the kiosk scope) until it expires, and nothing else: put it "
                         "in the kiosk's settings (stored in the browser, never in the URL).")
async def kiosk_token(request: Request):
    raw = await request.body()
    if len(raw) > 1024:
        return _json_error(413, "REQUEST_TOO_LARGE", "body over 1024 bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _json_error(400, "REQUEST_INVALID", "body must be a JSON object")
    minutes = body.get("minutes", TOKEN_DEFAULT_MINUTES)
    lo, hi = TOKEN_MINUTES
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not lo <= minutes <= hi:
        return _json_error(400, "REQUEST_INVALID", f"'minutes' must be a number in [{lo}, {hi}]")
    tok, exp = stream_state(request).tokens.issue(float(minutes))
    return {"token": tok, "expires_at": round(exp, 3), "expires_in_s": round(60.0 * float(minutes), 3),
            "scope": "stream"}


@routes.get("/kiosk")
def kiosk_page():
    return FileResponse(STATIC / "kiosk.html", media_type="text/html",
                        headers={"Cache-Control": "no-store"})


@routes.get("/kiosk/{name}")
def kiosk_asset(name: str):
    if name not in KIOSK_FILES:
        return _json_error(404, "NOT_FOUND", f"no kiosk file {name}")
    return FileResponse(STATIC / name, media_type=KIOSK_FILES[name], headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------ the stream: admission
@dataclass(frozen=True)
class Refusal:
    """Why a stream is not started: the error sent to the client, then the close code."""

    code: str
    message: str
    close_code: int = 4400
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StreamStart:
    """An admitted start message."""

    user_id: str
    require: str
    nonce: Any
    options: Any


#: the socket is gone (or was answered) before a start message came
GONE = object()


async def _fail(ws: WebSocket, code: str, message: str, close_code: int = 4400, **extra) -> None:
    try:
        await ws.send_json({"type": "error", "error": {"code": code, "message": message, **extra}})
        await ws.close(code=close_code)
    except (WebSocketDisconnect, RuntimeError):
        pass


async def _refuse(ws: WebSocket, r: Refusal) -> None:
    await _fail(ws, r.code, r.message, r.close_code, **r.extra)


async def _first_message(ws: WebSocket):
    """The first message as JSON (None when it is not JSON), or :data:`GONE` (no start message in time,
    answered and closed; or the client left)."""
    try:
        first = await asyncio.wait_for(ws.receive(), START_TIMEOUT_S)
    except asyncio.TimeoutError:
        await _fail(ws, "REQUEST_INVALID", "no start message", 4408)
        return GONE
    except (WebSocketDisconnect, RuntimeError):
        return GONE
    if first.get("type") == "websocket.disconnect":
        return GONE
    text = first.get("text")
    if text is None:     # a binary message first: not a start message (answered as such, not dropped)
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):   # RecursionError: hostile nesting ([[[[...]]]])
        return None


def _scope(ws: WebSocket, msg, st: StreamState) -> str | Refusal:
    """The scope of the credential: the ``?key=`` or the start message's ``api_key`` (an admin or kiosk
    key, or a kiosk token), else its ``token``."""
    key = ws.query_params.get("key") or (msg.get("api_key") if isinstance(msg, dict) else None) or ""
    tok = msg.get("token") if isinstance(msg, dict) else None
    if not tok and isinstance(key, str) and key.startswith(TOKEN_PREFIX):
        tok, key = key, ""
    scope = st.scope_of(key) if isinstance(key, str) and key else None
    if scope is None and isinstance(tok, str) and tok:
        state = st.tokens.check(tok)
        if state == "expired":
            return Refusal("TOKEN_EXPIRED", "the kiosk token has expired; ask for a new one", 4401)
        scope = "kiosk" if state == "ok" else None
    if scope is None:
        return Refusal("UNAUTHORIZED", "missing or wrong API key or kiosk token", 4401)
    return scope


def _admit(ws: WebSocket, msg, st: StreamState) -> StreamStart | Refusal:
    """The start message checked in order: credential, shape, the verify rate limit (a start counts),
    a free session slot."""
    scope = _scope(ws, msg, st)
    if isinstance(scope, Refusal):
        return scope
    if not isinstance(msg, dict) or msg.get("type") != "start":
        return Refusal("REQUEST_INVALID", "the first message must be {\"type\": \"start\", ...}")
    user_id, require, nonce = msg.get("user_id"), msg.get("require", "AU6+AU12"), msg.get("nonce")
    if not isinstance(user_id, str) or not user_id or not isinstance(require, str):
        return Refusal("REQUEST_INVALID", "'user_id' (string) is required; 'require' must be a string")
    wait = st.rate_check(scope, ws.client.host if ws.client else None) if st.rate_check else 0.0
    if wait > 0:
        return Refusal("RATE_LIMITED", "too many verify attempts from this client; retry later", 4429,
                       {"retry_after_s": max(1, math.ceil(wait))})
    if st.slots.locked():
        return Refusal("BUSY", f"at most {MAX_SESSIONS} live sessions at once; retry", 4429)
    return StreamStart(user_id, require, nonce, msg.get("options"))


@routes.websocket("/v1/stream")
async def stream(ws: WebSocket):
    await ws.accept()
    st = stream_state(ws)
    msg = await _first_message(ws)
    if msg is GONE:
        return
    start = _admit(ws, msg, st)
    if isinstance(start, Refusal):
        return await _refuse(ws, start)
    async with st.slots:   # taken with no await since _admit saw it free
        try:
            opts = _options(start.options)
            session = await run_in_threadpool(st.s2p.start_session, start.user_id, require=start.require,
                                              nonce=start.nonce, **opts)
        except Smile2PayError as e:
            return await _fail(ws, e.code, e.message)
        await run_session(ws, session, st.limits)


# ------------------------------------------------------------------------------ the stream: a session
class _Updates:
    """Updates from the worker thread; the oldest non-final ones are dropped if the client reads slowly.
    The final update is the session's last one, so it is never dropped. (No Queue + wait_for: on
    Python < 3.12 a timed-out wait_for(queue.get()) can swallow an item.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: collections.deque = collections.deque(maxlen=32)
        self.ready = asyncio.Event()

    def on_update(self, u) -> None:   # worker thread -> event loop
        self.loop.call_soon_threadsafe(self._put, u)

    def _put(self, u) -> None:
        self.pending.append(u)
        self.ready.set()


async def _receive(ws: WebSocket, session, limits) -> str:
    """Frames into the session (binary messages) until it is final, the client ends it or leaves, or a
    frame is too large: ``"final"``, ``"end"``, ``"disconnect"`` or ``"too_large"``."""
    while not session.final:
        m = await ws.receive()
        if m["type"] == "websocket.disconnect":
            return "disconnect"
        data = m.get("bytes")
        if data is not None:
            if len(data) > limits.max_frame_bytes:
                return "too_large"
            session.offer(data, time.monotonic())
            continue
        try:
            ctl = json.loads(m.get("text") or "null")
        except (ValueError, RecursionError):
            ctl = None
        if isinstance(ctl, dict) and ctl.get("type") == "end":
            await run_in_threadpool(session.end)
            return "end"
    return "final"


async def _send(ws: WebSocket, session, updates: _Updates) -> str:
    """The session's updates to the client, the final one last (then the socket is closed)."""
    while True:
        if not updates.pending:
            updates.ready.clear()
            try:
                await asyncio.wait_for(updates.ready.wait(), 0.5)
            except asyncio.TimeoutError:
                await run_in_threadpool(session.expire)   # no frames coming: the timeout still ends it
            continue
        u = updates.pending.popleft()
        if u.final:
            await _send_final(ws, u)
            return "sent"
        d = u.to_dict()
        d.pop("decision", None)
        await ws.send_json({"type": "update", **d})


async def _settle(ws: WebSocket, rx: asyncio.Task, tx: asyncio.Task, limits) -> None:
    """Wait for the receiver or the sender; a too-large frame is answered (4413), a client that left stops
    the sender, otherwise the sender gets its final update out (30 s at most)."""
    done, _ = await asyncio.wait({rx, tx}, return_when=asyncio.FIRST_COMPLETED)
    if rx in done and not tx.done():
        why = rx.result()
        if why == "too_large":
            tx.cancel()
            await ws.send_json({"type": "error", "error": {
                "code": "REQUEST_TOO_LARGE", "message": f"a frame is larger than {limits.max_frame_bytes} bytes"}})
            await ws.close(code=4413)
        elif why == "disconnect":
            tx.cancel()
        else:
            await asyncio.wait_for(tx, 30)
    if not rx.done():
        rx.cancel()


async def run_session(ws: WebSocket, session, limits) -> None:
    """Run one started session over the socket: ``started``, the updates, ``final``; then close it."""
    updates = _Updates(asyncio.get_running_loop())
    session.add_listener(updates.on_update)
    await ws.send_json({"type": "started", "request_id": session.request_id, "state": session.state,
                        "user_id": session.user_id, "rule": str(session.rule)})
    if session.final:
        await _send_final(ws, session.latest() or session.end())
        return
    rx = asyncio.create_task(_receive(ws, session, limits))
    tx = asyncio.create_task(_send(ws, session, updates))
    try:
        await _settle(ws, rx, tx, limits)
    except (WebSocketDisconnect, RuntimeError):
        pass
    except Exception:
        log.exception("stream session failed")
    finally:
        for t in (rx, tx):
            if not t.done():
                t.cancel()
        session.close()   # an undecided session (client gone) is left unaudited


async def _send_final(ws: WebSocket, u) -> None:
    d = u.to_dict()
    await ws.send_json({"type": "final", **d})
    await ws.close(code=1000)
