"""Per-user queues come and go: once every user has left and everything is written, Redis holds
no per-user key and the registry is empty; a user who comes back starts clean; a message racing
the removal of its queue is never lost."""

from __future__ import annotations

import threading

import pytest
import socketio

from engine import keys, liveness, streams
from tests.conftest import wait_until
from tests.engine_support import (
    append,
    open_queue,
    payload,
    pending_total,
    row_count,
    stream_keys,
    user_keys_left,
    written_ids,
)

#: These contract tests run on Redis Cluster too (see conftest.pytest_generate_tests).
CLUSTER_CONTRACT = True

SWEEP = 0.2
WEB = "web-test-instance"


def connect(web, user: str) -> socketio.Client:
    client = socketio.Client()
    client.connect(web.url, auth={"token": web.token(user)}, transports=["websocket"])
    return client


def nothing_left(client) -> bool:
    return (not user_keys_left(client) and not streams.registered_users(client)
            and not streams.closing_users(client))


def test_after_everyone_leaves_and_everything_is_written_no_queue_is_left_within_two_sweeps(
        backend, start_web, start_engine):
    web = start_web(backend)
    start_engine(backend, SWEEP_INTERVAL=SWEEP, MAX_BATCH_AGE=0.3)
    users = ["alice", "bob", "carol"]
    clients = {user: connect(web, user) for user in users}
    for user, client in clients.items():
        for n in range(3):
            ack = client.call("data", payload(f"{user}-{n}"))
            assert ack["ok"] is True, ack
    assert set(streams.registered_users(backend.redis)) == set(users)
    for client in clients.values():
        client.disconnect()

    wait_until(lambda: row_count(backend.db) == 9, 10, what="the nine rows")
    # The drain that wrote the last rows, or the sweep after it, removes the queues.
    wait_until(lambda: nothing_left(backend.redis), 2 * SWEEP + 0.3,
               what="every queue key to be gone")

    # A user who comes back starts with a fresh stream and group, and is written as before.
    alice = connect(web, "alice")
    try:
        assert streams.registered_users(backend.redis) == ["alice"]
        [group] = backend.redis.xinfo_groups(keys.stream("alice"))
        assert (group["name"], group["consumers"], group["pending"], group["last-delivered-id"]) \
            == (keys.GROUP, 0, 0, "0-0")
        assert backend.redis.xlen(keys.stream("alice")) == 0
        assert alice.call("data", payload("alice-again"))["ok"] is True
        wait_until(lambda: row_count(backend.db) == 10, 10, what="the returning user's row")
    finally:
        alice.disconnect()
    wait_until(lambda: nothing_left(backend.redis), 5, what="the queue to go again")


# --- the removal racing an append, step by step --------------------------------------------------

class Interleaved:
    """A Redis client that runs `hook` once, right after the named command: a chosen moment
    between two steps of a queue removal, hit every time."""

    def __init__(self, client, after: str, hook) -> None:
        self._client, self._after, self._hook = client, after, hook

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name != self._after or self._hook is None:
            return attr

        def call_then_hook(*args, **kwargs):
            result = attr(*args, **kwargs)
            hook, self._hook = self._hook, None
            hook()
            return result

        return call_then_hook


def live_web(client) -> list[str]:
    liveness.beat(client, liveness.WEB, WEB, 60, {})
    return [WEB]


def closed_queue(client, user: str) -> None:
    """A user who connected, sent nothing (or everything is written) and left."""
    open_queue(client, user, WEB)
    streams.mark_closing(client, streams.left_with_none(streams.close_connections(client, [user],
                                                                                  WEB)))


