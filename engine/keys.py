"""Every Redis key and channel name Tributary uses, and nothing else builds one.

Per-user keys carry the hash tag `{<user_id>}` so that a user's stream and its companions live
in one Redis Cluster slot and a Lua script may touch them together. User ids are usernames
restricted to `USER_ID_PATTERN`, which cannot contain a brace.
"""

from __future__ import annotations

import re
import zlib

#: The consumer group every engine reads through.
GROUP = "writers"

#: Allowed user ids (usernames): safe inside a hash tag, a room name and a log line.
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: The queue registry and the closing set are each split into this many keys, every one with a
#: hash tag of its own, so that on Redis Cluster they spread over the masters instead of one key
#: on one node holding every user. A user always lands in the same shard.
REGISTRY_SHARDS = 16


def registry_shard(user_id: str) -> int:
    """The shard of the registry and of the closing set that holds `user_id`."""
    return zlib.crc32(user_id.encode()) % REGISTRY_SHARDS


def queues(shard: int) -> str:
    """One shard of the queue registry: a set of user ids that have a stream."""
    return f"tributary:queues:{{q{shard}}}"


def closing(shard: int) -> str:
    """One shard of the closing set: user ids whose last connection closed, scored by the time
    (ms) it closed."""
    return f"tributary:queues:closing:{{q{shard}}}"


def queues_of(user_id: str) -> str:
    """The registry shard holding `user_id`."""
    return queues(registry_shard(user_id))


def closing_of(user_id: str) -> str:
    """The closing-set shard holding `user_id`."""
    return closing(registry_shard(user_id))


#: Sorted set of every registered user id scored by its backlog (entries not yet written) as
#: an engine last measured it, rewritten after every sweep with a TTL: the dashboard's Queues
#: view pages through it by backlog without measuring every stream itself.
BACKLOG_RANKING = "tributary:queues:by-backlog"

#: Pattern matching every per-user stream key, for reconciling the registry with SCAN.
STREAM_PATTERN = "ingest:{*}"

#: Set of engine consumer names that have announced themselves.
ENGINES = "tributary:engines"

#: The last heartbeat of every engine (a hash, engine name -> JSON), kept after the engine
#: stops so that the dashboard shows it dead until an operator forgets it.
ENGINE_STATS = "tributary:engine-stats"

#: The same for web processes (instance id -> JSON of its last heartbeat).
WEB_STATS = "tributary:web-stats"

#: The dashboard's figures over the last minutes (a list of JSON samples, newest first), so
#: that an overview page opened now draws its charts at once.
DASHBOARD_SAMPLES = "tributary:dashboard:samples"


def dashboard_sampler(slot: int) -> str:
    """Created (SET NX, with a TTL) by the web process that takes the dashboard sample of
    interval number `slot`: one sample per interval however many web processes run."""
    return f"tributary:dashboard:sampler:{slot}"


_STREAM = re.compile(r"^ingest:\{([A-Za-z0-9_.-]{1,64})\}$")


def stream(user_id: str) -> str:
    """The user's ingest stream."""
    return f"ingest:{{{user_id}}}"


def connections(user_id: str) -> str:
    """Hash of live socket.io connections: web instance id -> count."""
    return f"ingest:{{{user_id}}}:conns"


def rate_bucket(user_id: str, path: str) -> str:
    """Token bucket of one ingest path (`socket` or `http`) of the user."""
    return f"ingest:{{{user_id}}}:rate:{path}"


def failures(user_id: str) -> str:
    """Hash of stream entry id -> failed write attempts, for entries the database refused."""
    return f"ingest:{{{user_id}}}:failures"


def lease(user_id: str) -> str:
    """Name of the engine currently allowed to write the user's stream, with a TTL."""
    return f"ingest:{{{user_id}}}:lease"


def paused(user_id: str) -> str:
    """Present while an operator holds the user's queue back (JSON: who, since when): the
    engines write nothing of it until it is resumed."""
    return f"ingest:{{{user_id}}}:paused"


def subscriptions(user_id: str) -> str:
    """Hash of the user's keys whose live aggregates someone subscribed to: key -> count of
    subscribed connections. The engines emit `stats` for these after each commit."""
    return f"ingest:{{{user_id}}}:subscriptions"


def user_keys(user_id: str) -> list[str]:
    """Every per-user key, in the order the queue scripts take them."""
    return [stream(user_id), connections(user_id), rate_bucket(user_id, "socket"),
            rate_bucket(user_id, "http"), failures(user_id), lease(user_id), paused(user_id),
            subscriptions(user_id)]


def user_from_stream(key: str | bytes) -> str | None:
    """The user id of a stream key, or None when the key is not a Tributary stream."""
    if isinstance(key, bytes):
        key = key.decode()
    match = _STREAM.match(key)
    return match.group(1) if match else None


def engine_heartbeat(consumer: str) -> str:
    """Liveness key of one engine process; it expires when the engine stops refreshing it."""
    return f"tributary:engine:{consumer}"


def web_heartbeat(instance: str) -> str:
    """Liveness key of one web process; connection counts of a dead one are ignored."""
    return f"tributary:web:{instance}"


#: Set of web instance ids that have announced themselves.
WEB_INSTANCES = "tributary:web-instances"


def account(user_id: str) -> str:
    """The account's role and disabled flag (JSON) as a connect reads them without a database
    query; expires on its own and is deleted whenever an admin changes either."""
    return f"tributary:account:{{{user_id}}}"


def revoked_token(jti: str) -> str:
    """Marks a token id as revoked until the token would have expired anyway."""
    return f"tributary:revoked:{jti}"


def tokens_revoked_before(user_id: str) -> str:
    """Time (epoch seconds) before which every token of the user was revoked: by an admin
    revoking them all, or by disabling the account."""
    return f"tributary:tokens:{{{user_id}}}:revoked-before"


#: Pub/sub channel on which an operator asks every engine to sweep now ("write now").
SWEEP_NOW = "tributary:sweep-now"

#: Pub/sub channel on which revocations are announced to every web process (JSON messages
#: `{"jti": …}` or `{"user": …}`, each with a `reason`).
REVOCATIONS = "tributary:revocations"


def login_address_bucket(address: str) -> str:
    """Token bucket of login attempts from one client address."""
    return f"tributary:login:address:{address}"


def login_username_bucket(username: str) -> str:
    """Token bucket of failed logins of one username."""
    return f"tributary:login:username:{username}"


def user_room(user_id: str) -> str:
    """socket.io room of every connection of one user; receipts go there."""
    return f"user:{user_id}"


def key_stats_room(user_id: str, key: str) -> str:
    """socket.io room of the connections subscribed to the live aggregates of one key."""
    return f"keystats:{user_id}:{key}"


#: socket.io room of dashboard viewers; engines publish their statistics there.
DASHBOARD_ROOM = "dashboard"
