"""`python -m webapp`: one web process, Flask-SocketIO on gevent's WSGI server.

gevent must patch the standard library before anything else is imported; `webapp/__main__.py`
does that, then calls `main`. SIGTERM or SIGINT stops it gracefully: no new connections, every
client disconnected (so that its connection count drops), messages in flight flushed to Redis.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys

import gevent
from gevent.event import Event

from engine.errors import ConfigError
from engine.logs import bind_process, setup_logging
from engine.settings import Settings
from webapp import admission
from webapp.cors import origin_checker
from webapp.realtime.engineio_session import closer_of_refused
from webapp.realtime.handler import Limits, handler_class
from webapp.realtime.internals import check_installed, disconnect_all

log = logging.getLogger("webapp.server")

#: Seconds given to open requests to finish when stopping.
STOP_GRACE = 5.0
#: Allocations between collections of the youngest generation (CPython's default is 700),
#: and young collections between collections of the middle one (default 10); see
#: `tune_garbage_collector`.
GC_YOUNG_THRESHOLD = 20_000
GC_MIDDLE_THRESHOLD = 50


def main() -> int:
    try:
        settings = Settings.load()
        setup_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
        from webapp import admin, create_app
        from webapp.extensions import socketio
        from webapp.requestlog import log_gevent_errors

        app = create_app(settings=settings)
        check_installed(socketio.server)
    except ConfigError as exc:
        print(f"tributary web: {exc}", file=sys.stderr)
        return 2
    log_gevent_errors()
    services = app.extensions["tributary"]
    bind_process(instance=services.gateway.instance)
    server = admission.server((settings.HOST, settings.PORT), app, services.admission,
                              handler_class=handler_class(
                                  Limits.from_settings(settings),
                                  origin_checker(settings.CORS_ORIGINS),
                                  refused=closer_of_refused(socketio.server.eio),
                                  admission=services.admission),
                              log=None, error_log=logging.getLogger("webapp.wsgi"))
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    try:
        server.start()
    except OSError as exc:  # a HOST that does not resolve, a PORT already taken…
        print(f"tributary web: HOST, PORT: cannot listen on {settings.HOST}:{settings.PORT} "
              f"({exc.strerror or exc})", file=sys.stderr)
        return 2
    services.gateway.start()
    services.tokens.start()
    sampler = admin.sampler(app)
    sampler.start()
    tune_garbage_collector()
    log.info("web process %s listening on http://%s:%s (Redis %s, database %s)",
             services.gateway.instance, settings.HOST, server.server_port,
             "embedded" if settings.REDIS_URL.startswith("unix://") else "external",
             services.db.url.get_backend_name())
    stop.wait()
    log.info("stopping: closing %d connections", len(services.gateway.users))
    server.close()
    services.tokens.stop()
    sampler.stop()
    disconnect_all(socketio.server.eio)
    services.gateway.stop()
    server.stop(timeout=STOP_GRACE)
    log.info("web process %s stopped", services.gateway.instance)
    return 0


def tune_garbage_collector() -> None:
    """Keep the garbage collector's pauses short with thousands of connections open.

    CPython collects its youngest generation every 700 net allocations: at thousands of
    messages a second that is hundreds of collections a second, each of which promotes
    whatever is in flight at that moment (a message being validated, an ack being written).
    Promoted objects accumulate in the oldest generation until a full collection walks every
    object of every open connection: 250 to 500 ms with 5,000 connections, every few seconds,
    a pause every client sees in its ack times. With the youngest generation collected every
    GC_YOUNG_THRESHOLD allocations, in-flight objects are rarely caught alive, so they die
    young and full collections come only when the number of long-lived objects (connections)
    really grows. The middle generation is collected every GC_YOUNG_THRESHOLD times
    GC_MIDDLE_THRESHOLD allocations (a million): what a young collection caught in flight dies
    there. A young collection's pause grows with its threshold (each connection leaves about a
    hundred objects that one young collection walks before promoting them), so it is kept
    small and the middle generation's period long. What the process loaded at start-up
    (modules, the app) is frozen: never walked again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, 10)

