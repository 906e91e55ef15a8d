"""The OpenAPI side of the service: request body models, the error object, the key schemes.

The routes parse their bodies themselves (bounded reads, JSON or multipart, typed errors): these models
describe the wire format in the OpenAPI schema (/docs) and are what a client can build requests from.
"""
from __future__ import annotations

import json
from typing import Literal, Optional

from fastapi import FastAPI
from pydantic import BaseModel, Field

from .state import Limits
from .stream_routes import is_public


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


def body_schemas(limits: Limits) -> dict[str, dict]:
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


def request_body(name: str) -> dict:
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
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "the admin key (SMILE2PAY_API_KEY) or the verify-only kiosk key"},
    "Bearer": {"type": "http", "scheme": "bearer"}}


def _document_paths(schema: dict) -> None:
    """Per operation: no 422 (invalid parameters answer 400), no key on the public paths, the error answers."""
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


def document(app: FastAPI, limits: Limits) -> None:
    """Complete the generated OpenAPI schema: the request body models and the API key scheme."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        comps = schema.setdefault("components", {})
        comps.setdefault("schemas", {}).update(body_schemas(limits))
        comps["securitySchemes"] = json.loads(json.dumps(SECURITY_SCHEMES))
        schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
        comps["schemas"]["Error"] = ERROR_SCHEMA
        comps["schemas"].pop("HTTPValidationError", None)   # invalid parameters answer 400 with an Error
        comps["schemas"].pop("ValidationError", None)
        _document_paths(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
