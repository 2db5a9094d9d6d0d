"""The figures users and operators read: a user's aggregates, one key's aggregates, and the
service's totals. Aggregates come from `user_stats` and `key_stats` (kept by the engine in the
same transaction as the rows), never from a COUNT over `messages`; live figures come from
Redis (queues) and the heartbeats of engines and web processes."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from redis import Redis

from engine import control, liveness, streams
from engine.figures import figures
from engine.schema import dead_letters, key_stats, user_stats


def user_figures(db: sa.engine.Engine, user_id: str) -> dict[str, Any] | None:
    """The user's aggregates, or None when nothing of theirs is stored yet."""
    with db.connect() as conn:
        row = conn.execute(sa.select(user_stats).where(user_stats.c.user_id == user_id)).first()
    return None if row is None or row.user_id != user_id else {"user": user_id, **figures(row)}


def key_figures(db: sa.engine.Engine, user_id: str, key: str) -> dict[str, Any] | None:
    """The aggregates of the user's messages with this key, or None when there are none."""
    with db.connect() as conn:
        row = conn.execute(sa.select(key_stats).where(key_stats.c.user_id == user_id,
                                                       key_stats.c.key == key)).first()
    if row is None or row.user_id != user_id:
        return None
    return {"user": user_id, "key": row.key, **figures(row)}


def queue_figures(redis: Redis, user_id: str) -> dict[str, Any]:
    """What of the user's messages is not written yet."""
    [state] = control.queue_states(redis, [user_id], liveness.live_names(redis, liveness.WEB))
    return {"backlog": state.length, "pending": state.pending, "paused": state.paused,
            "oldest_unwritten_age_seconds": _age(state.oldest_ms)}


def totals(db: sa.engine.Engine, redis: Redis) -> dict[str, Any]:
    """The service's figures: stored, queued, dead-lettered, and the live processes."""
    with db.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count(), sa.func.sum(
            user_stats.c.message_count))).one()
        letters = conn.execute(sa.select(sa.func.count()).select_from(dead_letters)
                               .where(dead_letters.c.replayed_at.is_(None))).scalar_one()
    users = streams.registered_users(redis)
    backlog = streams.measure(redis, users)
    pending = streams.pending_by_consumer(redis, [u for u, (n, _) in backlog.items() if n])
    oldest = min((ms for _, ms in backlog.values() if ms is not None), default=None)
    engines = liveness.live(redis, liveness.ENGINE)
    webs = liveness.live(redis, liveness.WEB)
    return {
        "messages_stored": int(stored[1] or 0),
        "users_with_messages": int(stored[0]),
        "queues": len(users),
        "backlog": sum(length for length, _ in backlog.values()),
        "pending": sum(sum(held.values()) for held in pending.values()),
        "oldest_unwritten_age_seconds": _age(oldest),
        "dead_letters": int(letters),
        "accepted_per_second": round(sum(float(w.get("accepted_per_second", 0))
                                         for w in webs.values()), 1),
        "written_per_second": round(sum(float(e.get("rows_per_second", 0))
                                        for e in engines.values()), 1),
        "connections": sum(int(w.get("connections", 0)) for w in webs.values()),
        "engines": len(engines),
        "web_processes": len(webs),
    }


def _age(oldest_ms: int | None) -> float | None:
    return None if oldest_ms is None else round(max(0.0, time.time() - oldest_ms / 1000), 3)
