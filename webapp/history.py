"""Reading stored messages back: filtered pages in time order with keyset cursors, and exports.

A page is ordered by (`timestamp`, `id`) and continues from a cursor holding the last row's pair,
never from an offset: page 1,000 costs what page 1 costs (an index range scan, no COUNT, no
skipped rows), and rows inserted meanwhile neither repeat a row nor make one skipped. The
indexes behind each filter are in engine/schema.py (by time; by user and time; by user, key and
time; by user and msg_id).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.errors import ValidationError
from engine.messages import format_timestamp
from engine.schema import messages

#: Most rows in one page.
MAX_PAGE = 1000


@dataclass(frozen=True)
class Filters:
    """What a history read is limited to; None means no limit on that field."""

    user: str | None = None
    since: dt.datetime | None = None  # inclusive, naive UTC
    until: dt.datetime | None = None  # exclusive, naive UTC
    key: str | None = None
    msg_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One row of `messages`, as the history shows it."""

    id: int
    user_id: str
    msg_id: str
    message: str
    value: float | None
    key: str | None
    timestamp: dt.datetime
    received_at: dt.datetime
    stream_id: str

    def public(self) -> dict[str, Any]:
        """The JSON form: times as UTC ISO-8601 with milliseconds."""
        return {"user_id": self.user_id, "msg_id": self.msg_id, "message": self.message,
                "value": self.value, "key": self.key,
                "timestamp": format_timestamp(_moment(self.timestamp)),
                "received_at": format_timestamp(_moment(self.received_at)),
                "stream_id": self.stream_id}


_COLUMNS = (messages.c.id, messages.c.user_id, messages.c.msg_id, messages.c.message,
            messages.c.value, messages.c.key, messages.c.timestamp, messages.c.received_at,
            messages.c.stream_id)


def encode_cursor(row: StoredMessage) -> str:
    """An opaque cursor pointing just past `row`."""
    text = f"{_moment(row.timestamp).isoformat(timespec='microseconds')}|{row.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """The (timestamp, id) a cursor points past; ValidationError on anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, row_id = text.split("|")
        return dt.datetime.fromisoformat(moment), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("cursor", "is not a cursor from an earlier page") from None


def page(db: sa.engine.Engine, filters: Filters, after: str | None = None,
         limit: int = 100, newest_first: bool = True) -> tuple[list[StoredMessage], str | None]:
    """One page of messages matching `filters`, after the cursor `after`; returns the rows and
    the cursor of the next page (None when this is the last one)."""
    limit = max(1, min(limit, MAX_PAGE))
    query = _query(filters, newest_first)
    if after is not None:
        query = query.where(_beyond(*decode_cursor(after), newest_first))
    with db.connect() as conn:
        found = [StoredMessage(*row) for row in conn.execute(query.limit(limit + 1))]
    if len(found) > limit:
        return found[:limit], encode_cursor(found[limit - 1])
    return found, None


def export(db: sa.engine.Engine, filters: Filters, max_rows: int,
           chunk: int = 1000, newest_first: bool = True) -> Iterator[StoredMessage]:
    """Every message matching `filters`, up to `max_rows`, read a chunk at a time (one short
    query each, so a long export holds no transaction open)."""
    after: str | None = None
    sent = 0
    while sent < max_rows:
        rows, after = page(db, filters, after, min(chunk, max_rows - sent), newest_first)
        yield from rows
        sent += len(rows)
        if after is None:
            return


def _query(filters: Filters, newest_first: bool) -> sa.Select[Any]:
    m = messages.c
    query = sa.select(*_COLUMNS)
    if filters.user is not None:
        query = query.where(m.user_id == filters.user)
    if filters.key is not None:
        query = query.where(m.key == filters.key)
    if filters.msg_id is not None:
        query = query.where(m.msg_id == filters.msg_id)
    if filters.since is not None:
        query = query.where(m.timestamp >= filters.since)
    if filters.until is not None:
        query = query.where(m.timestamp < filters.until)
    if newest_first:
        return query.order_by(m.timestamp.desc(), m.id.desc())
    return query.order_by(m.timestamp.asc(), m.id.asc())


def _beyond(moment: dt.datetime, row_id: int, newest_first: bool) -> sa.ColumnElement[bool]:
    m = messages.c
    if newest_first:
        return sa.or_(m.timestamp < moment, sa.and_(m.timestamp == moment, m.id < row_id))
    return sa.or_(m.timestamp > moment, sa.and_(m.timestamp == moment, m.id > row_id))


def _moment(value: Any) -> dt.datetime:
    # SQLite hands DATETIME columns back as text through the raw column types; MySQL as
    # datetimes. Both are naive UTC.
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=None)
