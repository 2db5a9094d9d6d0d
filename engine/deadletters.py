"""Dead letters: entries the database refused MAX_DELIVERIES times, kept with their payload
and last error. Replaying one appends its payload to its user's stream again (a new entry), so
that it is written once whatever made the database refuse it is fixed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from redis import Redis

from engine import streams
from engine.messages import decode
from engine.schema import dead_letters
from engine.settings import Settings
from engine.storage import utc_now

log = logging.getLogger(__name__)

#: Replays ignore the rate limit and the backlog cap: the operator asked for them.
REPLAY = streams.Limits("replay", rate=0, burst=1, max_backlog=2**62)


def replay(settings: Settings, db: sa.engine.Engine, redis: Redis, *, user_id: str | None = None,
           ids: Sequence[int] | None = None) -> int:
    """Append dead letters not yet replayed back to their streams; returns how many."""
    query = sa.select(dead_letters).where(dead_letters.c.replayed_at.is_(None)) \
        .order_by(dead_letters.c.id)
    if user_id is not None:
        query = query.where(dead_letters.c.user_id == user_id)
    if ids:
        query = query.where(dead_letters.c.id.in_(list(ids)))
    with db.connect() as conn:
        letters = conn.execute(query).all()
    replayed = 0
    for letter in letters:
        try:
            decode(letter.payload)
        except ValueError as exc:
            log.warning("dead letter %s of user %s is not a Tributary message (%s); "
                        "not replayed", letter.id, letter.user_id, exc)
            continue
        [reply] = streams.append_all(redis, [(letter.user_id, REPLAY,
                                              [letter.payload.encode()])])
        if isinstance(reply, Exception):
            raise reply
        _, (entry_id,) = streams.parse_append(reply)
        streams.register(redis, [letter.user_id])
        with db.begin() as conn:
            conn.execute(dead_letters.update().where(dead_letters.c.id == letter.id)
                         .values(replayed_at=utc_now()))
        log.info("dead letter %s of user %s replayed as entry %s", letter.id, letter.user_id,
                 entry_id)
        replayed += 1
    return replayed
