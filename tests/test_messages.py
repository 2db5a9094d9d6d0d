"""Validation of client messages (engine/messages.py): fast, no services."""

from __future__ import annotations

import datetime as dt
import math

import orjson
import pytest

from engine.errors import ValidationError
from engine.messages import MAX_KEY_CHARS, decode, validate

MAX_BYTES = 64


def stored(raw: object, user_id: str = "alice", max_bytes: int = MAX_BYTES) -> dict:
    """What the stream entry of a valid message carries."""
    return orjson.loads(validate(raw, user_id, max_bytes).data)


def refusal(raw: object, max_bytes: int = MAX_BYTES) -> str:
    with pytest.raises(ValidationError) as caught:
        validate(raw, "alice", max_bytes)
    return str(caught.value)


# --- what a valid message becomes ---------------------------------------------------------------

def test_a_valid_message_is_stored_with_its_fields_normalized():
    entry = stored({"msg_id": "m-1", "message": "hello", "timestamp": "2026-11-26T10:00:00Z",
                    "value": 2.5, "key": "temp", "user_id": "alice"})
    assert entry == {"msg_id": "m-1", "message": "hello",
                     "timestamp": "2026-11-26T10:00:00.000Z", "value": 2.5, "key": "temp"}


def test_the_stored_entry_never_carries_a_user_id():
    assert "user_id" not in stored({"message": "x", "user_id": "mallory"})


def test_a_message_decodes_back_to_what_was_stored():
    message = validate({"msg_id": "m-2", "message": "héllo", "value": 3}, "alice", MAX_BYTES)
    assert decode(message.data) == orjson.loads(message.data)
    assert decode(message.data)["message"] == "héllo"


def test_a_missing_msg_id_is_generated_and_unique():
    first = validate({"message": "x"}, "alice", MAX_BYTES)
    second = validate({"message": "x"}, "alice", MAX_BYTES)
    assert first.msg_id != second.msg_id
    assert len(first.msg_id) == 32 and int(first.msg_id, 16) >= 0
    assert orjson.loads(first.data)["msg_id"] == first.msg_id


def test_a_non_negative_integer_msg_id_is_kept_as_text():
    assert stored({"msg_id": 42, "message": "x"})["msg_id"] == "42"


def test_a_msg_id_of_64_allowed_characters_is_accepted():
    msg_id = "Az09_.:-" * 8
    assert stored({"msg_id": msg_id, "message": "x"})["msg_id"] == msg_id


def test_a_missing_timestamp_defaults_to_the_server_time_in_utc_milliseconds():
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    timestamp = stored({"message": "x"})["timestamp"]
    after = dt.datetime.now(dt.UTC)
    assert timestamp.endswith("Z") and len(timestamp) == len("2026-11-26T10:00:00.000Z")
    assert before <= dt.datetime.fromisoformat(timestamp) <= after


