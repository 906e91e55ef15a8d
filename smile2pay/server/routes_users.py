"""The gallery's users (admin key): enrol, list, read one, erase, lift a lockout."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool

from ..errors import GalleryError
from .bodies import field, parse
from .responses import sdk_error_response
from .routing import RouteGroup
from .schemas import request_body
from .state import server_state

routes = RouteGroup()


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(float(ts), timezone.utc).isoformat(timespec="seconds")


@routes.post("/v1/enroll", tags=["users"], summary="Enrol a user from one or more images (admin key)",
             openapi_extra=request_body("EnrollRequest"))
async def enroll(request: Request):
    st = server_state(request)
    data, images = await parse(request, "images", st.limits)
    uid = field(data, "user_id", required=True)
    res = await run_in_threadpool(st.s2p.enroll, uid, images, kind=field(data, "kind", "neutral"),
                                  mode=field(data, "mode", "new"))
    return res.to_dict()


@routes.get("/v1/users", tags=["users"], summary="The enrolled user ids, paged (admin key)")
def list_users(request: Request,
               offset: int = Query(0, ge=0, description="skip this many users (sorted by id)"),
               limit: int = Query(100, ge=1, le=1000, description="at most this many users")):
    s2p = server_state(request).s2p
    total = s2p.count()
    users = s2p.list(offset, limit)
    nxt = offset + len(users)
    return {"users": users, "count": total, "offset": offset, "limit": limit,
            "next_offset": nxt if nxt < total else None}


@routes.get("/v1/users/{user_id}", tags=["users"], summary="One user's record, without templates (admin key)")
def get_user(request: Request, user_id: str):
    """Template count per kind and dates; never an embedding."""
    rec = server_state(request).s2p.get(user_id)
    kinds = Counter(t.kind for t in rec.templates)
    return {"user_id": rec.user_id, "templates": len(rec.templates), "kinds": dict(sorted(kinds.items())),
            "created": _iso(rec.created), "updated": _iso(rec.updated),
            "last_template_added": _iso(max((t.created for t in rec.templates), default=None))}


@routes.delete("/v1/users/{user_id}", tags=["users"], summary="Erase a user; the gallery is compacted (admin key)")
def remove(request: Request, user_id: str):
    s2p = server_state(request).s2p
    try:
        n = s2p.remove(user_id)
    except GalleryError as e:
        return sdk_error_response(e)
    s2p.compact()
    return {"removed": user_id, "templates": n}


@routes.post("/v1/users/{user_id}/unlock", tags=["users"], summary="Lift a lockout early (admin key; audited)")
async def unlock(request: Request, user_id: str):
    """Lift a user's lockout early (an operator's action; audited by the SDK)."""
    return await run_in_threadpool(server_state(request).s2p.unlock, user_id)
