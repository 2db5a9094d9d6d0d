"""One user's messages must never stop the engine for everyone else.

A user with an ordinary account sends whatever they like; whatever the database or its driver
refuses because of what a row holds is that row's problem: it is bisected out of its batch and
dead-lettered with its error, while every other user's messages keep landing. Only a connection
that fails or times out (or a server that refuses every statement) is an outage.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import replace

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import keys
from engine.errors import RowRejected, ValidationError
from engine.messages import MAX_ABS_VALUE, MAX_KEY_CHARS, validate
from engine.storage import Row, open_storage
from tests.conftest import IN_CI, TEST_DATABASE_URL, wait_until
from tests.engine_support import (
    append,
    append_raw,
    dead_letter_rows,
    payload,
    pending_total,
    row_count,
    rows,
    stats_mismatches,
    written_ids,
)

#: The engine's pace in these tests, and how long a good message may take to land: one
#: MAX_BATCH_AGE (the entry must be that old below the threshold), one SWEEP_INTERVAL (the
#: sweep that notices it), and an allowance for the drain itself on a loaded 2-core machine.
SWEEP_INTERVAL, MAX_BATCH_AGE, DRAIN_ALLOWANCE = 0.5, 1.0, 2.0
LANDING_BOUND = MAX_BATCH_AGE + SWEEP_INTERVAL + DRAIN_ALLOWANCE


def huge_value_body(msg_id: str, value: float) -> bytes:
    """A stream entry as a release without the value bound would have written it."""
    return orjson.dumps({"msg_id": msg_id, "message": "x", "value": value,
                         "timestamp": "2026-11-26T10:00:00.000Z"})


def test_a_value_that_would_overflow_the_aggregates_is_refused_at_validation():
    with pytest.raises(ValidationError) as refused:
        validate({"message": "x", "value": 1e308}, "mallory", 4096)
    assert refused.value.field == "value"


def test_an_aggregate_the_driver_cannot_send_is_refused_data_not_an_outage(mysql_db):
    # Two 1e308 values of one user sum to infinity, which PyMySQL refuses to put in a statement
    # (ProgrammingError): before, that read as "database unavailable" and stalled every user.
    storage = open_storage(TEST_DATABASE_URL)
    received = int(time.time() * 1000)
    first = Row("mallory", f"{received}-0", "big-1", "x", 1e308, None,
                "2026-11-26T10:00:00.000Z", received)
    try:
        with pytest.raises(RowRejected):
            storage.write([first, replace(first, stream_id=f"{received}-1", msg_id="big-2")])
        assert row_count(mysql_db) == 0
        # The connection is fine: an ordinary batch commits right after.
        assert storage.write([replace(first, value=1.0)]) == 1
    finally:
        storage.close()


def test_values_that_overflow_a_stored_sum_are_dead_lettered_while_others_land(
        mysql_backend, start_engine):
    """Entries an older release accepted (value 1e308) are bisected out and dead-lettered;
    alice's messages, in the same batches, land as if nothing happened."""
    backend = mysql_backend
    engine = start_engine(backend, SWEEP_INTERVAL=SWEEP_INTERVAL, MAX_BATCH_AGE=MAX_BATCH_AGE,
                          MAX_DELIVERIES=2)
    append(backend.redis, "alice", [payload("a-1")])
    append_raw(backend.redis, "mallory", [huge_value_body("big-1", 1e308),
                                          huge_value_body("big-2", 1e308)])
    append(backend.redis, "alice", [payload("a-2")])
    wait_until(lambda: {("alice", "a-1"), ("alice", "a-2")} <= set(written_ids(backend.db)),
               LANDING_BOUND * 2, what="alice's rows")
    [letter] = wait_until(lambda: dead_letter_rows(backend.db), 15,
                          what="mallory's overflowing entry in dead_letters")
    assert (letter.user_id, letter.msg_id) == ("mallory", "big-2")
    assert "out of range" in letter.error.lower() or "inf" in letter.error
    # The first of the two fits on its own; the second would overflow the stored sum.
    assert ("mallory", "big-1") in written_ids(backend.db)
    assert stats_mismatches(backend.db) == []
    wait_until(lambda: pending_total(backend.redis, ["alice", "mallory"]) == 0, 10,
               what="nothing pending")
    assert "database unavailable" not in engine.log()


# --- the property ---------------------------------------------------------------------------------

_extreme_floats = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308,
                                   float(MAX_ABS_VALUE), -float(MAX_ABS_VALUE), 1e308, -1e308,
                                   1.7976931348623157e308, float("inf"), float("nan")])
