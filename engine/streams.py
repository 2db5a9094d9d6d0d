"""The stream protocol: per-user queues in Redis Streams, shared by the web app and the engine.

A user's queue is the stream `ingest:{<user>}` with the consumer group `writers`, registered in
one shard of the queue registry (`tributary:queues:{q<n>}`, see keys.registry_shard). The web
side opens a queue when a user connects, appends validated messages, and marks the queue
closing when the user's last connection ends. The engine reads through the group,
acknowledges and deletes entries after their rows commit, and removes a queue once it is
closing and empty. Every step that must be atomic is one Lua script over the
keys of one user.

On Redis Cluster every command here touches one slot: the scripts take one user's keys, the
registry and closing shards are one key each, and the engine's reads go out as one XREADGROUP
per slot, pipelined per node (see `read`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster

from engine import keys, scripts

log = logging.getLogger(__name__)

#: Reply codes of ingest.lua for refused messages.
BACKLOG_FULL = "B"
RATE_LIMITED = "R"


def now_ms() -> int:
    return int(time.time() * 1000)


# --- web side ----------------------------------------------------------------------------------

def open_authorized_many(client: Redis,
                         connects: Sequence[tuple[str, str, float, bytes | None]],
                         instance: str, account_seconds: int = 0,
                         ) -> list[tuple[bool, list[Any]] | Exception]:
    """Connects' one round trip, each (user id, token id, issued at, account record or None):
    per connect, whether the token (by its id) is revoked and open.lua's reply, with the
    user's revocation record and cached account checked first (see open.lua), or the error of
    its own call; connection errors are raised. An account record, as just read from the
    database, is cached for `account_seconds` and used when no copy is cached. When the token
    is revoked but open.lua opened anyway, the caller counts the connection out again; when it
    created the stream, the caller registers the queue (the engines put back a queue they
    found connected while removing it, so an existing stream needs nothing)."""
    pipe = client.pipeline(transaction=False)
    for user_id, jti, issued_at, account in connects:
        pipe.exists(keys.revoked_token(jti))
        args: list[Any] = [keys.GROUP, instance, issued_at]
        if account is not None:
            args += [account, account_seconds]
        scripts.OPEN.queue(pipe, [keys.stream(user_id), keys.connections(user_id),
                                  keys.tokens_revoked_before(user_id), keys.account(user_id)],
                           args)
    replies = scripts.execute_scripts(client, pipe)
    answers: list[tuple[bool, list[Any]] | Exception] = []
    for revoked, reply in zip(replies[::2], replies[1::2]):
        if isinstance(revoked, Exception):
            answers.append(revoked)
        elif isinstance(reply, Exception):
            answers.append(reply)
        else:
            answers.append((bool(revoked), list(reply)))
    return answers


def close_connections(client: Redis, user_ids: Sequence[str], instance: str) -> dict[str, int]:
    """Count one closed connection per item of `user_ids` (a user may appear several times),
    in one round trip. Returns each user's remaining connections; mark the users left with
    none closing next (`mark_closing`)."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        scripts.CLOSE.queue(pipe, [keys.connections(user_id)], [instance])
    remaining: dict[str, int] = {}
    for user_id, reply in zip(user_ids, scripts.execute_scripts(client, pipe)):
        if isinstance(reply, Exception):  # that user's keys only (a wrong type); not retried
            log.error("could not count out a connection of %s: %s", user_id, reply)
        else:
            remaining[user_id] = int(reply)
    return remaining


def left_with_none(remaining: dict[str, int]) -> dict[str, int]:
    """The users of a `close_connections` answer left with no connection, with the time now."""
    at = now_ms()
    return {user_id: at for user_id, count in remaining.items() if count <= 0}


def mark_closing(client: Redis, users: dict[str, int]) -> None:
    """Mark queues for removal once drained (`users`: user id -> time, from `left_with_none`);
    repeating it is harmless."""
    if not users:
        return
    pipe = client.pipeline(transaction=False)
    for key, members in _by_shard(users, keys.closing_of).items():
        pipe.zadd(key, {user: users[user] for user in members})
    pipe.execute()


def unmark_closing(client: Redis, user_ids: Sequence[str]) -> None:
    """Take users out of the closing set (their queues were removed, or are in use again)."""
    if not user_ids:
        return
    pipe = client.pipeline(transaction=False)
    for key, members in _by_shard(user_ids, keys.closing_of).items():
        pipe.zrem(key, *members)
    pipe.execute()