def test_a_message_racing_the_removal_of_its_queue_is_kept(backend, start_engine):
    client = backend.redis
    web = live_web(client)
    sent: list[tuple[str, str]] = []

    def send(user: str, msg_id: str) -> None:
        append(client, user, [payload(msg_id)])
        sent.append((user, msg_id))

    # Appended before the removal: the queue has a backlog and stays.
    closed_queue(client, "before")
    send("before", "m-before")
    assert streams.remove_queue(client, "before", web) == "backlog"

    # Appended after the registry step, before the script: the queue stays and is registered.
    closed_queue(client, "between")
    racing = Interleaved(client, "srem", lambda: send("between", "m-between"))
    assert streams.remove_queue(racing, "between", web) == "backlog"

    # Appended right after the removal: the append makes the queue again, group included.
    closed_queue(client, "after")
    racing = Interleaved(client, "evalsha", lambda: send("after", "m-after"))
    assert streams.remove_queue(racing, "after", web) == "removed"
    assert client.xinfo_groups(keys.stream("after"))[0]["name"] == keys.GROUP

    # Delivered to an engine, then deleted before it was acknowledged: pending keeps the queue.
    closed_queue(client, "pending")
    [entry] = append(client, "pending", [payload("m-pending")])
    client.xreadgroup(keys.GROUP, "some-engine", {keys.stream("pending"): ">"})
    client.xdel(keys.stream("pending"), entry)
    assert streams.remove_queue(client, "pending", web) == "pending"

    # Reconnected in between: the queue stays.
    closed_queue(client, "back")
    racing = Interleaved(client, "srem", lambda: open_queue(client, "back", WEB))
    assert streams.remove_queue(racing, "back", web) == "connected"

    # A connection counted by a web process that died does not keep a queue.
    open_queue(client, "orphan", "dead-web-instance")
    assert streams.remove_queue(client, "orphan", web) == "removed"

    assert set(streams.registered_users(client)) == {"before", "between", "after", "pending",
                                                 "back"}
    start_engine(backend, MAX_BATCH_AGE=0.2, CLAIM_IDLE_MS=200)
    wait_until(lambda: sorted(written_ids(backend.db)) == sorted(sent), 10,
               what="every racing message written")
    wait_until(lambda: pending_total(client, ["pending"]) == 0, 5,
               what="the deleted entry to be acknowledged")


def test_messages_appended_while_queues_are_removed_in_a_loop_all_land(backend, start_engine):
    client = backend.redis
    web = live_web(client)
    users = [f"racer{n}" for n in range(5)]
    start_engine(backend, BATCH_SIZE_THRESHOLD=1, MAX_BATCH_AGE=0, SWEEP_INTERVAL=0.05)
    done = threading.Event()
    removals = {"removed": 0}
    sent: list[tuple[str, str]] = []

    def remover() -> None:
        while not done.is_set():
            for user in users:
                if streams.remove_queue(client, user, web) == "removed":
                    removals["removed"] += 1

    thread = threading.Thread(target=remover, daemon=True)
    thread.start()
    try:
        for n in range(300):
            for user in users:
                append(client, user, [payload(f"{user}-{n}")])
                sent.append((user, f"{user}-{n}"))
            if n % 50 == 0:
                # Let the engine catch up now and then, so queues do become empty and removable.
                wait_until(lambda n=n: row_count(backend.db) >= len(users) * n, 10,
                           what="the engine to catch up")
    finally:
        done.set()
        thread.join(10)

    wait_until(lambda: row_count(backend.db) == len(sent), 20, what="every message written")
    assert sorted(written_ids(backend.db)) == sorted(sent)
    assert removals["removed"] > 0, "the race never happened: no queue was ever removed"
    wait_until(lambda: pending_total(client, users) == 0, 5, what="nothing pending")
    for user in users:
        streams.remove_queue(client, user, web)
    assert stream_keys(client) == []


def test_disconnects_counted_out_together_mark_only_the_users_left_with_no_connection(redis_db):
    client = redis_db.client
    for user in ("ann", "ann", "ann", "ben", "cy"):
        open_queue(client, user, WEB)
    open_queue(client, "cy", "another-web-instance")
    remaining = streams.close_connections(client, ["ann", "ben", "ann", "cy"], WEB)
    assert remaining == {"ann": 1, "ben": 0, "cy": 1}
    assert not streams.closing_users(client)  # marking is a step of its own, safe to repeat
    for _ in range(2):
        streams.mark_closing(client, streams.left_with_none(remaining))
    assert set(streams.closing_users(client)) == {"ben"}
    assert client.hgetall(keys.connections("ann")) == {WEB: "1"}
    assert client.hgetall(keys.connections("cy")) == {"another-web-instance": "1"}


@pytest.mark.not_on_cluster  # the web process's Redis pool under a burst: nothing per slot
def test_many_clients_leaving_at_once_are_all_counted_out_without_a_warning(backend, start_web):
    web = start_web(backend)
    # More clients than the web process has pooled Redis connections (REDIS_POOL_SIZE).
    users = [f"leaver{number}" for number in range(150)]
    clients = [connect(web, user) for user in users]
    wait_until(lambda: all(backend.redis.hlen(keys.connections(user)) == 1 for user in users),
               10, what="every connection to be counted")
    closers = [threading.Thread(target=client.disconnect) for client in clients]
    for closer in closers:
        closer.start()
    for closer in closers:
        closer.join(10)
    wait_until(lambda: len(streams.closing_users(backend.redis)) == len(users), 15,
               what="every user to be counted out")
    assert not any(backend.redis.exists(keys.connections(user)) for user in users)
    log = web.process.log()
    assert "could not record" not in log and "Traceback" not in log
