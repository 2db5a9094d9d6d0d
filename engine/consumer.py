"""Who an engine is: its consumer name in the group, and its liveness key.

Each engine process is one consumer with a name unique to the process instance (host, pid,
random suffix). It proves it is alive with a heartbeat key that expires unless refreshed; an
engine whose key is gone is dead, and what it left pending may be claimed at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

import orjson
from redis import Redis

from engine import keys, streams


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def beat(client: Redis, name: str, ttl: float, info: dict[str, Any]) -> None:
    """Refresh this engine's heartbeat (and announce it in the set of engines). The beat is
    also kept without a TTL in ENGINE_STATS, where the dashboard finds an engine that died
    with what it last said."""
    record = orjson.dumps({**info, "host": socket.gethostname(), "at": time.time()})
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.engine_heartbeat(name), record, px=int(ttl * 1000))
    pipe.sadd(keys.ENGINES, name)
    pipe.hset(keys.ENGINE_STATS, name, record)
    pipe.execute()


def withdraw(client: Redis, name: str) -> None:
    """Say this engine is gone: what it leaves pending may be claimed without waiting."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.engine_heartbeat(name))
    pipe.srem(keys.ENGINES, name)
    pipe.execute()


def live_engines(client: Redis) -> dict[str, dict[str, Any]]:
    """Engines whose heartbeat is current, with what they last reported; forgets the others."""
    names = sorted(str(name) for name in client.smembers(keys.ENGINES))
    if not names:
        return {}
    beats = streams.get_many(client, [keys.engine_heartbeat(name) for name in names])
    dead = [name for name, beat_ in zip(names, beats) if beat_ is None]
    if dead:
        client.srem(keys.ENGINES, *dead)
    return {name: orjson.loads(beat_) for name, beat_ in zip(names, beats) if beat_ is not None}
