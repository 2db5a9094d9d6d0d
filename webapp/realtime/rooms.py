"""The socket.io client manager of a web process: python-socketio's RedisManager (rooms shared
with the other web processes and the engine through Redis pub/sub), with rooms indexed by
client.

python-socketio finds the rooms of a client by scanning every room of the namespace: each
client has a room of its own and here a `user:<id>` room too, so one disconnect costs a scan
of twice as many rooms as there are clients (milliseconds with thousands connected), and
losing every client at once (a network blip, a restart) costs time quadratic in their number.
This manager keeps the rooms of each client as they are entered and left, so a disconnect
leaves just those.

On Redis Cluster (a `redis+cluster://` REDIS_URL) it connects through redis-py's RedisCluster
(internals.ClusterRedisManager), so all web processes and engines share emits as on one Redis.
"""

from __future__ import annotations

from typing import Any

from webapp.realtime.internals import ClusterRedisManager


class RedisManager(ClusterRedisManager):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (namespace, sid) -> the rooms that client is in.
        self.rooms_of: dict[tuple[str, str], set[Any]] = {}

    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self.rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        rooms = self.rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.rooms_of[(namespace, sid)]

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        return [room for room in self.rooms_of.get((namespace, sid), ()) if room is not None]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        # The same steps as python-socketio's, without the scan of every room.
        for room in list(self.rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            if sid in pending.get(namespace, ()):
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]
