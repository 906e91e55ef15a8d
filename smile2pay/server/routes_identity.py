"""``POST /v1/identify``: 1:N open-set identification (admin key)."""
from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ..errors import RequestError
from .bodies import parse
from .routing import RouteGroup
from .schemas import request_body
from .state import server_state

routes = RouteGroup()


@routes.post("/v1/identify", tags=["identity"], summary="1:N: who is this? (admin key)",
             openapi_extra=request_body("IdentifyRequest"))
async def identify(request: Request):
    """1:N: JSON ``{"images": [one base64 image], "k": 5}`` -> candidates (``match``: >= threshold)."""
    st = server_state(request)
    data, images = await parse(request, "images", st.limits)
    if len(images) != 1:
        raise RequestError("identify takes exactly one image", code="REQUEST_INVALID")
    k = data.get("k", 5)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise RequestError("'k' must be an integer in 1..100", code="REQUEST_INVALID")
    matches = await run_in_threadpool(st.s2p.identify, images[0], k)
    best = matches[0].user_id if matches and matches[0].match else None
    return {"identified": best, "threshold": st.s2p.identity_threshold,
            "candidates": [m.to_dict() for m in matches]}
