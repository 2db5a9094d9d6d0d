"""The engine's two touch-points on library internals, each against the stock library: redis-py's
pipeline command stack (engine/scripts.py replays it after NOSCRIPT) and python-socketio's
`RedisManager._publish` (engine/receipts.py batches what it would publish)."""

from __future__ import annotations

import hashlib
import json
import uuid

import socketio

from engine import keys, scripts
from engine.receipts import ReceiptEmitter
from tests.conftest import wait_until


def test_a_pipeline_put_back_from_its_command_stack_runs_again_after_noscript(
        redis_db, monkeypatch):
    # A script no Redis has seen: its first EVALSHA is answered NOSCRIPT, whatever ran before.
    marker = uuid.uuid4().hex
    fresh = scripts.Script.__new__(scripts.Script)
    fresh.name, fresh.source = "fresh", f"return {{KEYS[1], '{marker}'}}"
    fresh.sha = hashlib.sha1(fresh.source.encode()).hexdigest()
    monkeypatch.setattr(scripts, "ALL", (*scripts.ALL, fresh))
    pipe = redis_db.client.pipeline(transaction=False)
    fresh.queue(pipe, ["rt:a"], [])
    fresh.queue(pipe, ["rt:b"], [])
    assert len(pipe.command_stack) == 2
    assert scripts.execute_scripts(redis_db.client, pipe) == [["rt:a", marker],
                                                               ["rt:b", marker]]
    assert pipe.command_stack == []  # nothing left to run twice


def test_receipts_publish_what_python_socketios_own_manager_publishes(redis_db):
    channel = f"rt-{uuid.uuid4().hex}"
    listener = redis_db.client.pubsub()
    listener.subscribe(channel)
    wait_until(lambda: listener.get_message(timeout=0.1) is not None, 5,
               what="the subscription")
    ours = ReceiptEmitter(redis_db.client, channel)
    stock = socketio.RedisManager(redis_db.url, channel=channel, write_only=True)
    ours.committed("alice", ["m1"], "1-0")
    ours.flush()
    stock.emit("committed", {"msg_ids": ["m1"], "count": 1, "last_id": "1-0"},
               room=keys.user_room("alice"), namespace="/")
    published = []

    def both_arrived() -> bool:
        message = listener.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            published.append(json.loads(message["data"]))
        return len(published) == 2

    wait_until(both_arrived, 5, what="both publications")
    listener.close()
    for data in published:
        data.pop("host_id")
    assert published[0] == published[1]
