"""The web process's socket.io client manager keeps python-socketio's room bookkeeping, with the
rooms of each client indexed instead of found by scanning every room."""

from __future__ import annotations

from typing import Any

import socketio

from webapp.realtime.rooms import RedisManager


def _exercise(manager: Any) -> list[Any]:
    """Connect three clients, put them in rooms, close one room and disconnect two clients;
    returns what the manager's rooms looked like after each step."""
    snapshots = []

    def snapshot() -> None:
        rooms = manager.rooms.get("/", {})
        snapshots.append({room: dict(members) for room, members in rooms.items()})
        snapshots.append({sid: sorted(map(str, manager.get_rooms(sid, "/")))
                          for sid in ("a", "b", "c")})

    for sid in ("a", "b", "c"):
        manager.basic_enter_room(sid, "/", None, eio_sid=f"e{sid}")
        manager.basic_enter_room(sid, "/", sid, eio_sid=f"e{sid}")
    manager.basic_enter_room("a", "/", "user:1")
    manager.basic_enter_room("b", "/", "user:1")
    manager.basic_enter_room("a", "/", "dashboard")
    manager.basic_enter_room("c", "/", "user:2")
    snapshot()
    manager.callbacks["a"] = {1: print}
    manager.basic_disconnect("a", "/")
    snapshot()
    manager.basic_close_room("user:2", "/")
    snapshot()
    manager.basic_disconnect("b", "/")
    manager.basic_disconnect("c", "/")
    snapshot()
    snapshots.append(sorted(manager.callbacks))
    return snapshots


def test_rooms_after_connects_disconnects_and_a_closed_room_are_python_socketios(redis_db):
    ours = RedisManager(redis_db.url, channel="tributary-test-manager")
    stock = socketio.RedisManager(redis_db.url, channel="tributary-test-manager")
    assert _exercise(ours) == _exercise(stock)
    assert ours.rooms_of == {}  # nothing left behind for clients that are gone


def test_a_disconnect_leaves_exactly_the_rooms_of_that_client(redis_db):
    manager = RedisManager(redis_db.url, channel="tributary-test-manager")
    for sid in ("a", "b"):
        manager.basic_enter_room(sid, "/", None, eio_sid=f"e{sid}")
        manager.basic_enter_room(sid, "/", sid, eio_sid=f"e{sid}")
        manager.basic_enter_room(sid, "/", "user:1")
    manager.basic_disconnect("a", "/")
    assert set(manager.rooms["/"]) == {None, "b", "user:1"}
    assert dict(manager.rooms["/"]["user:1"]) == {"b": "eb"}
    assert sorted(map(str, manager.get_rooms("b", "/"))) == ["b", "user:1"]
    assert manager.get_rooms("a", "/") == []
