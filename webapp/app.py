"""The app factory: settings, extensions, blueprints and the ingest gateway, bound together."""

from __future__ import annotations

from typing import Any

from flask import Flask

from engine.connections import connect_redis
from engine.db import create_db
from engine.settings import Settings
from webapp import cors, jsonmod
from webapp.extensions import Services, socketio
from webapp.realtime import internals
from webapp.realtime.rooms import RedisManager

#: Redis connections a web process may open (connects, disconnects, token checks, and the
#: gateway's flushes); past that, callers wait (up to REDIS_TIMEOUT) instead of failing. A
#: connect storm that saturates the CPU keeps each connection busy for longer than its Redis
#: round trip: with too small a pool, connects that were merely slow would be refused.
REDIS_POOL_SIZE = 128
#: Database connections kept open for the user look-ups of connecting clients. A connection
#: storm waits for one of these rather than opening and closing extra ones: each new
#: PyMySQL connection builds a TLS context (tens of milliseconds of CPU).
DB_POOL_SIZE, DB_POOL_OVERFLOW = 20, 0


def create_app(config: dict[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the app from `settings` (default: the environment), with `config` overriding them.

    Raises ConfigError when a setting is unusable, including a missing or weak JWT_SECRET_KEY
    outside development mode.
    """
    if settings is None:
        settings = Settings.load(**(config or {}))
    elif config:
        settings = settings.replace(**config)
    internals.check_versions(settings.ALLOW_UNVERIFIED_LIBRARIES)

    import webapp.status  # noqa: F401 (registers the `status` event)
    from webapp import (
        admin,
        api,
        auth,
        cli,
        health,
        ingest,
        metrics,
        offenders,
        openapi,
        pages,
        passwords,
        read_api,
        requestlog,
    )
    from webapp.admission import Admission
    from webapp.errors import register_error_handlers
    from webapp.gateway import Gateway
    from webapp.realtime import engineio_session as session
    from webapp.realtime import events as sockets
    from webapp.realtime import packet_guard as packets
    from webapp.revocation import LiveTokens
    from webapp.throttle import LoginThrottle

    app = Flask(__name__)
    if settings.TRUSTED_PROXY_HOPS:
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = settings.TRUSTED_PROXY_HOPS
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops,  # type: ignore
                                x_host=hops)
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_FRAME_BYTES
    app.json = jsonmod.FlaskJSON(app)
    auth.configure_jwt(app, settings)

    redis = connect_redis(settings, max_connections=REDIS_POOL_SIZE, blocking=True)
    gateway = Gateway(settings, redis)
    db = create_db(settings.DATABASE_URL, pool_size=DB_POOL_SIZE, max_overflow=DB_POOL_OVERFLOW)
    passwords.configure(settings.PASSWORD_HASH_THREADS)
    tokens = LiveTokens(redis, sockets.end_session, settings.REVOCATION_CHECK_INTERVAL)
    admission = Admission.from_settings(settings)
    offenders.on_offence(admission.charge)
    app.extensions["tributary"] = Services(settings, db, redis, gateway,
                                           LoginThrottle(redis, settings), tokens, admission)

    socketio.init_app(
        app, async_mode="gevent", cors_allowed_origins=cors.origin_checker(settings.CORS_ORIGINS),
        # A manager instance rather than `message_queue=URL`: Flask-SocketIO only recognizes
        # redis:// URLs and would hand unix:// (the embedded Redis) to Kombu.
        client_manager=RedisManager(settings.REDIS_URL, channel=settings.SOCKETIO_CHANNEL),
        max_http_buffer_size=settings.MAX_FRAME_BYTES, json=jsonmod,
        # Events run in the connection's own reader greenlet instead of a new greenlet each:
        # creating one per message was the largest single cost of the hot path. A client's
        # events are handled one after the other, in the order sent.
        async_handlers=False,
        logger=False, engineio_logger=False)
    sockets.install(app)  # connect and disconnect, without a Flask request context each
    identify = packets.identifier(gateway)
    session_class, on_session = session.session_class(
        socketio.server.eio, settings.MAX_FRAME_BYTES, connect_timeout=settings.CONNECT_TIMEOUT,
        identify=identify, joining=internals.connecting(socketio.server),
        over_rate=lambda user_id, body_bytes: ingest.refuse_unread(
            user_id, gateway.socket_limits, body_bytes, settings.MAX_MESSAGE_BYTES))
    internals.install(socketio.server, internals.Layer(
        session_class=session_class, on_session=on_session,
        event_runner=sockets.data_handler(gateway),
        guard=packets.Guard(socketio.server, identify),
        refuse_attachments=packets.refuse_attachments))

    app.wsgi_app = cors.refuse_foreign_origins(  # type: ignore[method-assign]
        app.wsgi_app, cors.origin_checker(settings.CORS_ORIGINS))
    cors.init_app(app, settings.CORS_ORIGINS)
    register_error_handlers(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(read_api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(health.bp)
    openapi.init_app(app)
    admin.init_app(app, settings)
    if settings.METRICS_ENABLED:
        metrics.init_app(app, gateway, admission)
    requestlog.init_app(app)  # last: the outermost WSGI layer
    cli.init_app(app)
    return app
