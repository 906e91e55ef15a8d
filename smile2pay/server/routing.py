"""Route groups: a module declares its routes with the decorators of a :class:`RouteGroup` (next to each
function, as on an app) and ``create_app`` registers the group on each app it builds, through the app's
own decorators, so the routes are exactly the app's (no included sub-router)."""
from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI


class RouteGroup:
    """Declared routes: ``@group.get(path, **kw)``, ``.post``, ``.delete``, ``.websocket``; ``register(app)``
    adds them to ``app`` in declaration order (the order of /openapi.json's paths)."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, str, dict[str, Any], Callable]] = []

    def _declare(self, method: str, path: str, kw: dict[str, Any]) -> Callable[[Callable], Callable]:
        def declare(fn: Callable) -> Callable:
            self._routes.append((method, path, kw, fn))
            return fn
        return declare

    def get(self, path: str, **kw) -> Callable[[Callable], Callable]:
        return self._declare("get", path, kw)

    def post(self, path: str, **kw) -> Callable[[Callable], Callable]:
        return self._declare("post", path, kw)

    def delete(self, path: str, **kw) -> Callable[[Callable], Callable]:
        return self._declare("delete", path, kw)

    def websocket(self, path: str, **kw) -> Callable[[Callable], Callable]:
        return self._declare("websocket", path, kw)

    def register(self, app: FastAPI) -> None:
        for method, path, kw, fn in self._routes:
            getattr(app, method)(path, **kw)(fn)
