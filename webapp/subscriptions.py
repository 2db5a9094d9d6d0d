"""Live aggregates over socket.io: a client subscribes to one of its own keys and receives a
`stats` event after each commit that changed that key's aggregates.

    socket.emit("subscribe", {key: "temperature"}, (answer) => …)
        // {ok: true, key, stats: {messages, values: {…}, first_seen, last_seen} or null}
    socket.on("stats", (s) => …)   // {user, key, messages, values, first_seen, last_seen}
    socket.emit("unsubscribe", {key: "temperature"}, (answer) => …)

A subscription joins the connection to the key's room and is counted in Redis
(`keys.subscriptions`), which is how the engines know whose figures to send after a commit.
Only the connection's own user's keys can be subscribed to: naming another user is refused
with a reason. A connection holds at most MAX_PER_CONNECTION subscriptions; they end with it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import request
from flask_socketio import join_room, leave_room
from redis import Redis

from engine import keys
from engine.connections import REDIS_FAILURES
from engine.messages import MAX_KEY_CHARS
from webapp import aggregates
from webapp.extensions import services, socketio

log = logging.getLogger(__name__)

MAX_PER_CONNECTION = 100

#: The keys each connection of this process subscribed to (sid -> (user, keys)).
_subscribed: dict[str, tuple[str, set[str]]] = {}


@socketio.on("subscribe")
def on_subscribe(payload: Any = None) -> dict[str, Any]:
    sid: str = request.sid  # type: ignore[attr-defined]
    user = services().gateway.users.get(sid)
    if user is None:
        return _refused("not connected")
    key, problem = _key_of(payload, user)
    if problem is not None:
        return _refused(problem)
    _, mine = _subscribed.setdefault(sid, (user, set()))
    if key not in mine:
        if len(mine) >= MAX_PER_CONNECTION:
            return _refused(f"subscriptions: at most {MAX_PER_CONNECTION} per connection")
        try:
            services().redis.hincrby(keys.subscriptions(user), key, 1)
        except REDIS_FAILURES:
            return _refused("unavailable")
        mine.add(key)
        join_room(keys.key_stats_room(user, key))
    return {"ok": True, "key": key, "stats": aggregates.key_figures(services().db, user, key)}


@socketio.on("unsubscribe")
def on_unsubscribe(payload: Any = None) -> dict[str, Any]:
    sid: str = request.sid  # type: ignore[attr-defined]
    user = services().gateway.users.get(sid)
    if user is None:
        return _refused("not connected")
    key, problem = _key_of(payload, user)
    if problem is not None:
        return _refused(problem)
    _, mine = _subscribed.get(sid, (user, set()))
    if key in mine:
        mine.discard(key)
        leave_room(keys.key_stats_room(user, key))
        _count_out(services().redis, user, [key])
    return {"ok": True, "key": key}


def forget(sid: str, redis: Redis) -> None:
    """A connection ended: its subscriptions are counted out."""
    user, mine = _subscribed.pop(sid, ("", set()))
    if mine:
        _count_out(redis, user, sorted(mine))


def _count_out(redis: Redis, user: str, subscribed: list[str]) -> None:
    try:
        pipe = redis.pipeline(transaction=False)
        for key in subscribed:
            pipe.hincrby(keys.subscriptions(user), key, -1)
        pipe.execute()
    except REDIS_FAILURES as exc:  # the engines send a few figures nobody hears; no harm
        log.debug("could not count out %d subscription(s) of %s: %s", len(subscribed), user,
                  exc)


def _key_of(payload: Any, user: str) -> tuple[str, str | None]:
    if not isinstance(payload, dict):
        return "", "payload: must be an object {key}"
    owner = payload.get("user", user)
    if owner != user:
        return "", "forbidden: you may subscribe only to your own keys"
    key = payload.get("key")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
        return "", f"key: must be a string of 1 to {MAX_KEY_CHARS} characters"
    return key, None


def _refused(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}
