"""Baseline Socket.IO server for benchmarks: bare python-socketio on gevent.

Accepts every connection; the ``data`` handler does nothing (the client's ack
callback receives no arguments). This is the reference the real service's
throughput is compared against, driven by the same load generator:

    .venv/bin/python bench/bare_server.py --port 5100 --ws gevent-websocket --json orjson
    node bench/loadgen/loadgen.js --url http://127.0.0.1:5100 --mode closed ...

--ws picks the WebSocket implementation. engineio's gevent driver uses
gevent-websocket when ``import geventwebsocket`` succeeds and falls back to
simple-websocket otherwise, deciding when the driver module is first imported
(at ``socketio.Server`` construction). For simple-websocket we therefore make
that import fail by putting ``None`` in ``sys.modules`` before the server is
created; for gevent-websocket the WSGI server needs its WebSocketHandler.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import json
import os
import sys

from orjson import dumps as _orjson_dumps
from orjson import loads as _orjson_loads


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5100)
    p.add_argument(
        "--ws",
        choices=["gevent-websocket", "simple-websocket"],
        default="gevent-websocket",
    )
    p.add_argument("--json", choices=["orjson", "std"], default="orjson")
    p.add_argument("--backlog", type=int, default=2048, help="listen backlog")
    return p.parse_args(argv)


class OrjsonModule:
    """json-module shim for python-socketio: dumps must return str.

    Keyword arguments (python-socketio passes ``separators``) are ignored:
    orjson's output is always compact.
    """

    @staticmethod
    def dumps(obj, **kwargs):
        return _orjson_dumps(obj).decode()

    @staticmethod
    def loads(s, **kwargs):
        return _orjson_loads(s)


def build_server(ws, json_name):
    """Return (wsgi_app, handler_class, sio) for the chosen stack."""
    if ws == "simple-websocket":
        sys.modules["geventwebsocket"] = (
            None  # makes `import geventwebsocket` raise ImportError
        )
        handler_class = None
    else:
        from geventwebsocket.handler import WebSocketHandler

        handler_class = WebSocketHandler

    import socketio

    sio = socketio.Server(
        async_mode="gevent",
        json=OrjsonModule if json_name == "orjson" else json,
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    driver = sys.modules["engineio.async_drivers.gevent"]
    expected = ws == "simple-websocket"
    if (getattr(driver, "SimpleWebSocketWSGI", None) is not None) != expected:
        raise RuntimeError(
            f"engineio did not pick {ws}; was it imported before build_server()?"
        )

    @sio.event
    def connect(sid, environ, auth=None):
        return True

    @sio.on("data")
    def data(sid, payload):
        return None

    return socketio.WSGIApp(sio), handler_class, sio


def main(argv=None):
    args = parse_args(argv)
    app, handler_class, _ = build_server(args.ws, args.json)

    from gevent import pywsgi

    kwargs = {"log": None}
    if handler_class is not None:
        kwargs["handler_class"] = handler_class
    listener = (args.host, args.port)
    server = pywsgi.WSGIServer(listener, app, backlog=args.backlog, **kwargs)
    print(
        f"bare_server pid={os.getpid()} listening on {args.host}:{args.port} "
        f"ws={args.ws} json={args.json}",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
