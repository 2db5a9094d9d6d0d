"""The overview's live figures: sampled every DASHBOARD_SAMPLE_INTERVAL into a ring buffer in
Redis, and pushed to the socket.io room `dashboard`, which only a signed-in viewer or admin may
join.

One web process takes each sample (whichever first creates that interval's sampler key), so
running several web processes neither multiplies the work nor the samples. A sample gathers
what the processes already publish: the web processes' heartbeats (connections, messages
accepted per second) and the engines' (rows written per second, backlog, pending entries, the
oldest unwritten entry, the last batch), plus the dead letters not yet replayed (counted up to
DEAD_LETTER_COUNT_CAP, never a full-table count). The last 15 minutes of samples stay in
DASHBOARD_SAMPLES, so that a page opened now draws its charts at once. Engines also emit their
own `stats` to the room after every sweep.

A dashboard connection is authenticated by the cookie session (no token), may come only from
the dashboard's own origin, joins the `dashboard` room and nothing else, and cannot send `data`:
it is not a connection of the ingest gateway, which refuses its messages as "not connected".
It is registered with the web process's live tokens under the session's id, so that signing
out, disabling the account or revoking its tokens ends it at once.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import gevent
import orjson
import sqlalchemy as sa
from flask import request
from flask_socketio import ConnectionRefusedError
from redis import Redis

from engine import keys, liveness
from engine.connections import REDIS_FAILURES
from engine.schema import dead_letters
from engine.settings import Settings
from webapp.admin.access import current_operator
from webapp.extensions import services, socketio
from webapp.revocation import Token

log = logging.getLogger(__name__)

#: What keeps a dashboard sample from being taken: Redis or the database gone.
_SAMPLE_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, sa.exc.SQLAlchemyError)

#: Minutes of samples kept for the overview's charts.
HISTORY_MINUTES = 15
#: Dead letters are counted up to this many ("10000+" beyond).
DEAD_LETTER_COUNT_CAP = 10_000


def history_length(settings: Settings) -> int:
    return math.ceil(HISTORY_MINUTES * 60 / settings.DASHBOARD_SAMPLE_INTERVAL) + 1


def recent_samples(redis: Redis, settings: Settings) -> list[dict[str, Any]]:
    """The samples of the last 15 minutes, oldest first."""
    raw = redis.lrange(keys.DASHBOARD_SAMPLES, 0, history_length(settings) - 1)
    horizon = time.time() - HISTORY_MINUTES * 60
    samples = [orjson.loads(item) for item in reversed(raw)]
    return [sample for sample in samples if sample.get("t", 0) >= horizon]


def count_dead_letters(db: sa.engine.Engine) -> int:
    """Dead letters not replayed, counted up to DEAD_LETTER_COUNT_CAP + 1."""
    capped = sa.select(dead_letters.c.id).where(dead_letters.c.replayed_at.is_(None)) \
        .limit(DEAD_LETTER_COUNT_CAP + 1).subquery()
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(capped)).scalar() or 0)


def take_sample(redis: Redis, db: sa.engine.Engine) -> dict[str, Any]:
    """The figures of the whole service now."""
    now = time.time()
    engines = [r for r in liveness.records(redis, liveness.ENGINE) if r.alive]
    webs = [r for r in liveness.records(redis, liveness.WEB) if r.alive]

    def total(records: list[liveness.ProcessRecord], name: str) -> float:
        return round(sum(float(r.info.get(name) or 0) for r in records), 1)

    oldest = [int(r.info["oldest_ms"]) for r in engines if r.info.get("oldest_ms")]
    latest = max(engines, key=lambda r: r.info.get("at", 0), default=None)
    return {
        "t": round(now, 3),
        "accepted_per_s": total(webs, "accepted_per_second"),
        "rows_per_s": total(engines, "rows_per_second"),
        # Every engine measures every stream: the latest reading is the backlog.
        "backlog": int(latest.info.get("backlog", 0)) if latest else None,
        "pending": max((int(r.info.get("pending", 0)) for r in engines), default=None),
        "oldest_age_s": round(max(0.0, now - min(oldest) / 1000), 1) if oldest else None,
        "connections": int(total(webs, "connections")),
        "engines": len(engines),
        "web_processes": len(webs),
        "dead_letters": count_dead_letters(db),
        "last_batch_size": latest.info.get("last_batch_size") if latest else None,
        "last_commit_ms": latest.info.get("last_commit_ms") if latest else None,
    }


class Sampler:
    """The greenlet of one web process that takes its turn at sampling."""

    def __init__(self, settings: Settings, redis: Redis, db: sa.engine.Engine,
                 instance: str) -> None:
        self.settings, self.redis, self.db, self.instance = settings, redis, db, instance
        self.interval = settings.DASHBOARD_SAMPLE_INTERVAL
        self._greenlet: gevent.Greenlet | None = None
        self._failing = False

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        while True:
            slot = math.floor(time.time() / self.interval) + 1
            gevent.sleep(max(0.0, slot * self.interval - time.time()))
            try:
                self.sample_if_mine(slot)
                if self._failing:
                    log.info("dashboard samples are taken again")
                self._failing = False
            except _SAMPLE_FAILURES as exc:
                if not self._failing:
                    log.warning("dashboard sample not taken: %s", exc)
                self._failing = True
            except Exception:
                log.exception("dashboard sample failed")

    def sample_if_mine(self, slot: int) -> dict[str, Any] | None:
        """Take the sample of interval `slot` unless another web process took it."""
        ttl_ms = max(1000, int(self.interval * 2000))
        if not self.redis.set(keys.dashboard_sampler(slot), self.instance, nx=True, px=ttl_ms):
            return None
        sample = take_sample(self.redis, self.db)
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(keys.DASHBOARD_SAMPLES, orjson.dumps(sample))
        pipe.ltrim(keys.DASHBOARD_SAMPLES, 0, history_length(self.settings) - 1)
        pipe.execute()
        socketio.emit("overview", sample, to=keys.DASHBOARD_ROOM, namespace="/")
        return sample


# --- the dashboard's socket.io connections --------------------------------------------------------

def wants_dashboard(token: str | None) -> bool:
    """Whether a connecting client asks for the dashboard: no token, and a session cookie."""
    return token is None and bool(request.cookies.get(_session_cookie_name()))


def _session_cookie_name() -> str:
    from flask import current_app

    return str(current_app.config["SESSION_COOKIE_NAME"])


def connect_dashboard(sid: str) -> None:
    """Admit a dashboard connection into the room `dashboard`; ConnectionRefusedError unless
    it comes from a signed-in viewer or admin on the dashboard's own origin. Runs in the
    request context of the connection's handshake."""
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if origin is not None and origin != own:
        log.info("dashboard connection refused: origin %s is not %s", origin, own)
        raise ConnectionRefusedError("dashboard: foreign origin")
    operator = current_operator()
    if operator is None or not operator.is_operator:
        raise ConnectionRefusedError("dashboard: sign in as a viewer or admin")
    socketio.server.enter_room(sid, keys.DASHBOARD_ROOM, namespace="/")
    services().tokens.add(sid, Token(operator.username, operator.session_id, operator.began,
                                     operator.expires))
    log.info("dashboard of %s connected as %s", operator.username, sid)
