"""The message format: validating what clients send, and the stream entry that carries it.

A client sends `{msg_id, message, user_id, timestamp}` plus optional `value` and `key`, and
nothing else: an unknown field is refused (a misspelt `vaule` would otherwise vanish). The user
comes from the token, never from the payload.

`value` is bounded to |value| <= 2^53, the largest range in which a double holds every integer
exactly. That keeps every aggregate finite: a sum of 2^63 such values (more rows than a BIGINT
count can reach) is about 2^116, far inside a double's range, so one user cannot push a shared
`SUM` to infinity. `timestamp` is an RFC 3339 date-time (the ISO-8601 profile of the web, what
JavaScript's `toISOString()` and Python's `isoformat()` produce); see `TIMESTAMP_FORMS`.

A valid message becomes one stream entry with a single field `d`: compact JSON of the
normalized message (`msg_id`, `message`, `timestamp` as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`, and
`value`/`key` when present). The engine reads it back with `decode`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from engine.errors import ValidationError

#: What a msg_id may be made of.
MSG_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_KEY_CHARS = 255
UTC = dt.UTC
_MIN_YEAR, _MAX_YEAR = 1000, 9999
#: The largest |value| accepted: every integer up to it is exact in a DOUBLE column.
MAX_ABS_VALUE = 2**53
#: The fields a message may carry.
FIELDS = ("msg_id", "message", "user_id", "timestamp", "value", "key")
#: The timestamp forms accepted, as the README lists them: `YYYY-MM-DDTHH:MM:SS`, an optional
#: fraction of 1 to 9 digits, and `Z` or a `±HH:MM` offset (none means UTC); `T` may be a
#: space, and `t`/`z` lower case, as RFC 3339 allows.
TIMESTAMP_FORMS = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))?", re.ASCII)
_KNOWN = frozenset(FIELDS)


@dataclass(slots=True, frozen=True)
class Message:
    """A validated message, ready to be appended to its user's stream."""

    msg_id: str
    data: bytes
    user_overridden: bool


def validate(raw: Any, user_id: str, max_message_bytes: int) -> Message:
    """Check one client payload; raise ValidationError naming the first bad field."""
    if not isinstance(raw, dict):
        raise ValidationError("payload", "must be a JSON object")
    if not _KNOWN.issuperset(raw):
        unknown = next(name for name in raw if name not in _KNOWN)
        raise ValidationError(str(unknown)[:64], "unknown field (a message has "
                              f"{', '.join(FIELDS)})")
    out: dict[str, Any] = {"msg_id": _msg_id(raw.get("msg_id")),
                           "message": _text(raw.get("message"), max_message_bytes),
                           "timestamp": _timestamp(raw.get("timestamp"))}
    value = raw.get("value")
    if value is not None:
        out["value"] = _value(value)
    key = raw.get("key")
    if key is not None:
        out["key"] = _key(key)
    claimed = raw.get("user_id")
    overridden = claimed is not None and str(claimed) != user_id
    return Message(out["msg_id"], orjson.dumps(out), overridden)


def _msg_id(value: Any) -> str:
    if value is None:
        return uuid.uuid4().hex
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not MSG_ID_PATTERN.fullmatch(value):
        raise ValidationError("msg_id", "must be 1-64 characters from A-Z a-z 0-9 _ . : -")
    return value


def _text(value: Any, max_bytes: int) -> str:
    if value is None:
        raise ValidationError("message", "is required")
    if not isinstance(value, str):
        raise ValidationError("message", "must be a string")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise ValidationError("message", "is not valid UTF-8 text") from None
    if size > max_bytes:
        raise ValidationError("message", f"is {size} bytes, more than the {max_bytes} allowed")
    return value


def _timestamp(value: Any) -> str:
    if value is None:
        return format_timestamp(dt.datetime.now(UTC))
    return format_timestamp(parse_timestamp(value, "timestamp"))


def parse_timestamp(value: Any, field: str) -> dt.datetime:
    """An accepted timestamp form (`TIMESTAMP_FORMS`) as an aware UTC datetime; raises
    ValidationError naming `field` otherwise."""
    match = TIMESTAMP_FORMS.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(field, "must be an ISO-8601 date-time string "
                              "(YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM])")
    year, month, day, hour, minute, second, fraction, _, sign, off_h, off_m = match.groups()
    try:
        offset = dt.timedelta(0) if sign is None else \
            (1 if sign == "+" else -1) * dt.timedelta(hours=int(off_h), minutes=int(off_m))
        parsed = dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                             int(second), int((fraction or "0")[:6].ljust(6, "0")),
                             tzinfo=dt.timezone(offset))
    except ValueError:  # 2026-02-30, 25:00, an offset of a day or more
        raise ValidationError(field, "is not a valid date-time") from None
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        raise ValidationError(field, "is out of range") from None
    if not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
        raise ValidationError(field, "is out of range")
    return parsed


def format_timestamp(moment: dt.datetime) -> str:
    """UTC, millisecond precision, the shape JavaScript's toISOString() produces."""
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z")


def _value(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("value", "must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("value", "must be a finite number")
    if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        raise ValidationError("value", "must be between -2^53 and 2^53 "
                              "(-9007199254740992 and 9007199254740992)")
    return value


def _key(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_KEY_CHARS:
        raise ValidationError("key", f"must be a string of at most {MAX_KEY_CHARS} characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValidationError("key", "is not valid UTF-8 text") from None
    return value


def decode(data: str | bytes | None) -> dict[str, Any]:
    """The message a stream entry carries; ValueError when the entry is not one of ours."""
    if data is None:
        raise ValueError("stream entry has no body")
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"stream entry is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ValueError("stream entry is not a JSON object")
    for name in ("msg_id", "message", "timestamp"):
        if not isinstance(message.get(name), str):
            raise ValueError(f"stream entry has no string {name!r}")
    value = message.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError("stream entry has a non-numeric 'value'")
    key = message.get("key")
    if key is not None and not isinstance(key, str):
        raise ValueError("stream entry has a non-string 'key'")
    return message
