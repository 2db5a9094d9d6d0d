"""Helpers for the gateway tests: socket.io clients that record what the server sends them,
and readers of what landed in the users' streams."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import orjson
import pytest
import redis
import socketio

from engine import keys


@dataclass
class Client:
    """A python-socketio client and everything the server sent it outside of acks."""

    sio: socketio.Client
    events: dict[str, list[Any]] = field(default_factory=dict)
    disconnected: list[Any] = field(default_factory=list)

    def call(self, payload: Any, timeout: float = 10) -> Any:
        """Send `data` with an ack callback and return the ack."""
        return self.sio.call("data", payload, timeout=timeout)

    def send(self, payload: Any) -> None:
        """Send `data` without an ack callback."""
        self.sio.emit("data", payload)

    def received(self, event: str) -> list[Any]:
        return self.events.setdefault(event, [])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.sio.disconnect()


def recording_client(origin: str | None = None) -> Client:
    """A client that records events; with `origin`, it sends that Origin header as a browser
    would (and not the one websocket-client makes up from the URL)."""
    options: dict[str, Any] = {}
    if origin is not None:
        options["websocket_extra_options"] = {"header": {"Origin": origin},
                                              "suppress_origin": True}
    sio = socketio.Client(reconnection=False, **options)
    client = Client(sio)
    for event in ("error", "committed", "notice", "connect_error", "session_ended"):
        sio.on(event, client.received(event).append)
    sio.on("disconnect", lambda *reason: client.disconnected.append(reason))
    return client


def connect(url: str, token: str | None = None, *, transports: tuple[str, ...] = ("websocket",),
            origin: str | None = None, headers: dict[str, str] | None = None,
            **options: Any) -> Client:
    """A connected client; the token goes in `auth` unless other options carry it."""
    client = recording_client(origin)
    auth = {"token": token} if token is not None else None
    headers = {**(headers or {}), **({"Origin": origin} if origin else {})}
    client.sio.connect(url, auth=auth, transports=list(transports), wait_timeout=10,
                       headers=headers, **options)
    return client


def refused(url: str, token: str | None = None, **options: Any) -> str:
    """Try to connect and return the message of the connect_error the server answered with."""
    client = recording_client()
    auth = {"token": token} if token is not None else None
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            client.sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=10,
                               **options)
    finally:
        client.close()
    errors = client.received("connect_error")
    assert errors, "the server refused without a connect_error"
    error = errors[0]
    return error["message"] if isinstance(error, dict) else str(error)


@contextlib.contextmanager
def connected(url: str, token: str | None = None, **options: Any) -> Iterator[Client]:
    client = connect(url, token, **options)
    try:
        yield client
    finally:
        client.close()


def entries(client: redis.Redis, user_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every entry of the user's stream: (entry id, the message it carries)."""
    return [(entry_id, orjson.loads(fields["d"]))
            for entry_id, fields in client.xrange(keys.stream(user_id))]


def msg_ids(client: redis.Redis, user_id: str) -> list[str]:
    return [message["msg_id"] for _, message in entries(client, user_id)]


def join_all(greenlets: list[gevent.Greenlet], timeout: float = 30) -> None:
    """Wait for every greenlet to finish (raising what one raised); fail after `timeout`."""
    # The event loop of the test process may not have run since an earlier test: its cached
    # clock would be minutes old, and a timeout measured from it would expire at once.
    gevent.get_hub().loop.update_now()
    done = gevent.joinall(greenlets, timeout=timeout, raise_error=True)
    assert len(done) == len(greenlets), f"{len(greenlets) - len(done)} still running"
