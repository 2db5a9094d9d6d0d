"""The read side of the API: a user's message history and aggregates, and the service's totals.

A user reads their own messages and figures; a `viewer` or an `admin` reads anyone's (`?user=`
on the history). Whatever names another user without that role is 403, whatever does not exist
404, and a query parameter that does not fit 422 naming it (webapp/openapi.py).
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, jsonify, request
from flask_jwt_extended import get_current_user, jwt_required
from pydantic import BaseModel, Field, field_validator
from spectree import Response as Responses

from engine.errors import ValidationError
from engine.keys import USER_ID_PATTERN
from engine.messages import MAX_KEY_CHARS, MSG_ID_PATTERN, parse_timestamp
from webapp import aggregates, history
from webapp.errors import error_response
from webapp.extensions import services
from webapp.openapi import BEARER, errors, spec
from webapp.users import READER_ROLES, User, find_user

bp = Blueprint("reads", __name__, url_prefix="/api")


# --- models (they validate the query, and document the answers) -----------------------------------

class MessagesQuery(BaseModel):
    """Which messages, and which page of them."""

    user: str | None = Field(None, description="whose messages: your own when absent; "
                             "another user's needs the viewer or admin role")
    since: str | None = Field(None, description="from this `timestamp` on (ISO-8601)")
    until: str | None = Field(None, description="before this `timestamp` (ISO-8601)")
    key: str | None = Field(None, max_length=MAX_KEY_CHARS)
    msg_id: str | None = None
    cursor: str | None = Field(None, description="`next_cursor` of the previous page")
    limit: int = Field(100, ge=1, le=history.MAX_PAGE)
    order: Literal["newest", "oldest"] = "newest"

    @field_validator("since", "until")
    @classmethod
    def _moment(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_timestamp(value, "time")
            except ValidationError as exc:
                raise ValueError(exc.reason) from None
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not USER_ID_PATTERN.fullmatch(value):
            raise ValueError("must be a username")
        return value

    @field_validator("msg_id")
    @classmethod
    def _msg_id(cls, value: str | None) -> str | None:
        if value is not None and not MSG_ID_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 characters from A-Z a-z 0-9 _ . : -")
        return value


class StoredMessageOut(BaseModel):
    user_id: str
    msg_id: str
    message: str
    value: float | None
    key: str | None
    timestamp: str
    received_at: str
    stream_id: str


class MessagesPage(BaseModel):
    messages: list[StoredMessageOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on "
                                    "the last one")


class Values(BaseModel):
    count: int
    sum: float | None
    avg: float | None
    min: float | None
    max: float | None


class UserStats(BaseModel):
    user: str
    messages: int
    values: Values
    first_seen: str | None
    last_seen: str | None
    backlog: int
    pending: int
    paused: bool
    oldest_unwritten_age_seconds: float | None


class KeyStats(BaseModel):
    user: str
    key: str
    messages: int
    values: Values
    first_seen: str
    last_seen: str


class Totals(BaseModel):
    messages_stored: int
    users_with_messages: int
    queues: int
    backlog: int
    pending: int
    oldest_unwritten_age_seconds: float | None
    dead_letters: int
    accepted_per_second: float
    written_per_second: float
    connections: int
    engines: int
    web_processes: int


_ERRORS = errors(401, 403, 404, 422)


# --- routes --------------------------------------------------------------------------------------

@bp.get("/messages")
@spec.validate(query=MessagesQuery, resp=Responses(HTTP_200=MessagesPage, **_ERRORS),
               security=BEARER, tags=["history"])
@jwt_required()
def list_messages() -> tuple[Response, int]:
    """A page of stored messages, newest first (or oldest first), with a cursor to the next.

    Keyset pagination on (timestamp, id): following cursors returns every row once, and a page
    deep in the history costs what the first does."""
    query: MessagesQuery = request.context.query  # type: ignore[attr-defined]
    reader = _reader()
    user = query.user or reader.username
    if not _may_read(reader, user):
        return _forbidden()
    filters = history.Filters(user=user, since=_naive(query.since), until=_naive(query.until),
                              key=query.key, msg_id=query.msg_id)
    rows, next_cursor = history.page(services().db, filters, query.cursor, query.limit,
                                     newest_first=query.order == "newest")
    return jsonify({"messages": [row.public() for row in rows],
                    "next_cursor": next_cursor}), 200


@bp.get("/stats")
@spec.validate(resp=Responses(HTTP_200=Totals, **_ERRORS), security=BEARER, tags=["stats"])
@jwt_required()
def totals() -> tuple[Response, int]:
    """The service's figures: stored, queued, pending, dead-lettered, rates, live processes
    (viewer or admin)."""
    if _reader().role not in READER_ROLES:
        return error_response(403, "forbidden: the service's totals need the viewer or admin "
                              "role")
    return jsonify(aggregates.totals(services().db, services().redis)), 200


@bp.get("/users/<user_id>/stats")
@spec.validate(resp=Responses(HTTP_200=UserStats, **_ERRORS), security=BEARER, tags=["stats"])
@jwt_required()
def user_stats(user_id: str) -> tuple[Response, int]:
    """A user's aggregates over every stored message, and what is not written yet."""
    if not _may_read(_reader(), user_id):
        return _forbidden()
    if find_user(services().db, user_id) is None:
        return error_response(404, f"not found: no user {user_id}")
    figures = aggregates.user_figures(services().db, user_id) or _nothing(user_id)
    return jsonify({**figures, **aggregates.queue_figures(services().redis, user_id)}), 200


@bp.get("/users/<user_id>/keys/<path:key>/stats")
@spec.validate(resp=Responses(HTTP_200=KeyStats, **_ERRORS), security=BEARER, tags=["stats"])
@jwt_required()
def key_stats(user_id: str, key: str) -> tuple[Response, int]:
    """The aggregates of a user's stored messages that carry this key."""
    if not _may_read(_reader(), user_id):
        return _forbidden()
    figures = aggregates.key_figures(services().db, user_id, key)
    if figures is None:
        return error_response(404, f"not found: no message of {user_id} with this key")
    return jsonify(figures), 200


# --- helpers -------------------------------------------------------------------------------------

def _reader() -> User:
    return get_current_user()  # type: ignore[no-any-return]


def _may_read(reader: User, user_id: str) -> bool:
    return reader.username == user_id or reader.role in READER_ROLES


def _forbidden() -> tuple[Response, int]:
    return error_response(403, "forbidden: you may read only your own messages and figures")


def _naive(value: str | None) -> Any:
    return None if value is None else parse_timestamp(value, "time").replace(tzinfo=None)


def _nothing(user_id: str) -> dict[str, Any]:
    return {"user": user_id, "messages": 0,
            "values": {"count": 0, "sum": None, "avg": None, "min": None, "max": None},
            "first_seen": None, "last_seen": None}
