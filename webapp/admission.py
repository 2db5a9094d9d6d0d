"""Per-address admission: how many new connections and HTTP requests one client address may
make, checked before anything of them is parsed.

A flood from one address (new connections by the hundred a second, or requests on a few
keep-alive ones) costs the event loop a handshake or a request each, and every other client's
acks wait behind them. Each address has two token buckets, one for new connections
(CONNECTION_RATE_PER_ADDRESS, CONNECTION_BURST_PER_ADDRESS) and one for requests
(REQUEST_RATE_PER_ADDRESS, REQUEST_BURST_PER_ADDRESS), in this process only (a load balancer
spreading one address over several processes multiplies the allowance).

- When clients connect directly (TRUSTED_PROXY_HOPS=0), a new connection is checked the moment
  it is accepted (`AdmittingServer`): over the limit, it is answered a fixed `503` with
  `Retry-After` and `Connection: close`, written without reading a byte of the request, and
  closed; no greenlet is spawned for it. The answer waits REFUSED_CONNECTION_DELAY (at most
  MAX_HELD refused connections at a time; past that they are answered at once): a client that
  tries again the moment it is refused cannot make the process refuse it thousands of times a
  second. socket.io clients take the 503 as a transport error and retry by themselves, with
  their reconnection backoff.
- Behind proxies the peer is the proxy: the address is the one X-Forwarded-For names
  TRUSTED_PROXY_HOPS from the right (as werkzeug's ProxyFix reads it), known once the headers
  are read, so the first request of each connection is counted as a new connection then
  (webapp/realtime/handler.py), before the application sees it.
- Every request takes a token of the request bucket; over it, `429` with `Retry-After`, and the
  connection is closed, so that going on costs a new connection.
- A connection ended (or a request refused) for breaking the rules costs its address
  OFFENCE_COST more new connections (webapp/offenders.py), down to owing a whole burst: an
  address whose connections are all malformed, slow or never join gets a fraction of the rate.

The table holds at most MAX_ADDRESSES addresses, least recently seen dropped first (a dropped
address comes back with full buckets, which an address idle that long would have anyway); an
IPv6 client counts by its /64, which one subscriber usually holds whole.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer

from engine.settings import Settings
from webapp import offenders
from webapp.jsonmod import dumpb

log = logging.getLogger(__name__)

#: Addresses whose buckets are kept; past it, the least recently seen one is dropped.
MAX_ADDRESSES = 50_000

#: Held refusals answered per turn of the event loop.
ANSWER_BATCH = 8

#: Refused connections waiting for their answer at most; past it, they are answered at once.
MAX_HELD = 2000

CONNECTIONS = "connections"
REQUESTS = "requests"


@dataclass(frozen=True)
class Bucket:
    """`rate` tokens a second up to `burst`; a rate of 0 disables the bucket."""

    rate: float
    burst: int


def address_key(address: str) -> str:
    """What an address is counted as: itself (IPv4, or an IPv4-mapped IPv6 address as its
    IPv4 form), or its /64 for IPv6."""
    if ":" not in address:
        return address
    try:
        parsed = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))


def forwarded_address(header: str | None, hops: int) -> str | None:
    """The client address X-Forwarded-For names `hops` proxies from the right (what werkzeug's
    ProxyFix takes), or None when the header holds fewer."""
    if not header:
        return None
    values = [value.strip() for value in header.split(",")]
    return values[-hops] or None if len(values) >= hops else None


class Admission:
    """The per-address buckets of one web process (see the module docstring)."""

    def __init__(self, connections: Bucket, requests: Bucket, trusted_proxy_hops: int = 0,
                 max_addresses: int = MAX_ADDRESSES, refusal_delay: float = 0.0) -> None:
        self.buckets = {CONNECTIONS: connections, REQUESTS: requests}
        self.trusted_proxy_hops = trusted_proxy_hops
        self.max_addresses = max_addresses
        #: Seconds a connection refused at accept waits for its answer.
        self.refusal_delay = refusal_delay
        #: address key -> [connection tokens, request tokens, time of the last update]
        self._table: OrderedDict[str, list[float]] = OrderedDict()
        #: What was refused, by bucket (for /metrics).
        self.refused = dict.fromkeys(self.buckets, 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(Bucket(settings.CONNECTION_RATE_PER_ADDRESS,
                          settings.CONNECTION_BURST_PER_ADDRESS),
                   Bucket(settings.REQUEST_RATE_PER_ADDRESS, settings.REQUEST_BURST_PER_ADDRESS),
                   settings.TRUSTED_PROXY_HOPS,
                   refusal_delay=settings.REFUSED_CONNECTION_DELAY)

    def __len__(self) -> int:
        return len(self._table)

    @property
    def at_accept(self) -> bool:
        """Whether new connections are checked when accepted (the peer is the client)."""
        return self.trusted_proxy_hops == 0 and self.buckets[CONNECTIONS].rate > 0

    def take(self, address: str, what: str) -> float:
        """Take a token of `address`'s `what` bucket (CONNECTIONS or REQUESTS): 0 when there
        was one, else the seconds until there is."""
        bucket = self.buckets[what]
        if bucket.rate <= 0:
            return 0.0
        entry = self._entry(address_key(address))
        index = 0 if what == CONNECTIONS else 1
        if entry[index] >= 1.0:
            entry[index] -= 1.0
            return 0.0
        self.refused[what] += 1
        return (1.0 - entry[index]) / bucket.rate

    def charge(self, address: str, connections: int) -> None:
        """Take `connections` more tokens of `address`'s connection bucket (webapp/offenders.py:
        a connection of it ended for an offence); the bucket may owe up to its size."""
        bucket = self.buckets[CONNECTIONS]
        if bucket.rate <= 0:
            return
        entry = self._entry(address_key(address))
        entry[0] = max(-float(bucket.burst), entry[0] - connections)

    def _entry(self, key: str) -> list[float]:
        """`key`'s buckets, refilled to now."""
        table = self._table
        now = time.monotonic()
        entry = table.get(key)
        if entry is None:
            burst = self.buckets
            entry = table[key] = [float(burst[CONNECTIONS].burst),
                                  float(burst[REQUESTS].burst), now]
            if len(table) > self.max_addresses:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
            elapsed = now - entry[2]
            for index, refill in enumerate(self.buckets.values()):
                entry[index] = min(float(refill.burst), entry[index] + elapsed * refill.rate)
            entry[2] = now
        return entry