def closing_users(client: Redis) -> list[str]:
    """Every user in the closing set, over all its shards, oldest mark first per shard."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.REGISTRY_SHARDS):
        pipe.zrange(keys.closing(shard), 0, -1)
    return [str(user) for members in pipe.execute() for user in members]


def _by_shard(user_ids: Iterable[str], key_of: Any) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for user_id in user_ids:
        grouped.setdefault(key_of(user_id), []).append(user_id)
    return grouped


#: Users appended by one ingest.lua call on a single Redis: a flush's users share a few calls
#: rather than each taking one, and no call holds Redis for long.
USERS_PER_APPEND = 128


@dataclass(frozen=True, slots=True)
class Limits:
    """Flow-control parameters of one ingest path (socket.io or HTTP)."""

    path: str
    rate: float
    burst: int
    max_backlog: int


def queue_appends(pipe: Pipeline, appends: Sequence[tuple[str, Limits, Sequence[bytes]]],
                  at_ms: int) -> None:
    """Add to `pipe` one ingest.lua call appending several users' messages, each user's
    atomically; the call's reply is a list of one reply per user (or the error Redis answered
    for that user). On Redis Cluster the users must share a slot."""
    scripts.INGEST.queue(pipe, *ingest_arguments(appends, at_ms))


def ingest_arguments(appends: Sequence[tuple[str, Limits, Sequence[bytes]]], at_ms: int
                     ) -> tuple[list[str], list[Any]]:
    """The keys and arguments of one ingest.lua call appending for `appends`' users."""
    names: list[str] = []
    args: list[Any] = [keys.GROUP, at_ms]
    for user_id, limits, data in appends:
        names += (keys.stream(user_id), keys.rate_bucket(user_id, limits.path))
        args += (limits.rate, limits.burst, limits.max_backlog, len(data), *data)
    return names, args


def append_all(client: Redis, appends: Sequence[tuple[str, Limits, Sequence[bytes]]],
               replicas: int = 0, replicas_timeout_ms: int = 0) -> list[Any]:
    """Append several users' encoded messages in one round trip (group commit) and register
    the queues this created. On one Redis the users go in calls of USERS_PER_APPEND each; on
    Redis Cluster, where a call touches one slot, in a call per user. Returns one reply per
    item, for `parse_append`, or the error Redis answered for that item; raises RedisError
    when the round trip itself failed. With `replicas`, the round trip ends with a WAIT for
    that many replicas on the same connection, whose reply (the replicas that confirmed)
    comes last."""
    now = now_ms()
    pipe = client.pipeline(transaction=False)
    per_call = 1 if isinstance(client, RedisCluster) else USERS_PER_APPEND
    for start in range(0, len(appends), per_call):
        queue_appends(pipe, appends[start:start + per_call], now)
    if replicas:
        pipe.execute_command("WAIT", replicas, replicas_timeout_ms)
    calls = scripts.execute_scripts(client, pipe)
    replies: list[Any] = []
    for start, call in zip(range(0, len(appends), per_call), calls):
        # A call that failed as a whole fails each of its users.
        replies += call if isinstance(call, list) else \
            [call] * len(appends[start:start + per_call])
    register(client, [user_id for (user_id, _, _), reply in zip(appends, replies)
                      if isinstance(reply, list) and reply[0]])
    if replicas:
        replies.append(calls[-1])
    return replies


def parse_append(reply: list[str | int]) -> tuple[bool, list[str]]:
    """Split an ingest.lua reply into (stream created, per-message entry id or refusal code)."""
    return bool(reply[0]), [str(item) for item in reply[1:]]


def register(client: Redis | Pipeline, user_ids: Iterable[str]) -> None:
    """Add users to the queue registry (idempotent): one SADD per shard they fall in.

    This runs right after the script that created their streams, not inside it: a registry
    shard is a key of its own slot, which a user's script cannot touch on Redis Cluster. The
    window between the two is covered as before: the engine's reconciliation registers every
    stream it finds unregistered (recovery.reconcile_registry)."""
    for key, members in _by_shard(user_ids, keys.queues_of).items():
        client.sadd(key, *members)


