"""Which engines and web processes are alive: instance names, heartbeats with a TTL, the
live-member read, and forgetting the dead (the way rq keeps worker registration in one module).

Every process has a name unique to the process instance (host, pid, random suffix). It proves
it is alive with a heartbeat key that expires unless refreshed, and announces itself in the set
of its kind; a member whose key is gone is dead, and reading the live members forgets it there.
Each beat is also kept without a TTL in the kind's stats hash, where the dashboard finds a
process that died with what it last said, until an operator forgets it. An engine's name is
also its consumer name in the group: what a dead engine left pending may be claimed at once.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis

from engine import keys, streams


@dataclass(frozen=True)
class Kind:
    """The keys of one kind of process."""

    #: What the operator calls it ("engine", "web").
    name: str
    #: Set of the names that announced themselves and were not found dead since.
    members: str
    #: Hash of name -> JSON of its last beat, kept after the process died.
    stats: str
    #: The liveness key of one process, given its name.
    heartbeat: Callable[[str], str]


ENGINE = Kind("engine", keys.ENGINES, keys.ENGINE_STATS, keys.engine_heartbeat)
WEB = Kind("web", keys.WEB_INSTANCES, keys.WEB_STATS, keys.web_heartbeat)
KINDS = {kind.name: kind for kind in (ENGINE, WEB)}


@dataclass(frozen=True)
class ProcessRecord:
    """A process as the dashboard lists it: alive or not, with what it last reported."""

    name: str
    alive: bool
    info: dict[str, Any]

    @property
    def age(self) -> float | None:
        """Seconds since the last heartbeat."""
        at = self.info.get("at")
        return max(0.0, time.time() - float(at)) if isinstance(at, (int, float)) else None


def instance_name() -> str:
    """A name no other process of the deployment has, now or later."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def beat(client: Redis, kind: Kind, name: str, ttl: float, info: dict[str, Any]) -> None:
    """Refresh the process's heartbeat for `ttl` seconds, announce it among the members of its
    kind and keep `info` (with the host and the time added) as its last beat."""
    record = orjson.dumps({**info, "host": socket.gethostname(), "at": time.time()})
    pipe = client.pipeline(transaction=False)
    pipe.set(kind.heartbeat(name), record, px=int(ttl * 1000))
    pipe.sadd(kind.members, name)
    pipe.hset(kind.stats, name, record)
    pipe.execute()


def withdraw(client: Redis, kind: Kind, name: str) -> None:
    """Say the process is gone (a warm stop): it is dead at once for everyone, without waiting
    for its key to expire; its last beat stays listed."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(kind.heartbeat(name))
    pipe.srem(kind.members, name)
    pipe.execute()


def live(client: Redis, kind: Kind) -> dict[str, dict[str, Any]]:
    """The members whose heartbeat is current, with what they last reported; forgets the
    others in the members set."""
    names = sorted(str(name) for name in client.smembers(kind.members))
    if not names:
        return {}
    beats = streams.get_many(client, [kind.heartbeat(name) for name in names])
    dead = [name for name, current in zip(names, beats) if current is None]
    if dead:
        client.srem(kind.members, *dead)
    return {name: orjson.loads(current) for name, current in zip(names, beats)
            if current is not None}


def live_names(client: Redis, kind: Kind) -> list[str]:
    """The names of the members whose heartbeat is current, sorted; forgets the others."""
    return sorted(live(client, kind))


def records(client: Redis, kind: Kind) -> list[ProcessRecord]:
    """Every process of the kind that beat since it was last forgotten, the live ones first."""
    last = client.hgetall(kind.stats)
    names = sorted(str(name) for name in last)
    if not names:
        return []
    current = streams.get_many(client, [kind.heartbeat(name) for name in names])
    found = []
    for name, beat_now in zip(names, current):
        try:
            info = orjson.loads(beat_now if beat_now is not None else last[name])
        except orjson.JSONDecodeError:
            info = {}
        found.append(ProcessRecord(name, beat_now is not None, info))
    return sorted(found, key=lambda r: (not r.alive, r.name))


def forget(client: Redis, kind: Kind, name: str) -> bool:
    """Forget the last beat of a process that is no longer alive; False when it is alive or
    unknown."""
    if client.exists(kind.heartbeat(name)):
        return False
    return bool(client.hdel(kind.stats, name))