_values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), _extreme_floats,
                    st.integers(min_value=-(2**70), max_value=2**70))
_text = st.text(max_size=64)
_long_text = st.sampled_from(["é" * 2048, "\U0001f600" * 1024, "a" * 4096, "\x00" * 4096,
                              "\u202e\u0000\ufeff" * 100])
_timestamps = st.one_of(
    st.none(),
    st.datetimes(min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30),
                 timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.sampled_from(["1000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
                     "1000-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"]))
#: What a client can put in a message (validated as the gateway does, refused ones dropped).
client_payloads = st.fixed_dictionaries(
    {"message": st.one_of(_text, _long_text)},
    optional={"msg_id": st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
              "value": _values, "key": st.one_of(st.text(max_size=MAX_KEY_CHARS), _long_text),
              "timestamp": _timestamps, "user_id": _text})
#: What an entry written by an older release or by hand may hold: anything `decode` accepts.
raw_bodies = st.fixed_dictionaries(
    {"msg_id": st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
                         st.text(min_size=65, max_size=200)),
     "message": st.one_of(_text, _long_text, st.just("x" * 70_000)),
     "timestamp": st.one_of(st.just("2026-11-26T10:00:00.000Z"), _text)},
    optional={"value": st.one_of(st.sampled_from([1e308, 1.7976931348623157e308, -1e308]),
                                 st.floats(allow_nan=False, allow_infinity=False),
                                 st.integers(min_value=-(2**63), max_value=2**63)),
              "key": st.one_of(st.text(max_size=300), _long_text)}
).map(orjson.dumps)


@pytest.mark.slow
def test_whatever_one_user_sends_the_others_keep_landing(mysql_backend, start_engine):
    backend = mysql_backend
    engine = start_engine(backend, SWEEP_INTERVAL=SWEEP_INTERVAL, MAX_BATCH_AGE=MAX_BATCH_AGE,
                          MAX_DELIVERIES=2, BATCH_SIZE_THRESHOLD=10_000)
    sent: dict[str, str] = {}  # entry id -> msg_id of everything mallory's stream received
    landings: list[float] = []
    examples = iter(range(10**6))

    @settings(max_examples=15, deadline=None, derandomize=IN_CI,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(client_payloads, raw_bodies), min_size=1, max_size=6))
    # The cases that stalled every user before, always tried first.
    @example([huge_value_body("big-a", 1e308), huge_value_body("big-b", 1e308)])
    @example([{"msg_id": "edge", "message": "\U0001f600" * 1024, "value": MAX_ABS_VALUE,
               "key": "\U0001f600" * MAX_KEY_CHARS, "timestamp": "9999-12-31T23:59:59Z"}])
    def mallory_sends(items: list[dict | bytes]) -> None:
        bodies: list[bytes] = []
        for item in items:
            if isinstance(item, bytes):
                bodies.append(item)
                continue
            try:
                bodies.append(validate(item, "mallory", 4096).data)
            except ValidationError:
                continue  # refused at the door: the client was told, nothing was written
        if bodies:
            ids = append_raw(backend.redis, "mallory", bodies)
            sent.update(zip(ids, (orjson.loads(body)["msg_id"] for body in bodies)))
        marker = f"alice-{next(examples)}"
        start = time.monotonic()
        append(backend.redis, "alice", [payload(marker)])
        wait_until(lambda: ("alice", marker) in written_ids(backend.db), LANDING_BOUND,
                   interval=0.05, what=f"alice's {marker} to land beside mallory's {items!r:.300}")
        landings.append(time.monotonic() - start)

    mallory_sends()
    # Nothing of mallory's is lost either: in the end, every entry is a row (or a duplicate of
    # one: msg_ids repeat across examples) or a dead letter carrying its error.
    wait_until(lambda: backend.redis.xlen(keys.stream("mallory")) == 0, 30,
               what="mallory's stream to be written or dead-lettered")
    assert pending_total(backend.redis, ["mallory"]) == 0
    written = {r.msg_id for r in rows(backend.db) if r.user_id == "mallory"}
    letters = {d.stream_id: d for d in dead_letter_rows(backend.db)}
    lost = {entry: msg_id for entry, msg_id in sent.items()
            if msg_id not in written and entry not in letters}
    assert lost == {}
    assert all(letter.error for letter in letters.values())
    assert [p for p in stats_mismatches(backend.db)
            if p.startswith(("user_stats alice:", "key_stats alice/"))] == []
    assert "database unavailable" not in engine.log()
    assert max(landings) <= LANDING_BOUND