def registry_size(client: Redis) -> int:
    """Users in the queue registry (SCARD of every shard, one round trip)."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.REGISTRY_SHARDS):
        pipe.scard(keys.queues(shard))
    return sum(int(count) for count in pipe.execute())


# --- engine side -------------------------------------------------------------------------------

@dataclass(slots=True)
class Entry:
    """One stream entry as the engine reads it; `data` is None when its body was deleted."""

    user_id: str
    entry_id: str
    data: str | None


def raw_replies(client: Redis) -> Redis:
    """Make `client` return XREADGROUP and XAUTOCLAIM replies unparsed (lists, as Redis sends
    them): cheaper than redis-py's dicts, and the same on Redis 6.2 and 7."""
    for command in ("XREADGROUP", "XAUTOCLAIM"):
        client.set_response_callback(command, lambda response, **_options: response)
    return client


def registered_users(client: Redis) -> list[str]:
    """Every user in the queue registry, over all its shards (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for shard in range(keys.REGISTRY_SHARDS):
        pipe.smembers(keys.queues(shard))
    return sorted(str(user_id) for members in pipe.execute() for user_id in members)


def measure(client: Redis, user_ids: Sequence[str]) -> dict[str, tuple[int, int | None]]:
    """Per user: entries not yet written (XLEN) and the time (ms) of the oldest one."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        stream = keys.stream(user_id)
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)
    replies = pipe.execute()
    result: dict[str, tuple[int, int | None]] = {}
    for index, user_id in enumerate(user_ids):
        length, first = replies[2 * index], replies[2 * index + 1]
        oldest = int(first[0][0].split("-", 1)[0]) if first else None
        result[user_id] = (int(length), oldest)
    return result


def take_leases(client: Redis, user_ids: Sequence[str], consumer: str,
                ttl_ms: int) -> list[str]:
    """The users among `user_ids` whose streams this consumer holds (taken or renewed now)."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        scripts.LEASE.queue(pipe, [keys.lease(user_id)], [consumer, ttl_ms])
    replies = scripts.execute_scripts(client, pipe)
    return [user_id for user_id, held in zip(user_ids, replies) if held == 1]


def release_leases(client: Redis, user_ids: Sequence[str], consumer: str) -> None:
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        scripts.RELEASE.queue(pipe, [keys.lease(user_id)], [consumer])
    scripts.execute_scripts(client, pipe)


def pending_by_consumer(client: Redis,
                        user_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per user: consumer name -> entries delivered to it and not yet acknowledged."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.xpending(keys.stream(user_id), keys.GROUP)
    replies = pipe.execute(raise_on_error=False)
    result: dict[str, dict[str, int]] = {}
    for user_id, reply in zip(user_ids, replies):
        if isinstance(reply, Exception):  # NOGROUP: the stream went away meanwhile
            result[user_id] = {}
        else:
            result[user_id] = {c["name"]: int(c["pending"]) for c in reply["consumers"]}
    return result


def read(client: Redis, consumer: str, start: dict[str, str], count: int) -> list[Entry]:
    """XREADGROUP over many users at once: `start` maps user id -> '>' (new entries) or '0'
    (this consumer's own pending entries). Entries come back in stream order per user.

    On a single Redis this is one XREADGROUP naming every stream. On Redis Cluster a command
    may only name keys of one slot, so the streams are grouped by slot, one XREADGROUP per
    slot, sent in one pipeline addressed to each slot's master (the pipeline writes to every
    master before reading their replies): one round trip per master, not per stream."""
    if not start:
        return []
    if isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for users in _by_slot(client, list(start)).values():
            pipe.execute_command(
                "XREADGROUP", *_read_args(consumer, count, users, start),
                target_nodes=client.get_node_from_key(keys.stream(users[0])))
        reply = [item for part in pipe.execute() for item in part or []]
    else:
        reply = client.execute_command("XREADGROUP",
                                       *_read_args(consumer, count, list(start), start))
    entries: list[Entry] = []
    for stream_key, items in reply or []:
        user_id = keys.user_from_stream(stream_key)
        if user_id is None:
            continue
        for entry_id, fields in items:
            entries.append(Entry(user_id, entry_id, _data(fields)))
    return entries


def _read_args(consumer: str, count: int, users: list[str],
               start: dict[str, str]) -> list[str | int]:
    args: list[str | int] = ["GROUP", keys.GROUP, consumer, "COUNT", count, "STREAMS"]
    args += [keys.stream(user_id) for user_id in users]
    args += [start[user_id] for user_id in users]
    return args


def _by_slot(client: RedisCluster, user_ids: list[str]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for user_id in user_ids:
        grouped.setdefault(client.keyslot(keys.stream(user_id)), []).append(user_id)
    return grouped


def _data(fields: list[str] | dict[str, str] | None) -> str | None:
    # A list as Redis sends it; a dict from a Redis Cluster client, whose node connections
    # parse stream replies whatever the cluster client's own reply callbacks say.
    if not fields:
        return None
    if isinstance(fields, dict):
        return fields["d"] if list(fields) == ["d"] else orjson.dumps(fields).decode()
    if len(fields) == 2 and fields[0] == "d":
        return fields[1]
    # Not written by Tributary: keep every field, so that its dead letter shows what it was.
    return orjson.dumps(dict(zip(fields[::2], fields[1::2]))).decode()


def autoclaim(client: Redis, user_id: str, consumer: str, min_idle_ms: int,
              batch: int = 1000) -> tuple[int, int]:
    """Claim every entry of the user's stream idle for at least `min_idle_ms`, from whichever
    consumer holds it. Returns (entries now pending with `consumer`, entries found deleted).

    An entry deleted while pending is handled differently by the two reply shapes. Redis 7
    answers with three elements: it drops such entries from the PEL itself and lists their ids
    in the third. Redis 6.2 answers with two: it claims them like the others and lists each as
    a nil, so they are counted as claimed; read back with XREADGROUP they have no body, and
    the writer acknowledges them.
    """
    stream = keys.stream(user_id)
    cursor, moved, deleted = "0-0", 0, 0
    while True:
        reply = client.execute_command("XAUTOCLAIM", stream, keys.GROUP, consumer,
                                       min_idle_ms, cursor, "COUNT", batch)
        cursor, items = reply[0], reply[1]
        moved += len(items)
        deleted += sum(1 for item in items if item is None or item[1] is None)
        if len(reply) > 2:
            deleted += len(reply[2])
        if cursor == "0-0":
            return moved, deleted


def forget_consumers(client: Redis, doomed: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Delete consumers (user id -> names) from the users' groups, each only if it holds no
    pending entry, checked atomically (see forget.lua); returns the (user, name) deleted."""
    pairs = [(user_id, name) for user_id, names in doomed.items() for name in names]
    pipe = client.pipeline(transaction=False)
    for user_id, name in pairs:
        scripts.FORGET.queue(pipe, [keys.stream(user_id)], [keys.GROUP, name])
    replies = scripts.execute_scripts(client, pipe)
    return [pair for pair, reply in zip(pairs, replies) if reply == 1]


