"""Redis connections with Tributary's timeouts, and the start-up check of the Redis server.

REDIS_URL names one Redis (`redis://`, `rediss://`, `unix://`) or a Redis Cluster by one or more
of its nodes (`redis+cluster://host:port[,host:port…]/`, `rediss+cluster://` for TLS); every
process (web, engine, CLI) gets its client here, a `Redis` or a `RedisCluster`.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import BlockingConnectionPool, ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from engine.errors import ConfigError, StartupCheckError
from engine.settings import CLUSTER_SCHEMES, Settings, is_cluster_url

log = logging.getLogger(__name__)


#: What a failed Redis call raises: redis-py's errors, and the cluster client's own (no node of a
#: slot reachable during a failover, a whole cluster gone), which are not RedisErrors.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException)


def connect_redis(settings: Settings, *, max_connections: int | None = None,
                  blocking: bool = False, timeout: float | None = None,
                  **options: Any) -> Redis:
    """A client for REDIS_URL: responses decoded, bounded timeouts, no hidden retries.

    It speaks RESP2 on every server (redis-py would negotiate RESP3 with Redis 7), so replies
    have the same shape on Redis 6.2 (the embedded default) and 7.

    Tributary decides itself what to retry: a pipeline silently re-sent after a dropped
    connection could append a message twice. With `blocking`, a caller finding all
    `max_connections` busy waits for one (up to the timeout) instead of failing.

    For a `redis+cluster://` URL it is a RedisCluster (see `connect_cluster`), with those
    limits per node. It is typed as Redis: callers use only commands both offer.
    """
    timeout = settings.REDIS_TIMEOUT if timeout is None else timeout
    if is_cluster_url(settings.REDIS_URL):
        if blocking:
            options["connection_pool_class"] = partial(BlockingConnectionPool, timeout=timeout)
        if max_connections or blocking:
            options["max_connections"] = max_connections or 50
        return connect_cluster(  # type: ignore[return-value]
            settings.REDIS_URL, decode_responses=True, socket_timeout=timeout,
            socket_connect_timeout=timeout, health_check_interval=30, **options)
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


def parse_cluster_url(url: str) -> dict[str, Any]:
    """The RedisCluster arguments of a `redis+cluster://[user:pass@]host:port[,host:port…]/`
    URL: its start-up nodes, credentials and TLS. Raises ConfigError on anything else (a
    database number, which a cluster does not have; a node without a port; query options)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES:
        raise ConfigError(f"REDIS_URL: {scheme}:// does not name a Redis Cluster")
    parts = urlsplit(f"redis://{rest}")
    if parts.query or parts.fragment:
        raise ConfigError("REDIS_URL: a redis+cluster:// URL takes no options (?…, #…)")
    if parts.path not in ("", "/"):
        raise ConfigError(f"REDIS_URL: a Redis Cluster has no database numbers; end the URL "
                          f"with the last node and '/', not {parts.path!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    options: dict[str, Any] = {"ssl": CLUSTER_SCHEMES[scheme.lower()] == "rediss"}
    if userinfo:
        username, _, password = userinfo.partition(":")
        options["username"] = unquote(username) or None
        options["password"] = unquote(password) or None
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"REDIS_URL: cluster node {node!r} is not host:port")
        nodes.append(ClusterNode(host.strip("[]"), int(port)))
    options["startup_nodes"] = nodes
    return options


def connect_cluster(url: str, **options: Any) -> RedisCluster:
    """A RedisCluster client for a `redis+cluster://` URL, speaking RESP2.

    Like the single-Redis client it retries nothing itself (a command that failed on a dead
    master raises, the caller's outage handling waits and tries again); the slot map is
    refreshed on every connection error and MOVED reply, so the client follows a replica
    promoted in place of a dead master. It accepts a partial slot map while a failover is in
    progress, so that only the commands for the failed master's slots fail meanwhile.
    """
    nodes = parse_cluster_url(url)
    try:
        return RedisCluster(**nodes, protocol=2, retry=Retry(NoBackoff(), 0),
                            require_full_coverage=False, **options)
    except RedisClusterException as exc:  # not a RedisError: say it as one
        raise RedisConnectionError(f"cannot reach the Redis Cluster: {exc}") from None


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
