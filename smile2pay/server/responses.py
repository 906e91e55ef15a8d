"""JSON error answers: ``{"error": {"code", "message", ...}}`` with the HTTP status of each SDK code."""
from __future__ import annotations

from fastapi.responses import JSONResponse

from ..errors import Smile2PayError

_STATUS = {"GALLERY_USER_NOT_FOUND": 404, "GALLERY_DUPLICATE": 409, "GALLERY_USER_EXISTS": 409,
           "REQUEST_TOO_LARGE": 413, "UNAUTHORIZED": 401, "FORBIDDEN": 403, "RATE_LIMITED": 429}

#: answers that may leave a request body unread: the connection is closed after them, so the server
#: stops receiving (without ``Connection: close`` uvicorn would read and discard the rest of the body)
_CLOSE_AFTER = frozenset({401, 403, 413, 429})


def status_for(e: Smile2PayError) -> int:
    if e.code in _STATUS:
        return _STATUS[e.code]
    if type(e).__name__ in ("ModelError",) or e.code in ("GUARD_UNAVAILABLE", "GALLERY_IO",
                                                         "GALLERY_UNAVAILABLE"):
        return 503
    return 400


def headers_for(status: int, headers: dict | None) -> dict | None:
    if status in _CLOSE_AFTER:
        return {**(headers or {}), "Connection": "close"}
    return headers


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers_for(status, headers))


def sdk_error_response(e: Smile2PayError) -> JSONResponse:
    """An SDK error as its JSON answer; 503 (gallery or guard database unreachable) with ``Retry-After``."""
    status = status_for(e)
    headers = None
    if status == 503:   # a clean "try again": the shared gallery/guard database is unreachable
        headers = {"Retry-After": str(max(1, int(round(float(e.details.get("retry_after_s") or 1)))))}
    return JSONResponse(e.to_dict(), status_code=status, headers=headers_for(status, headers))