def ack_delete(client: Redis, done: dict[str, list[str]], chunk: int = 1000) -> None:
    """Acknowledge and delete written entries, per user, in one pipeline (see ackdel.lua)."""
    pipe = client.pipeline(transaction=False)
    for user_id, entry_ids in done.items():
        stream_keys = [keys.stream(user_id), keys.failures(user_id)]
        for start in range(0, len(entry_ids), chunk):
            scripts.ACKDEL.queue(pipe, stream_keys, [keys.GROUP, *entry_ids[start:start + chunk]])
    for reply in scripts.execute_scripts(client, pipe):
        if isinstance(reply, Exception) and "NOGROUP" not in str(reply):
            raise reply


def record_failure(client: Redis, user_id: str, entry_id: str) -> int:
    """Count one more refused write of an entry; returns the count so far."""
    return int(client.hincrby(keys.failures(user_id), entry_id, 1))


def remove_queue(client: Redis, user_id: str, live_instances: Sequence[str]) -> str:
    """Delete the user's queue if idle; returns removed, connected, backlog or pending.

    The user leaves the registry first and comes back unless the queue was removed, so a
    message racing the removal always finds its queue registered (see remove.lua).
    """
    client.srem(keys.queues_of(user_id), user_id)
    status = str(scripts.REMOVE(client, keys.user_keys(user_id), [keys.GROUP, *live_instances]))
    if status != "removed":
        client.sadd(keys.queues_of(user_id), user_id)
    return status


def get_many(client: Redis, names: Sequence[str]) -> list[Any]:
    """GET of many keys in one round trip: MGET on one Redis; on Redis Cluster, where the keys
    may live in different slots, a pipeline of GETs (one write and read per master)."""
    if not names:
        return []
    if not isinstance(client, RedisCluster):
        return list(client.mget(names))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return list(pipe.execute())


def scan_streams(client: Redis) -> set[str]:
    """User ids of every Tributary stream in Redis, registered or not (SCAN, not KEYS; on
    Redis Cluster the SCAN goes over every master)."""
    found = set()
    for key in client.scan_iter(match=keys.STREAM_PATTERN, count=1000, _type="stream"):
        user_id = keys.user_from_stream(key)
        if user_id:
            found.add(user_id)
    return found
