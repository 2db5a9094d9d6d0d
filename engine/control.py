"""What an operator can do to the queues, and see of them: pause and resume a user's queue,
ask every engine to sweep now, purge a queue into dead letters, and read each queue's state.

Pausing holds a user's rows back: ingest goes on (messages are still accepted and acked), but
no engine starts writing the user's stream until it is resumed. A batch an engine had already
read when the pause came is finished; nothing later is read. Resuming writes the held entries
in stream order, like any backlog.

Purging never throws messages away: each entry goes to `dead_letters` with the reason "purged
by <operator>" (from where it can be replayed), and is then acknowledged and deleted. To be
sure that no engine is writing the stream meanwhile, the purge pauses the queue and takes the
user's lease, as an engine would; engines hand back the lease of a paused queue at their next
pass.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from redis import Redis

from engine import keys, scripts, streams
from engine.errors import TributaryError
from engine.storage import Letter, Storage

log = logging.getLogger(__name__)

#: Entries moved per step of a purge (one transaction, one XACK + XDEL).
PURGE_CHUNK = 1000
#: Lease lifetime of a purge step (ms); renewed per chunk.
PURGE_LEASE_MS = 30_000


class QueueBusy(TributaryError):
    """An engine kept writing the queue: the purge could not take it over in time."""


@dataclass(frozen=True, slots=True)
class QueueState:
    """One user's queue as the operator sees it."""

    user_id: str
    length: int
    pending: int
    oldest_ms: int | None
    lease: str | None
    connections: int
    paused: bool


# --- pausing --------------------------------------------------------------------------------------

def pause(redis: Redis, user_id: str, by: str) -> bool:
    """Hold the user's queue back; False when it was paused already."""
    record = orjson.dumps({"by": by, "at": time.time()})
    return bool(redis.set(keys.paused(user_id), record, nx=True))


def resume(redis: Redis, user_id: str) -> bool:
    """Let the engines write the user's queue again; False when it was not paused."""
    return bool(redis.delete(keys.paused(user_id)))


def paused_among(redis: Redis, user_ids: Sequence[str]) -> set[str]:
    """The users among `user_ids` whose queue is paused (one round trip)."""
    if not user_ids:
        return set()
    pipe = redis.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.exists(keys.paused(user_id))
    return {user_id for user_id, there in zip(user_ids, pipe.execute()) if there}


def request_sweep(redis: Redis) -> int:
    """Ask every engine to sweep now, below the threshold ("write now"); returns how many
    engines heard it."""
    return int(redis.publish(keys.SWEEP_NOW, b"sweep"))


# --- reading queues -------------------------------------------------------------------------------

def queue_states(redis: Redis, user_ids: Sequence[str], live_instances: Sequence[str]
                 ) -> list[QueueState]:
    """The state of each of these users' queues, in the order given (one round trip)."""
    pipe = redis.pipeline(transaction=False)
    for user_id in user_ids:
        stream = keys.stream(user_id)
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)
        pipe.xpending(stream, keys.GROUP)
        pipe.get(keys.lease(user_id))
        pipe.hgetall(keys.connections(user_id))
        pipe.exists(keys.paused(user_id))
    replies = pipe.execute(raise_on_error=False)
    live = set(live_instances)
    states = []
    for index, user_id in enumerate(user_ids):
        length, first, pending, lease, conns, paused = replies[6 * index:6 * index + 6]
        states.append(QueueState(
            user_id=user_id,
            length=0 if isinstance(length, Exception) else int(length),
            pending=0 if isinstance(pending, Exception) else int(pending["pending"]),
            oldest_ms=int(first[0][0].split("-", 1)[0])
            if first and not isinstance(first, Exception) else None,
            lease=None if lease is None or isinstance(lease, Exception) else str(lease),
            connections=0 if isinstance(conns, Exception) else
            sum(int(count) for instance, count in conns.items() if instance in live),
            paused=bool(paused) and not isinstance(paused, Exception)))
    return states


