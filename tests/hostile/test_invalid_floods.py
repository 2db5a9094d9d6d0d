"""A flood of invalid items costs the flooder its rate, not everyone their acks.

Items the server refuses for their content never reached the rate limit in Redis (it counts
accepted messages), so a client could post thousands of invalid items per event, each costing
validation and an answer. Every item now counts against the user's rate before validation:
beyond it, items are answered "rate limited" unread, valid or not.
"""

from __future__ import annotations

from engine import keys
from tests.gateway_support import connected


def test_invalid_items_count_against_the_rate_and_the_excess_is_not_validated(
        mysql_backend, start_web):
    web = start_web(mysql_backend, RATE_LIMIT=0.5, RATE_BURST=10)
    with connected(web.url, web.token("mallory")) as client:
        flood = client.call([{"msg_id": f"bad-{n}"} for n in range(1000)], timeout=30)
        assert len(flood) == 1000
        # The first ten were looked at (and refused for what they hold); the rest were not.
        assert [a["error"] for a in flood[:10]] == ["message: is required"] * 10
        assert {a["error"] for a in flood[10:]} == {"rate limited"}
        assert [a["msg_id"] for a in flood] == [f"bad-{n}" for n in range(1000)]
        # The invalid items used the allowance up: a valid message now waits its turn too.
        assert client.call({"msg_id": "good", "message": "x"}) == {
            "ok": False, "error": "rate limited", "msg_id": "good"}
    assert mysql_backend.redis.xlen(keys.stream("mallory")) == 0


def test_a_well_behaved_user_is_not_held_back_by_a_flooding_one(mysql_backend, start_web):
    web = start_web(mysql_backend, RATE_LIMIT=0.5, RATE_BURST=10)
    with connected(web.url, web.token("mallory")) as mallory, \
            connected(web.url, web.token("alice")) as alice:
        mallory.call([{"msg_id": f"bad-{n}"} for n in range(1000)], timeout=30)
        answers = [alice.call({"msg_id": f"a{n}", "message": "x"}) for n in range(10)]
        assert all(answer["ok"] for answer in answers), answers
