"""Engines and web processes as the dashboard sees them: alive (a current heartbeat) or not.

Each process refreshes a heartbeat key with a TTL and also keeps its last beat, without a TTL,
in a hash (ENGINE_STATS, WEB_STATS). A process whose heartbeat key is gone but whose last beat
is still in the hash died, or stopped: the dashboard shows it so, with how long ago it was last
heard from, until an operator forgets it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis import Redis

from engine import keys, streams


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    alive: bool
    info: dict[str, Any]

    @property
    def age(self) -> float | None:
        """Seconds since the last heartbeat."""
        at = self.info.get("at")
        return max(0.0, time.time() - float(at)) if isinstance(at, (int, float)) else None


def _records(redis: Redis, stats_key: str, heartbeat: Any) -> list[ProcessRecord]:
    beats = redis.hgetall(stats_key)
    names = sorted(str(name) for name in beats)
    if not names:
        return []
    alive = streams.get_many(redis, [heartbeat(name) for name in names])
    records = []
    for name, current in zip(names, alive):
        try:
            info = orjson.loads(current if current is not None else beats[name])
        except orjson.JSONDecodeError:
            info = {}
        records.append(ProcessRecord(name, current is not None, info))
    return sorted(records, key=lambda r: (not r.alive, r.name))


def engines(redis: Redis) -> list[ProcessRecord]:
    """Every engine that beat since it was last forgotten, the live ones first."""
    return _records(redis, keys.ENGINE_STATS, keys.engine_heartbeat)


def web_processes(redis: Redis) -> list[ProcessRecord]:
    """Every web process that beat since it was last forgotten, the live ones first."""
    return _records(redis, keys.WEB_STATS, keys.web_heartbeat)


def forget(redis: Redis, kind: str, name: str) -> bool:
    """Forget a process that is no longer alive; False when it is alive or unknown."""
    stats_key, heartbeat = ((keys.ENGINE_STATS, keys.engine_heartbeat) if kind == "engine"
                            else (keys.WEB_STATS, keys.web_heartbeat))
    if redis.exists(heartbeat(name)):
        return False
    return bool(redis.hdel(stats_key, name))
