"""``POST /v1/verify``: the payment decision (admin or kiosk key; rate-limited per client)."""
from __future__ import annotations

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ..errors import RequestError
from .bodies import field, parse
from .routing import RouteGroup
from .schemas import request_body
from .state import server_state

routes = RouteGroup()


@routes.post("/v1/verify", tags=["payments"], summary="The payment decision: the enrolled user, smiling, live",
             openapi_extra=request_body("VerifyRequest"))
async def verify(request: Request):
    """Approved only when every frame is the claimed user, the smile appears during the burst and above
    the user's neutral baseline, the frames are not one still photo, the user is not locked out and the
    nonce is fresh. Answers the Decision (``approved``, ``reasons``, scores, thresholds) with 200."""
    st = server_state(request)
    limits = st.limits
    data, frames = await parse(request, "frames", limits)
    if len(frames) > limits.max_frames:
        raise RequestError(f"at most {limits.max_frames} frames", code="REQUEST_INVALID")
    uid = field(data, "user_id", required=True)
    d = await run_in_threadpool(st.s2p.verify, uid, frames, require=field(data, "require", "AU6+AU12"),
                                liveness=field(data, "liveness", "burst"), nonce=field(data, "nonce"),
                                request_id=request.headers.get("x-request-id"))
    return d.to_dict()
