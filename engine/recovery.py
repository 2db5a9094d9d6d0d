"""Recovery: entries left pending by other engines, dead consumers, and the queue registry.

Each step is explicit and logged: what was claimed from whom, what was dropped and why.

- Entries another consumer holds are claimed with XAUTOCLAIM once they have been idle for
  CLAIM_IDLE_MS, or at once when every holder is a dead engine (its heartbeat is gone).
- A consumer with no heartbeat and nothing pending is deleted from the group; one with pending
  entries is kept until they have been claimed.
- The registry is reconciled with the streams actually in Redis (SCAN), so a stream whose
  registration was lost (an engine died between the two steps of a queue removal) is found.
- A stream without the `writers` group (written by something other than Tributary, or whose
  group was destroyed) gets the group back, reading from its first entry.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from redis import Redis
from redis.exceptions import ResponseError

from engine import keys, streams

log = logging.getLogger(__name__)


def claim_from_others(client: Redis, user_id: str, consumer: str,
                      holders: dict[str, int], live: Collection[str],
                      claim_idle_ms: int) -> int | None:
    """Take over the user's entries pending with other consumers, when allowed.

    Returns how many entries were claimed, once no other consumer holds any of the user's
    entries, so that this consumer may read the stream without overtaking an earlier entry;
    None while another consumer still holds some (they are not idle long enough yet). Dead
    consumers left with nothing pending are deleted from the group.
    """
    others = {name: count for name, count in holders.items() if name != consumer and count}
    if not others:
        return 0
    all_dead = not any(name in live for name in others)
    min_idle = 0 if all_dead else claim_idle_ms
    try:
        claimed, deleted = streams.autoclaim(client, user_id, consumer, min_idle)
    except ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        return 0  # the queue went away meanwhile: nothing left to claim
    if claimed or deleted:
        log.warning("claimed %d pending entries of user %s from %s (%s)%s", claimed, user_id,
                    ", ".join(sorted(others)),
                    "dead engines" if all_dead else f"idle over {claim_idle_ms} ms",
                    f"; {deleted} had been deleted while pending" if deleted else "",
                    extra={"user": user_id})
    remaining = streams.pending_by_consumer(client, [user_id])[user_id]
    dead = sorted(name for name in others if name not in live and not remaining.get(name))
    if dead:
        forgotten = streams.forget_consumers(client, {user_id: dead})
        if forgotten:
            log.info("removed dead consumer(s) %s from the stream of user %s: their entries "
                     "were claimed", ", ".join(name for _, name in forgotten), user_id)
    if any(count for name, count in remaining.items() if name != consumer):
        return None
    return claimed


def remove_dead_consumers(client: Redis, user_ids: Sequence[str],
                          live: Collection[str]) -> int:
    """Delete consumers without a heartbeat and without pending entries; returns how many.

    A consumer with pending entries is kept until they have been claimed; the check is made
    again atomically at the deletion (forget.lua), in case the consumer was not dead after all.
    """
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.xinfo_consumers(keys.stream(user_id), keys.GROUP)
    replies = pipe.execute(raise_on_error=False)
    doomed: dict[str, list[str]] = {}
    for user_id, reply in zip(user_ids, replies):
        if isinstance(reply, Exception):
            continue
        for info in reply:
            name = info["name"]
            if name not in live and int(info["pending"]) == 0:
                doomed.setdefault(user_id, []).append(name)
    if not doomed:
        return 0
    removed = streams.forget_consumers(client, doomed)
    if removed:
        log.info("removed %d dead consumer(s) with nothing pending from %d stream(s)",
                 len(removed), len({user_id for user_id, _ in removed}))
    return len(removed)


def restore_group(client: Redis, user_id: str) -> bool:
    """Give the user's stream its consumer group again, reading from the first entry; returns
    False when the stream itself is gone (its queue was removed meanwhile)."""
    try:
        client.xgroup_create(keys.stream(user_id), keys.GROUP, id="0")
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return True
        if "requires the key to exist" in str(exc):
            return False
        raise
    log.warning("stream of user %s had no consumer group %r; created it, reading from its "
                "first entry", user_id, keys.GROUP)
    return True


def reconcile_registry(client: Redis, registered: Collection[str]) -> list[str]:
    """Register every stream found in Redis but missing from the registry; returns them."""
    missing = sorted(streams.scan_streams(client) - set(registered))
    if missing:
        streams.register(client, missing)
        log.warning("registered %d stream(s) missing from the queue registry: %s",
                    len(missing), ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""))
    return missing


def acknowledge_deleted(client: Redis, user_id: str, count: int = 1000) -> int:
    """Acknowledge the user's pending entries whose body was deleted; returns how many.

    An empty stream with pending entries holds only such entries: no engine drains an empty
    stream, so they would keep its queue (and their consumer) forever. A deleted entry cannot
    come back (entry ids are never reused), so seeing it gone is enough to acknowledge it,
    whoever holds it.
    """
    stream = keys.stream(user_id)
    pending = client.xpending_range(stream, keys.GROUP, min="-", max="+", count=count)
    ids = [entry["message_id"] for entry in pending]
    if not ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for entry_id in ids:
        pipe.xrange(stream, entry_id, entry_id)
    gone = [entry_id for entry_id, body in zip(ids, pipe.execute()) if not body]
    if gone:
        client.xack(stream, keys.GROUP, *gone)
        log.warning("acknowledged %d pending entries of user %s deleted before they were "
                    "written", len(gone), user_id)
    return len(gone)


def remove_idle_queues(client: Redis, user_ids: Sequence[str],
                       live_web: Sequence[str]) -> list[str]:
    """Remove the queues of these users that are idle (see remove.lua); returns the removed.

    Users who turn out to be connected again leave the closing set.
    """
    removed, reconnected = [], []
    for user_id in user_ids:
        status = streams.remove_queue(client, user_id, live_web)
        if status == "pending" and acknowledge_deleted(client, user_id):
            status = streams.remove_queue(client, user_id, live_web)
        if status == "removed":
            removed.append(user_id)
        elif status == "connected":
            reconnected.append(user_id)
    done = removed + reconnected
    if done:
        streams.unmark_closing(client, done)
    if removed:
        log.info("removed %d idle queue(s): %s", len(removed),
                 ", ".join(removed[:10]) + (" …" if len(removed) > 10 else ""))
    return removed
