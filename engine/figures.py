"""One shape for aggregates wherever they are shown: the API, the live `stats` events, the
dashboard. A row of `user_stats` or `key_stats` becomes
`{messages, values: {count, sum, avg, min, max}, first_seen, last_seen}`, times in UTC
ISO-8601 with milliseconds."""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.messages import format_timestamp


def figures(row: Any) -> dict[str, Any]:
    """The public form of a `user_stats` or `key_stats` row (any object with its columns)."""
    return {"messages": int(row.message_count),
            "values": {"count": int(row.value_count), "sum": row.value_sum,
                       "avg": row.value_avg, "min": row.value_min, "max": row.value_max},
            "first_seen": moment(row.first_seen), "last_seen": moment(row.last_seen)}


def moment(value: Any) -> str:
    """A DATETIME column's value (a datetime from MySQL, text from SQLite) as UTC ISO-8601."""
    parsed = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return format_timestamp(parsed)