def retry_after(wait: float) -> int:
    """`Retry-After` for a wait of `wait` seconds: whole seconds, at least 1."""
    return max(1, math.ceil(wait))


def refusal(status: str, error: str, wait: float) -> bytes:
    """A whole HTTP response refusing a client for now: `status`, `Retry-After`, a JSON error,
    `Connection: close`."""
    body = dumpb({"error": error})
    return (f"HTTP/1.1 {status}\r\nRetry-After: {retry_after(wait)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


@functools.lru_cache(maxsize=64)
def _too_many_connections(seconds: int) -> bytes:
    """The 503 refusing a new connection, made once per `Retry-After`."""
    return refusal("503 Service Unavailable", "too many new connections from this address",
                   seconds)


class AdmittingServer(WSGIServer):  # type: ignore[misc]
    """gevent's WSGI server, checking each new connection's address when it is accepted."""

    admission: Admission

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Refused connections waiting for their answer: (when due, socket, Retry-After).
        self._held: deque[tuple[float, Any, int]] = deque()
        self._answering: gevent.Greenlet | None = None

    def do_handle(self, sock: Any, address: Any) -> None:
        # gevent (baseserver.py): called by the accept loop with each accepted connection;
        # spawns the handler's greenlet.
        admission = self.admission
        if admission.at_accept and isinstance(address, tuple):
            wait = admission.take(address[0], CONNECTIONS)
            if wait:
                offenders.warn(log, None, "refused a new connection from %s: over its rate of "
                               "new connections", address[0])
                self._refuse(sock, retry_after(wait))
                return
        super().do_handle(sock, address)

    def _refuse(self, sock: Any, seconds: int) -> None:
        """Answer a refused connection after the admission's delay (at once when it is 0 or
        MAX_HELD connections are waiting already)."""
        delay = self.admission.refusal_delay
        if delay <= 0 or len(self._held) >= MAX_HELD:
            _shed(sock, seconds)
            return
        self._held.append((time.monotonic() + delay, sock, seconds))
        if self._answering is None:
            self._answering = gevent.spawn(self._answer_held)

    def _answer_held(self) -> None:
        """Answer the held connections as they fall due, oldest first (they are held for the
        same delay, so in order), ANSWER_BATCH a turn of the event loop, until none is left."""
        held = self._held
        try:
            while held:
                due = held[0][0] - time.monotonic()
                gevent.sleep(max(0.0, due))
                now = time.monotonic()
                for _ in range(ANSWER_BATCH):
                    if not held or held[0][0] > now:
                        break
                    _, sock, seconds = held.popleft()
                    _shed(sock, seconds)
        finally:
            self._answering = None

    def close(self) -> None:
        while self._held:
            _shed(*self._held.popleft()[1:])
        super().close()


def _shed(sock: Any, seconds: int) -> None:
    """Answer 503 with `Retry-After: seconds` and close, without waiting: a refused connection
    has been sent nothing before, so the response fits in its send buffer."""
    try:
        sock.setblocking(False)
        # What of the request already arrived is read (not parsed): closing a socket with
        # unread data resets the connection, and the client might not see the answer.
        with contextlib.suppress(BlockingIOError):
            sock.recv(65536)
        sock.send(_too_many_connections(seconds))
    except OSError:
        pass
    finally:
        sock.close()


def server(listen: tuple[str, int], app: Any, admission: Admission, **kwargs: Any) -> WSGIServer:
    """A WSGI server on `listen` whose new connections `admission` checks."""
    instance = AdmittingServer(listen, app, **kwargs)
    instance.admission = admission
    return instance
