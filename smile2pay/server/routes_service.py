"""``GET /healthz``: health, model pack, policy, identity threshold (no key)."""
from __future__ import annotations

from fastapi import Request

from ..decision import population
from ..errors import Smile2PayError
from .routing import RouteGroup
from .state import server_state

routes = RouteGroup()


@routes.get("/healthz", tags=["service"], summary="Health, model pack, policy, identity threshold (no key)")
def healthz(request: Request):
    s2p = server_state(request).s2p
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
