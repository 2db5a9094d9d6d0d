"""Telling clients and dashboards what was committed, through Flask-SocketIO's message queue.

The engine has no Flask and no socket.io server: it is a write-only member of the Redis message
queue the web processes listen on (python-socketio's RedisManager with `write_only=True`). Its
emits are collected and published in one pipeline per batch, instead of one round trip each.
Receipts are best effort: the rows are committed whether or not a receipt gets through.
Overriding `_publish` is the engine's one touch on python-socketio's internals (it cannot use
the web process's webapp/realtime/internals.py); tests/test_engine_library_internals.py checks
it publishes what python-socketio would.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio
from redis import Redis

from engine import keys
from engine.connections import REDIS_FAILURES

log = logging.getLogger(__name__)


class ReceiptEmitter(socketio.RedisManager):  # type: ignore[misc]
    """A write-only socket.io message queue member that publishes in batches."""

    def __init__(self, client: Redis, channel: str) -> None:
        super().__init__(channel=channel, write_only=True, logger=log)
        self.client = client
        self._outbox: list[str] = []

    def _publish(self, data: Any) -> None:
        self._outbox.append(self.json.dumps(data))

    def committed(self, user_id: str, msg_ids: list[str], last_id: str) -> None:
        """Queue the `committed` receipt for one user's newly written messages."""
        self.emit("committed", {"msg_ids": msg_ids, "count": len(msg_ids), "last_id": last_id},
                  room=keys.user_room(user_id), namespace="/")

    def dead_lettered(self, user_id: str, msg_id: str | None, error: str) -> None:
        """Queue the notice that one of the user's messages will not be written."""
        self.emit("dead_letter", {"msg_id": msg_id, "error": error},
                  room=keys.user_room(user_id), namespace="/")

    def key_stats(self, user_id: str, key: str, figures: dict[str, Any]) -> None:
        """Queue the new aggregates of one of the user's keys for its subscribers."""
        self.emit("stats", {"user": user_id, "key": key, **figures},
                  room=keys.key_stats_room(user_id, key), namespace="/")

    def stats(self, stats: dict[str, Any]) -> None:
        """Queue the engine's latest figures for the dashboard room."""
        self.emit("stats", stats, room=keys.DASHBOARD_ROOM, namespace="/")

    def flush(self) -> None:
        """Publish everything queued, in one round trip."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        pipe = self.client.pipeline(transaction=False)
        for message in outbox:
            # By command name: a Redis Cluster pipeline refuses `publish()` but sends PUBLISH,
            # which the cluster passes on to every node.
            pipe.execute_command("PUBLISH", self.channel, message)
        try:
            pipe.execute()
        except REDIS_FAILURES as exc:
            log.warning("%d receipt(s) not published: %s", len(outbox), exc)
