"""The REST API: HTTP batch ingest, the user's own aggregates, and the health check."""

from __future__ import annotations

import math
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify
from flask_jwt_extended import get_jwt_identity, jwt_required
from redis.exceptions import RedisError

from engine.messages import format_timestamp
from engine.schema import user_stats
from webapp.bodies import json_body
from webapp.errors import error_response
from webapp.extensions import services
from webapp.ingest import RATE_LIMITED, UNAVAILABLE, ingest

bp = Blueprint("api", __name__)


@bp.post("/api/messages")
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


@bp.get("/api/stats")
@jwt_required()
def own_stats() -> Response:
    """The aggregates of the token's user over every stored message (zero before the first):
    the engine keeps them in `user_stats`, in the transaction that writes the rows."""
    user_id = get_jwt_identity()
    columns = [user_stats.c.message_count, user_stats.c.value_count, user_stats.c.value_sum,
               user_stats.c.value_min, user_stats.c.value_max, user_stats.c.value_avg,
               user_stats.c.first_seen, user_stats.c.last_seen]
    with services().db.connect() as conn:
        row = conn.execute(sa.select(*columns).where(user_stats.c.user_id == user_id)).first()
    stats: dict[str, Any] = {column.name: None for column in columns}
    stats.update(message_count=0, value_count=0)
    if row is not None:
        stats.update(row._asdict())
        for name in ("first_seen", "last_seen"):
            stats[name] = format_timestamp(stats[name])
    return jsonify({"user_id": user_id, **stats})


@bp.get("/healthz")
def health() -> tuple[Response, int]:
    """200 when this web process can reach Redis, 503 otherwise (for load balancers)."""
    try:
        services().redis.ping()
    except RedisError:
        return jsonify({"status": "unavailable", "redis": "down"}), 503
    return jsonify({"status": "ok", "redis": "ok"}), 200