@pytest.mark.parametrize(("sent", "normalized"), [
    ("2026-11-26T12:00:00+02:00", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T10:00:00.123456Z", "2026-11-26T10:00:00.123Z"),
    ("2026-11-26T10:00:00", "2026-11-26T10:00:00.000Z"),
    ("2026-11-26T05:30:00.5-04:30", "2026-11-26T10:00:00.500Z"),
    ("2026-11-26 10:00:00.123456789z", "2026-11-26T10:00:00.123Z"),
])
def test_a_timestamp_is_normalized_to_utc_with_millisecond_precision(sent, normalized):
    assert stored({"message": "x", "timestamp": sent})["timestamp"] == normalized


def test_a_message_of_exactly_the_byte_limit_is_accepted():
    assert stored({"message": "é" * (MAX_BYTES // 2)})["message"] == "é" * (MAX_BYTES // 2)


def test_an_empty_message_is_accepted():
    assert stored({"message": ""})["message"] == ""


@pytest.mark.parametrize("value", [2**53, -(2**53), 2**53 - 1, 0])
def test_an_integer_value_up_to_2_to_the_53_is_kept_exactly(value):
    assert stored({"message": "x", "value": value})["value"] == value


def test_a_null_value_or_key_counts_as_absent():
    entry = stored({"message": "x", "value": None, "key": None})
    assert "value" not in entry and "key" not in entry


def test_a_key_of_the_maximum_length_is_accepted():
    assert stored({"message": "x", "key": "k" * MAX_KEY_CHARS})["key"] == "k" * MAX_KEY_CHARS


# --- the user id comes from the token -----------------------------------------------------------

def test_a_payload_user_id_naming_another_user_is_flagged_as_overridden():
    assert validate({"message": "x", "user_id": "mallory"}, "alice", MAX_BYTES).user_overridden


def test_a_payload_user_id_naming_the_token_user_is_not_flagged():
    assert not validate({"message": "x", "user_id": "alice"}, "alice", MAX_BYTES).user_overridden
    assert not validate({"message": "x"}, "alice", MAX_BYTES).user_overridden


# --- refusals name the field and the reason -----------------------------------------------------

@pytest.mark.parametrize("payload", [[{"message": "x"}], "x", 5, None, True])
def test_a_payload_that_is_not_an_object_is_refused(payload):
    assert refusal(payload) == "payload: must be a JSON object"


@pytest.mark.parametrize("msg_id", [
    "has space", "slash/", "é", "new\nline", "", "x" * 65, 1.5, True, -1, ["m"], {"id": 1},
    10**70,
], ids=repr)
def test_a_bad_msg_id_is_refused(msg_id):
    assert refusal({"msg_id": msg_id, "message": "x"}).startswith("msg_id: ")


def test_a_missing_message_is_refused():
    assert refusal({"msg_id": "m"}) == "message: is required"


@pytest.mark.parametrize("message", [5, 1.5, True, ["x"], {"text": "x"}])
def test_a_message_that_is_not_a_string_is_refused(message):
    assert refusal({"message": message}) == "message: must be a string"


def test_a_message_over_the_byte_limit_is_refused_counting_utf8_bytes():
    text = "é" * (MAX_BYTES // 2 + 1)  # fewer characters than the limit, more bytes
    assert len(text) < MAX_BYTES
    assert refusal({"message": text}) == (f"message: is {2 * len(text)} bytes, more than the "
                                          f"{MAX_BYTES} allowed")


def test_a_message_with_a_lone_surrogate_is_refused():
    assert refusal({"message": "broken \ud800 text"}) == "message: is not valid UTF-8 text"


@pytest.mark.parametrize("timestamp", [
    "yesterday", "26/11/2026 10:00", "", 1764151200, 1764151200.5, True, ["2026-11-26"],
])
def test_a_timestamp_that_is_not_iso_8601_is_refused(timestamp):
    assert refusal({"message": "x", "timestamp": timestamp}) == (
        "timestamp: must be an ISO-8601 date-time string (YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM])")


@pytest.mark.parametrize("timestamp", [
    "2026-13-01T00:00:00Z", "2026-11-26T25:00:00Z", "2026-02-30T00:00:00Z",
    "2026-11-26T10:00:60Z", "2026-11-26T10:00:00+24:00",
])
def test_a_timestamp_in_the_right_form_that_is_no_real_moment_is_refused(timestamp):
    assert refusal({"message": "x", "timestamp": timestamp}) == (
        "timestamp: is not a valid date-time")


@pytest.mark.parametrize("timestamp", [
    "0001-01-01T00:00:00Z", "0999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
])
def test_a_timestamp_out_of_range_is_refused(timestamp):
    assert refusal({"message": "x", "timestamp": timestamp}) == "timestamp: is out of range"


@pytest.mark.parametrize("value", [True, False, "5", [1], {"v": 1}])
def test_a_value_that_is_not_a_number_is_refused(value):
    assert refusal({"message": "x", "value": value}) == "value: must be a number"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_finite_is_refused(value):
    assert refusal({"message": "x", "value": value}) == "value: must be a finite number"


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**53 + 1, 2**63, 1e308, -1e16],
                         ids=["huge", "-huge", "2^53+1", "2^63", "1e308", "-1e16"])
def test_a_value_beyond_2_to_the_53_is_refused(value):
    assert refusal({"message": "x", "value": value}) == (
        "value: must be between -2^53 and 2^53 (-9007199254740992 and 9007199254740992)")


@pytest.mark.parametrize("key", ["k" * (MAX_KEY_CHARS + 1), 5, True, ["k"]])
def test_a_key_too_long_or_not_a_string_is_refused(key):
    assert refusal({"message": "x", "key": key}) == (
        f"key: must be a string of at most {MAX_KEY_CHARS} characters")


def test_a_key_with_a_lone_surrogate_is_refused():
    assert refusal({"message": "x", "key": "\udfff"}) == "key: is not valid UTF-8 text"


def test_the_refusal_names_the_first_bad_field():
    assert refusal({"msg_id": "bad id", "message": 5, "value": "x"}).startswith("msg_id: ")
    assert refusal({"message": "x", "timestamp": "no", "value": "x"}).startswith("timestamp: ")


def test_a_refusal_carries_the_field_and_reason_separately():
    with pytest.raises(ValidationError) as caught:
        validate({"message": "x", "value": "x"}, "alice", MAX_BYTES)
    assert (caught.value.field, caught.value.reason) == ("value", "must be a number")


# --- decode refuses entries that are not ours ---------------------------------------------------

@pytest.mark.parametrize("data", [None, "not json", "[1]", '{"msg_id": "m", "message": "x"}',
                                  '{"msg_id": "m", "message": "x", "timestamp": "t", '
                                  '"value": true}'])
def test_decode_refuses_an_entry_that_is_not_a_tributary_message(data):
    with pytest.raises(ValueError):
        decode(data)
