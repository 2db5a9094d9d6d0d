"""The Messages view: stored messages, read-only, newest first, filtered by user, time range,
msg_id and key, in keyset pages (webapp/history.py: a cursor on (timestamp, id), never an
offset and never a COUNT, so a page deep in the history costs what the first does); and a CSV
export of the filtered set, streamed a chunk at a time, up to EXPORT_MAX_ROWS rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from typing import Any

from flask import Response, request, stream_with_context
from flask_admin import expose

from engine.errors import ValidationError
from engine.keys import USER_ID_PATTERN
from engine.messages import MAX_KEY_CHARS, MSG_ID_PATTERN, format_timestamp, parse_timestamp
from webapp import history
from webapp.admin.base import PAGE_SIZE, OperatorView
from webapp.extensions import services

CSV_COLUMNS = ("timestamp", "user_id", "msg_id", "key", "value", "message", "received_at",
               "stream_id")
#: A browser's datetime-local field sends minutes only.
_MINUTES = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")
#: Cells a spreadsheet would run as a formula (CSV injection) get a leading quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _moment(text: str, name: str) -> dt.datetime | None:
    if not text:
        return None
    if _MINUTES.fullmatch(text):
        text += ":00"
    return parse_timestamp(text, name).replace(tzinfo=None)


def read_filters(args: Any) -> tuple[history.Filters, dict[str, str], str | None]:
    """The filters of the query string, the form's values, and what is wrong with them."""
    values = {name: (args.get(name) or "").strip()
              for name in ("user", "since", "until", "key", "msg_id")}
    try:
        if values["user"] and not USER_ID_PATTERN.fullmatch(values["user"]):
            raise ValidationError("user", "must be a username")
        if values["msg_id"] and not MSG_ID_PATTERN.fullmatch(values["msg_id"]):
            raise ValidationError("msg_id", "must be 1-64 characters from A-Z a-z 0-9 _ . : -")
        if len(values["key"]) > MAX_KEY_CHARS:
            raise ValidationError("key", f"must be at most {MAX_KEY_CHARS} characters")
        filters = history.Filters(
            user=values["user"] or None, since=_moment(values["since"], "since"),
            until=_moment(values["until"], "until"), key=values["key"] or None,
            msg_id=values["msg_id"] or None)
    except ValidationError as exc:
        return history.Filters(), values, str(exc)
    return filters, values, None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_lines(rows: Iterator[history.StoredMessage]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for count, row in enumerate(rows, 1):
        writer.writerow([_cell(getattr(row, column)) for column in CSV_COLUMNS])
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


class MessagesView(OperatorView):
    @expose("/")
    def index(self) -> str | Response:
        filters, values, problem = read_filters(request.args)
        cursor = request.args.get("cursor") or None
        rows: list[history.StoredMessage] = []
        next_cursor = None
        if problem is None:
            try:
                rows, next_cursor = history.page(services().db, filters, cursor, PAGE_SIZE)
            except ValidationError as exc:
                problem = str(exc)
        status = 200 if problem is None else 400
        return Response(self.render("operator/messages.html", rows=rows, values=values,
                                    problem=problem, cursor=cursor, next_cursor=next_cursor,
                                    max_rows=services().settings.EXPORT_MAX_ROWS),
                        status=status)

    @expose("/export.csv")
    def export(self) -> Response:
        filters, _, problem = read_filters(request.args)
        if problem is not None:
            return Response(f"{problem}\n", status=400, mimetype="text/plain")
        rows = history.export(services().db, filters, services().settings.EXPORT_MAX_ROWS)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return Response(stream_with_context(csv_lines(rows)), mimetype="text/csv",
                        headers={"Content-Disposition":
                                 f'attachment; filename="messages-{stamp}.csv"'})
