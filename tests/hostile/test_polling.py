"""Long-polling clients get what websocket clients get: a client that never fetches what the
server sends it is disconnected once 1 MiB is waiting for it (as a websocket client that stops
reading is), and a client that sends many packets at once has them all handled."""

from __future__ import annotations

import orjson

from engine import keys
from tests.conftest import wait_until
from tests.gateway_support import msg_ids
from tests.hostile.support import assert_no_errors_logged, joined_session, wait_for_line
from webapp.realtime.transport import MAX_PENDING_BYTES


def test_a_polling_client_that_never_fetches_is_disconnected_at_the_cap(mysql_backend,
                                                                       start_web):
    # No rate limit: a client over its rate would have its bodies refused unread instead
    # (test_admission.py).
    web = start_web(mysql_backend, RATE_LIMIT=0)
    redis = mysql_backend.redis
    # Each event is 5,000 invalid messages (no `message`), answered at once with 5,000
    # refusals: about 250 KB of ack per 100 KB request, all of it waiting for a fetch.
    batch = [{"msg_id": f"m-{n}"} for n in range(5000)]
    event = b'421["data",' + orjson.dumps(batch) + b"]"
    with joined_session(web, "polling", "mallory") as mallory:
        wait_until(lambda: redis.hlen(keys.connections("mallory")) == 1, 5,
                   what="mallory's connection to be counted")
        sent = 0
        while redis.hlen(keys.connections("mallory")) == 1:
            answer = mallory.post(event)
            sent += len(event)
            if answer.status_code != 200:
                break
            assert sent < 20 * MAX_PENDING_BYTES, "never disconnected"
        wait_until(lambda: redis.hlen(keys.connections("mallory")) == 0, 5,
                   what="mallory's connection to be counted out")
        assert mallory.post(event).status_code == 400  # the session is over
        assert mallory.closed_by_server()
    line = wait_for_line(web, "not fetching")[0]
    assert "mallory" in line and " WARNING " in line
    assert_no_errors_logged(web)


def test_many_packets_in_one_polling_request_are_all_handled(mysql_backend, start_web):
    web = start_web(mysql_backend)
    with joined_session(web, "polling", "alice") as alice:
        answer = alice.send_all([f'42{n}["data",{{"msg_id":"m-{n}","message":"x"}}]'
                                 for n in range(40)])
        assert answer.status_code == 200
        acks = [alice.receive() for _ in range(40)]
        assert all(ack is not None and ack.startswith("43") for ack in acks), acks
    assert msg_ids(mysql_backend.redis, "alice") == [f"m-{n}" for n in range(40)]
    assert_no_errors_logged(web)