def by_backlog(redis: Redis, user_ids: Sequence[str]) -> list[tuple[str, int]]:
    """(user, unwritten entries) for every one of these users, largest backlog first: one
    XLEN each in one round trip, no SCAN."""
    pipe = redis.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.xlen(keys.stream(user_id))
    lengths = [0 if isinstance(n, Exception) else int(n)
               for n in pipe.execute(raise_on_error=False)]
    return sorted(zip(user_ids, lengths), key=lambda pair: (-pair[1], pair[0]))


def record_ranking(redis: Redis, lengths: dict[str, int], ttl: float) -> None:
    """Replace BACKLOG_RANKING with these users' backlogs (one transaction); it expires after
    `ttl` seconds unless an engine records it again."""
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.BACKLOG_RANKING)
    if lengths:
        pipe.zadd(keys.BACKLOG_RANKING, lengths)  # type: ignore[arg-type]
        pipe.expire(keys.BACKLOG_RANKING, max(1, math.ceil(ttl)))
    pipe.execute()


def ranked(redis: Redis, start: int, count: int) -> tuple[list[tuple[str, int]], int] | None:
    """Users `start` … `start + count - 1` of BACKLOG_RANKING (largest backlog first, as last
    measured by an engine) and how many it ranks; None when no engine recorded it lately."""
    pipe = redis.pipeline(transaction=False)
    pipe.zrevrange(keys.BACKLOG_RANKING, start, start + count - 1, withscores=True)
    pipe.zcard(keys.BACKLOG_RANKING)
    page, total = pipe.execute()
    if not total:
        return None
    return [(str(user), int(score)) for user, score in page], int(total)


# --- purging --------------------------------------------------------------------------------------

def purge(redis: Redis, storage: Storage, user_id: str, by: str, *,
          wait: float = 15.0) -> int:
    """Move every entry of the user's queue to dead letters ("purged by <by>"); returns how
    many. Raises QueueBusy when no engine let go of the queue within `wait` seconds. The
    queue's paused state is what it was before."""
    was_paused = not pause(redis, user_id, by)
    holder = f"purge:{by}"
    try:
        deadline = time.monotonic() + wait
        while not scripts.LEASE(redis, [keys.lease(user_id)], [holder, PURGE_LEASE_MS]):
            if time.monotonic() >= deadline:
                raise QueueBusy(f"an engine is writing {user_id}'s queue; try again")
            time.sleep(0.2)
        try:
            moved = _move_to_dead_letters(redis, storage, user_id, f"purged by {by}", holder)
        finally:
            streams.release_leases(redis, [user_id], holder)
    finally:
        if not was_paused:
            resume(redis, user_id)
    log.warning("queue of user %s purged by %s: %d entries moved to dead_letters", user_id,
                by, moved)
    return moved


def _move_to_dead_letters(redis: Redis, storage: Storage, user_id: str, reason: str,
                          holder: str) -> int:
    stream, moved = keys.stream(user_id), 0
    while True:
        entries = redis.xrange(stream, count=PURGE_CHUNK)
        if not entries:
            return moved
        letters = []
        for entry_id, body in entries:
            fields = body or {}
            payload = fields.get("d") if len(fields) == 1 else None
            if payload is None:  # not written by Tributary: keep every field
                payload = orjson.dumps(fields).decode()
            letters.append(Letter(user_id, str(entry_id), _msg_id(str(payload)), str(payload),
                                  reason, 0))
        storage.dead_letters(letters)
        streams.ack_delete(redis, {user_id: [letter.stream_id for letter in letters]})
        scripts.LEASE(redis, [keys.lease(user_id)], [holder, PURGE_LEASE_MS])
        moved += len(letters)


def _msg_id(payload: str) -> str | None:
    try:
        msg_id = orjson.loads(payload).get("msg_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return msg_id if isinstance(msg_id, str) and len(msg_id) <= 64 else None
