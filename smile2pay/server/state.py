"""What the HTTP routes share: the limits, the API keys, the verify rate limiter, and the per-app
:class:`ServerState` (on ``app.state.server``) that the route modules read instead of closures."""
from __future__ import annotations

import collections
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import HTTPConnection

from ..errors import RequestError


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


#: what the kiosk key may call; every other authenticated route is the admin key's
KIOSK_ROUTES = frozenset({("POST", "/v1/verify")})
ADMIN, KIOSK = "admin", "kiosk"
#: the API reference (served without a key when docs are on: it holds no secret)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})


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


@dataclass(frozen=True)
class ServerState:
    """One app's shared state (``app.state.server``): the :class:`~smile2pay.api.Smile2Pay` instance,
    the limits, the API keys, the verify rate limiter and the paths served without a key."""

    s2p: Any
    limits: Limits
    keys: ApiKeys
    rate: RateLimiter
    public: frozenset = frozenset()

    def rate_check(self, scope: str, host: str | None) -> float:
        """0.0 (go ahead, counted) or the seconds to wait: one budget per (key scope, remote address)."""
        return self.rate.check((scope, host or "?"))


def server_state(conn: HTTPConnection) -> ServerState:
    """The :class:`ServerState` of the app serving this request (or WebSocket)."""
    return conn.app.state.server
