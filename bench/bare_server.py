"""Baseline Socket.IO server for benchmarks: bare python-socketio on gevent.

Accepts every connection; the ``data`` handler does nothing (the client's ack
callback receives no arguments). This is the reference the real service's
throughput is compared against, driven by the same load generator:

    .venv/bin/python -m bench.bare_server --port 5100
    node bench/loadgen/loadgen.js --url http://127.0.0.1:5100 --mode closed ...

By default it runs on the same stack as Tributary's web process: the same
websocket transport and engine.io sessions (webapp/realtime/transport.py,
webapp/realtime/engineio_session.py), the same garbage-collector tuning, orjson, and
events handled in the
connection's reader greenlet (``async_handlers=False``), so that a comparison
measures what Tributary's own work per message costs. ``--ws gevent-websocket
--async-handlers`` is python-socketio as shipped.

--ws picks the WebSocket implementation. engineio's gevent driver uses
gevent-websocket when ``import geventwebsocket`` succeeds and falls back to
simple-websocket otherwise, deciding when the driver module is first imported
(at ``socketio.Server`` construction). For simple-websocket we therefore make
that import fail by putting ``None`` in ``sys.modules`` before the server is
created; for gevent-websocket the WSGI server needs its WebSocketHandler.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5100)
    p.add_argument(
        "--ws",
        choices=["tributary", "gevent-websocket", "simple-websocket"],
        default="tributary",
    )
    p.add_argument("--async-handlers", action="store_true",
                   help="one greenlet per event (python-socketio's default)")
    p.add_argument("--json", choices=["orjson", "std"], default="orjson")
    p.add_argument("--backlog", type=int, default=2048, help="listen backlog")
    return p.parse_args(argv)


def build_server(ws, json_name, async_handlers=False):
    """Return (wsgi_app, handler_class, sio) for the chosen stack."""
    if ws == "tributary":
        from engine.settings import Settings
        from webapp.realtime.handler import Limits
        from webapp.realtime.handler import handler_class as tributary_handler

        handler_class = tributary_handler(
            Limits.from_settings(Settings.load(environ={}, env_file=None)))
    elif ws == "simple-websocket":
        sys.modules["geventwebsocket"] = (
            None  # makes `import geventwebsocket` raise ImportError
        )
        handler_class = None
    else:
        from geventwebsocket.handler import WebSocketHandler

        handler_class = WebSocketHandler

    import socketio

    from webapp import jsonmod

    sio = socketio.Server(
        async_mode="gevent",
        json=jsonmod if json_name == "orjson" else json,
        cors_allowed_origins="*",
        async_handlers=async_handlers,
        logger=False,
        engineio_logger=False,
    )
    driver = sys.modules["engineio.async_drivers.gevent"]
    expected = ws == "simple-websocket"
    if (getattr(driver, "SimpleWebSocketWSGI", None) is not None) != expected:
        raise RuntimeError(
            f"engineio did not pick {ws}; was it imported before build_server()?"
        )

    if ws == "tributary":
        from webapp.realtime import engineio_session, internals

        internals.install_sessions(
            sio.eio, *engineio_session.session_class(sio.eio, 1_000_000))

    @sio.event
    def connect(sid, environ, auth=None):
        return True

    @sio.on("data")
    def data(sid, payload):
        return None

    return socketio.WSGIApp(sio), handler_class, sio


def main(argv=None):
    args = parse_args(argv)
    app, handler_class, _ = build_server(args.ws, args.json, args.async_handlers)

    from gevent import pywsgi

    kwargs = {"log": None}
    if handler_class is not None:
        kwargs["handler_class"] = handler_class
    if args.ws == "tributary":
        from webapp.server import tune_garbage_collector

        tune_garbage_collector()
    listener = (args.host, args.port)
    server = pywsgi.WSGIServer(listener, app, backlog=args.backlog, **kwargs)
    print(
        f"bare_server pid={os.getpid()} listening on {args.host}:{args.port} "
        f"ws={args.ws} json={args.json} async_handlers={args.async_handlers}",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
