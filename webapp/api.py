"""The REST API: HTTP batch ingest."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, jsonify
from flask_jwt_extended import get_jwt_identity, jwt_required
from pydantic import BaseModel, Field, RootModel
from spectree import Response as Responses

from webapp.bodies import json_body
from webapp.errors import error_response
from webapp.extensions import services
from webapp.ingest import RATE_LIMITED, UNAVAILABLE, ingest
from webapp.openapi import BEARER, errors, spec

bp = Blueprint("api", __name__)


class MessageIn(BaseModel):
    """One message (README: "Sending messages")."""

    message: str = Field(description="at most MAX_MESSAGE_BYTES (4096) UTF-8 bytes")
    msg_id: str | None = Field(None, description="1-64 of A-Z a-z 0-9 _ . : -; generated "
                               "when absent; a resent msg_id is stored once")
    timestamp: str | None = Field(None, description="YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]")
    value: float | None = Field(None, description="|value| <= 2^53")
    key: str | None = Field(None, max_length=255)
    user_id: str | None = Field(None, description="ignored: the user is the token's")


class IngestBody(RootModel[MessageIn | list[MessageIn]]):
    """One message, or an array of up to MAX_BATCH_ITEMS."""


class Answer(BaseModel):
    ok: bool
    id: str | None = Field(None, description="the stream entry id, when accepted")
    msg_id: str | None = None
    error: str | None = None
    warning: str | None = None


class IndexedAnswer(Answer):
    index: int


class IngestResult(BaseModel):
    accepted: int
    rejected: int
    errors: list[IndexedAnswer]
    results: list[Answer]


@bp.post("/api/messages")
@spec.validate(json=IngestBody, skip_validation=True, security=BEARER, tags=["ingest"],
               resp=Responses(HTTP_202=IngestResult, HTTP_429=IngestResult,
                              HTTP_503=IngestResult, **errors(400, 401, 413)))
@jwt_required()
def post_messages() -> tuple[Response, int] | Response:
    """Ingest one message object or an array of them; answers per item, by index.

    202 when the batch was taken (some items may still be refused, see `errors`); 429 when
    every item was rate limited; 503 when Redis could not take any of them.
    """
    gateway = services().gateway
    body = json_body()
    if isinstance(body, dict):
        items: list[Any] = [body]
    elif isinstance(body, list):
        items = body
    else:
        return error_response(400, "body: must be a JSON object or an array of objects")
    limit = gateway.settings.MAX_BATCH_ITEMS
    if not 1 <= len(items) <= limit:
        return error_response(400, f"body: must hold 1 to {limit} messages")
    results = ingest(gateway, get_jwt_identity(), gateway.http_limits, items)
    accepted = sum(1 for result in results if result["ok"])
    errors = [{"index": index, **result} for index, result in enumerate(results)
              if not result["ok"]]
    payload = {"accepted": accepted, "rejected": len(errors), "errors": errors,
               "results": results}
    refusals = {error["error"] for error in errors}
    if not accepted and refusals == {UNAVAILABLE}:
        return jsonify(payload), 503
    if not accepted and refusals == {RATE_LIMITED}:
        response = jsonify(payload)
        limits = gateway.http_limits
        response.headers["Retry-After"] = str(max(1, math.ceil(1 / limits.rate))
                                              if limits.rate else 1)
        return response, 429
    return jsonify(payload), 202

