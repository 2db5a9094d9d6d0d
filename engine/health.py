"""`python -m engine health`: exit 0 when an engine is alive and Redis is reachable, 1 if not.

For docker-compose and PaaS health checks. By default it looks for an engine on this host (the
container's own); `--any-host` accepts any live engine of the deployment.
"""

from __future__ import annotations

import socket

from engine import liveness
from engine.connections import REDIS_FAILURES, connect_redis
from engine.settings import Settings


def check(settings: Settings, any_host: bool = False) -> tuple[bool, str]:
    client = connect_redis(settings, timeout=2.0)
    try:
        engines = liveness.live(client, liveness.ENGINE)
    except REDIS_FAILURES as exc:
        return False, f"Redis unreachable: {exc}"
    finally:
        client.close()
    host = socket.gethostname()
    alive = sorted(name for name in engines if any_host or name.startswith(f"{host}-"))
    if not alive:
        where = "anywhere" if any_host else f"on {host}"
        return False, f"no live engine {where} ({len(engines)} elsewhere)"
    return True, f"{len(alive)} live engine(s): {', '.join(alive)}"
