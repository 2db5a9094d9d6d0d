"""Redis connections with Tributary's timeouts, and the start-up check of the Redis server."""

from __future__ import annotations

import logging
from typing import Any

from redis import BlockingConnectionPool, ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.errors import ConfigError, StartupCheckError
from engine.settings import Settings

log = logging.getLogger(__name__)


def connect_redis(settings: Settings, *, max_connections: int | None = None,
                  blocking: bool = False, timeout: float | None = None,
                  **options: Any) -> Redis:
    """A client for REDIS_URL: responses decoded, bounded timeouts, no hidden retries.

    It speaks RESP2 on every server (redis-py would negotiate RESP3 with Redis 7), so replies
    have the same shape on Redis 6.2 (the embedded default) and 7.

    Tributary decides itself what to retry: a pipeline silently re-sent after a dropped
    connection could append a message twice. With `blocking`, a caller finding all
    `max_connections` busy waits for one (up to the timeout) instead of failing.
    """
    timeout = settings.REDIS_TIMEOUT if timeout is None else timeout
    pool_class: type[ConnectionPool] = BlockingConnectionPool if blocking else ConnectionPool
    if blocking:
        options["timeout"] = timeout
    try:
        pool = pool_class.from_url(
            settings.REDIS_URL, decode_responses=True, protocol=2, socket_timeout=timeout,
            socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            max_connections=max_connections or (50 if blocking else None),
            health_check_interval=30, **options)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None
    return Redis(connection_pool=pool)


def check_redis(client: Redis) -> dict[str, Any]:
    """Refuse to run on a Redis that may evict keys: eviction drops whole streams and groups."""
    policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    if policy != "noeviction":
        raise StartupCheckError(
            f"Redis maxmemory-policy is {policy!r}; Tributary needs 'noeviction' (an evicted "
            "stream loses acknowledged messages). Set `maxmemory-policy noeviction` in "
            "redis.conf or run: redis-cli CONFIG SET maxmemory-policy noeviction")
    info = client.info("server")
    return {"version": info.get("redis_version", "?"), "policy": policy}
