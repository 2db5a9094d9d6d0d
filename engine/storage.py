"""Writing batches of messages to the database: one transaction per batch, idempotent, with the
per-user aggregates updated from exactly the rows that were new.

The insert is `INSERT … ON DUPLICATE KEY UPDATE` on MySQL/MariaDB and `INSERT … ON CONFLICT DO
NOTHING` on SQLite, keyed on (user_id, msg_id): a redelivered or resent message inserts nothing.
The driver reports how many rows were really inserted; when that is the whole batch (the usual
case) the aggregates (per user in `user_stats`, per user and key in `key_stats`) come straight
from the batch, otherwise the rows this transaction inserted are read back (they carry this
batch's `committed_at`) and only those are counted.

Errors are sorted in two kinds. `StorageUnavailable` is an outage: the connection failed or timed
out, or the server refuses every statement whatever it holds (read-only, shutting down, out of
space, a lock wait or deadlock, a missing table); the batch is retried later with backoff.
Everything else the server or the driver refuses is `RowRejected`, however the driver labels it
(PyMySQL raises ProgrammingError for an infinite float it cannot escape, say): something in the
rows is at fault, so the writer bisects the batch and the rows that keep failing go to dead
letters. A refusal that is really an outage must never be taken for data (it would dead-letter
good rows), and one that is really data must never be taken for an outage (it would stall
every user behind one user's message): `OUTAGE_ERRNOS` is the list that decides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

import pymysql
from pymysql.constants import SERVER_STATUS
from sqlalchemy.engine import URL

from engine.db import MYSQL_INIT, MYSQL_TIMEOUTS, is_sqlite, normalize_url
from engine.errors import RowRejected, StopRequested, StorageUnavailable
from engine.figures import figures

log = logging.getLogger(__name__)

#: MySQL/MariaDB server errors that refuse every statement, whatever it holds: the server is
#: unwell, busy or misconfigured, not the data. They are outages (retry later, with backoff);
#: every other refusal, by the server or by the driver, is about what the statement carries.
OUTAGE_ERRNOS = frozenset({
    1021,  # disk full
    1037, 1038, 1041,  # out of memory
    1040,  # too many connections
    1044, 1045, 1142, 1143,  # access denied (privileges changed under the engine)
    1053,  # server shutdown in progress
    1054, 1146,  # unknown column, no such table: the schema, not the row
    1114,  # table is full
    1152, 1158, 1159, 1160, 1161,  # aborted connection, network read/write errors and timeouts
    1180, 1181,  # storage engine error during COMMIT or ROLLBACK
    1205,  # lock wait timeout
    1213,  # deadlock
    1290, 1836,  # read-only server
    1317,  # query interrupted (KILL QUERY)
    1927,  # connection killed (MariaDB)
    1969, 3024,  # statement timeout (MariaDB max_statement_time, MySQL max_execution_time)
    4031,  # disconnected by the server for inactivity (MySQL 8)
})
#: Client-side error numbers (PyMySQL's CR_* codes: can't connect, server gone away, lost
#: connection…) lie in this range: all of them are about the connection.
CLIENT_ERRNOS = range(2000, 3000)


@dataclass(slots=True)
class Row:
    """One message as it goes into the `messages` table."""

    user_id: str
    stream_id: str
    msg_id: str
    message: str
    value: float | None
    key: str | None
    timestamp: str  # ISO-8601 UTC as stored in the stream: YYYY-MM-DDTHH:MM:SS.mmmZ
    received_ms: int


@dataclass(slots=True)
class Aggregate:
    """What a set of new rows adds to one user's `user_stats` row."""

    count: int = 0
    value_count: int = 0
    value_sum: float | None = None
    value_min: float | None = None
    value_max: float | None = None
    first_ms: int = 0
    last_ms: int = 0

    def add(self, row: Row) -> None:
        if self.count == 0:
            self.first_ms = self.last_ms = row.received_ms
        else:
            self.first_ms = min(self.first_ms, row.received_ms)
            self.last_ms = max(self.last_ms, row.received_ms)
        self.count += 1
        value = row.value
        if value is not None:
            self.value_count += 1
            if self.value_sum is None:
                self.value_sum = self.value_min = self.value_max = float(value)
            else:
                self.value_sum += value
                self.value_min = min(self.value_min, value)  # type: ignore[type-var]
                self.value_max = max(self.value_max, value)  # type: ignore[type-var]


def aggregate(rows: Sequence[Row]) -> dict[str, Aggregate]:
    """What `rows` add to each user's `user_stats` row."""
    totals: dict[str, Aggregate] = {}
    for row in rows:
        total = totals.get(row.user_id)
        if total is None:
            total = totals[row.user_id] = Aggregate()
        total.add(row)
    return totals


def aggregate_by_key(rows: Sequence[Row]) -> dict[tuple[str, str], Aggregate]:
    """What the rows that carry a key add to each (user, key) row of `key_stats`."""
    totals: dict[tuple[str, str], Aggregate] = {}
    for row in rows:
        if row.key is None:
            continue
        total = totals.get((row.user_id, row.key))
        if total is None:
            total = totals[(row.user_id, row.key)] = Aggregate()
        total.add(row)
    return totals


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def millis_to_datetime(ms: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)


@dataclass(slots=True)
class Letter:
    """An entry that will not be written, as it goes into `dead_letters`."""

    user_id: str
    stream_id: str
    msg_id: str | None
    payload: str
    error: str
    attempts: int


class Storage(Protocol):
    """A database the engine writes to."""

    def write(self, rows: Sequence[Row]) -> int:
        """Insert rows and update aggregates in one transaction; returns rows really inserted."""

    def dead_letter(self, user_id: str, stream_id: str, msg_id: str | None, payload: str,
                    error: str, attempts: int) -> None:
        """Record an entry that will not be written, idempotently on (user_id, stream_id)."""

    def dead_letters(self, letters: Sequence[Letter]) -> None:
        """Record many such entries in one transaction."""

    def key_figures(self, pairs: Sequence[tuple[str, str]]
                    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The current `key_stats` of these (user, key) pairs, in their public form."""

    def close(self) -> None:
        """Release the connection."""


class _BaseStorage:
    """The transaction logic both dialects share; subclasses supply SQL and a connection."""

    INSERT_MESSAGES: str
    UPSERT_STATS: str
    UPSERT_KEY_STATS: str
    SELECT_KEY_STATS = (  # both dialects take `key` quoted this way
        "SELECT user_id, `key`, message_count, value_count, value_sum, value_min, value_max, "
        "value_avg, first_seen, last_seen FROM key_stats "
        "WHERE user_id = {param} AND `key` IN ({marks})")
    INSERT_DEAD_LETTER: str
    SELECT_NEW: str

    def __init__(self) -> None:
        self._conn: Any = None

    # subclass hooks
    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, cursor: Any) -> None:
        pass

    def _classify(self, exc: Exception) -> Exception:
        raise NotImplementedError

    def _timestamp(self, iso: str) -> str:
        raise NotImplementedError

    def _datetime(self, moment: dt.datetime) -> Any:
        return moment

    # the shared part
    def _cursor(self) -> Any:
        if self._conn is None:
            try:
                self._conn = self._connect()
            except Exception as exc:  # no row has been looked at yet: never the data
                raise StorageUnavailable(f"cannot connect: {type(exc).__name__}: {exc}") \
                    from exc
        return self._conn.cursor()

    def message_params(self, rows: Sequence[Row], committed_at: dt.datetime) -> list[tuple]:
        """The INSERT_MESSAGES parameters of `rows`, committed at `committed_at`."""
        stamp = self._datetime(committed_at)
        return [(row.user_id, row.msg_id, row.message, row.value, row.key,
                 self._timestamp(row.timestamp),
                 self._datetime(millis_to_datetime(row.received_ms)), row.stream_id, stamp)
                for row in rows]

    def _insert_messages(self, cursor: Any, rows: Sequence[Row],
                         committed_at: dt.datetime) -> int:
        """INSERT_MESSAGES for `rows`; returns how many were really inserted."""
        cursor.executemany(self.INSERT_MESSAGES, self.message_params(rows, committed_at))
        return int(cursor.rowcount)

    def write(self, rows: Sequence[Row]) -> int:
        committed_at = utc_now()
        stamp = self._datetime(committed_at)
        try:
            cursor = self._cursor()
            try:
                self._begin(cursor)
                inserted = self._insert_messages(cursor, rows, committed_at)
                new_rows = rows if inserted == len(rows) else self._new_rows(cursor, rows,
                                                                             committed_at)
                totals = aggregate(new_rows)
                if totals:
                    cursor.executemany(self.UPSERT_STATS, [
                        (user_id, *self._figures(t), stamp) for user_id, t in totals.items()])
                by_key = aggregate_by_key(new_rows)
                if by_key:
                    cursor.executemany(self.UPSERT_KEY_STATS, [
                        (user_id, key, *self._figures(t), stamp)
                        for (user_id, key), t in by_key.items()])
                self._conn.commit()
                return len(new_rows)
            finally:
                cursor.close()
        except (RowRejected, StorageUnavailable):
            self._rollback()
            raise
        except StopRequested:
            self._abandon()
            raise
        except Exception as exc:
            self._rollback()
            raise self._classify(exc) from exc

    def _figures(self, t: Aggregate) -> tuple[Any, ...]:
        """The aggregate columns of an upsert, in table order."""
        return (t.count, t.value_count, t.value_sum, t.value_min, t.value_max,
                self._datetime(millis_to_datetime(t.first_ms)),
                self._datetime(millis_to_datetime(t.last_ms)))

    def _new_rows(self, cursor: Any, rows: Sequence[Row], committed_at: dt.datetime) -> list[Row]:
        """The rows of `rows` that this transaction inserted (the rest already existed)."""
        ours: set[tuple[str, str]] = set()
        by_user: dict[str, list[str]] = {}
        for row in rows:
            by_user.setdefault(row.user_id, []).append(row.msg_id)
        for user_id, msg_ids in by_user.items():
            for start in range(0, len(msg_ids), 500):
                chunk = msg_ids[start:start + 500]
                marks = ",".join([self.PARAM] * len(chunk))
                cursor.execute(self.SELECT_NEW.format(marks=marks),
                               (self._datetime(committed_at), user_id, *chunk))
                ours.update((user_id, msg_id) for msg_id, in cursor.fetchall())
        seen: set[tuple[str, str]] = set()
        new_rows = []
        for row in rows:  # a batch may hold the same msg_id twice: count it once
            ident = (row.user_id, row.msg_id)
            if ident in ours and ident not in seen:
                seen.add(ident)
                new_rows.append(row)
        return new_rows

    PARAM = "%s"

    def dead_letter(self, user_id: str, stream_id: str, msg_id: str | None, payload: str,
                    error: str, attempts: int) -> None:
        self.dead_letters([Letter(user_id, stream_id, msg_id, payload, error, attempts)])

    def dead_letters(self, letters: Sequence[Letter]) -> None:
        created = self._datetime(utc_now())
        try:
            cursor = self._cursor()
            try:
                self._begin(cursor)
                cursor.executemany(self.INSERT_DEAD_LETTER, [
                    (letter.user_id, letter.stream_id, letter.msg_id, letter.payload,
                     letter.error[:60000], letter.attempts, created) for letter in letters])
                self._conn.commit()
            finally:
                cursor.close()
        except StorageUnavailable:
            self._rollback()
            raise
        except StopRequested:
            self._abandon()
            raise
        except Exception as exc:
            self._rollback()
            raise self._classify(exc) from exc

    def key_figures(self, pairs: Sequence[tuple[str, str]]
                    ) -> dict[tuple[str, str], dict[str, Any]]:
        by_user: dict[str, list[str]] = {}
        for user_id, key in pairs:
            by_user.setdefault(user_id, []).append(key)
        found: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            cursor = self._cursor()
            try:
                for user_id, user_keys in by_user.items():
                    marks = ",".join([self.PARAM] * len(user_keys))
                    cursor.execute(self.SELECT_KEY_STATS.format(param=self.PARAM, marks=marks),
                                   (user_id, *user_keys))
                    names = [column[0] for column in cursor.description]
                    for values in cursor.fetchall():
                        row = SimpleNamespace(**dict(zip(names, values)))
                        found[(row.user_id, row.key)] = figures(row)
                self._conn.commit()  # end the read's transaction: the next write starts fresh
            finally:
                cursor.close()
        except StorageUnavailable:
            raise
        except StopRequested:
            self._abandon()
            raise
        except Exception as exc:
            self._rollback()
            raise self._classify(exc) from exc
        return found

    def _abandon(self) -> None:
        """Close the connection without a ROLLBACK: a stop signal interrupted a statement
        mid-flight, so the connection is in no state to answer one (and a ROLLBACK could wait
        on the very lock the statement waited on). The server rolls back on its own."""
        self.close()

    def _rollback(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except Exception:
            self.close()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # the connection may already be broken
                self._conn.close()
            self._conn = None


class MySQLStorage(_BaseStorage):
    """MySQL 8 / MariaDB through a PyMySQL connection of its own.

    The connection does not set CLIENT_FOUND_ROWS (SQLAlchemy's does), so the affected-row
    count of the insert is the number of rows really inserted.
    """

    INSERT_MESSAGES = (
        "INSERT INTO messages (user_id, msg_id, message, value, `key`, `timestamp`, "
        "received_at, stream_id, committed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON DUPLICATE KEY UPDATE msg_id = msg_id")
    _ADD_FIGURES = (
        "message_count = message_count + VALUES(message_count), "
        "value_count = value_count + VALUES(value_count), "
        "value_sum = COALESCE(value_sum + VALUES(value_sum), value_sum, VALUES(value_sum)), "
        "value_min = COALESCE(LEAST(value_min, VALUES(value_min)), value_min, "
        "VALUES(value_min)), "
        "value_max = COALESCE(GREATEST(value_max, VALUES(value_max)), value_max, "
        "VALUES(value_max)), "
        "first_seen = LEAST(first_seen, VALUES(first_seen)), "
        "last_seen = GREATEST(last_seen, VALUES(last_seen)), "
        "updated_at = VALUES(updated_at)")
    UPSERT_STATS = (
        "INSERT INTO user_stats (user_id, message_count, value_count, value_sum, value_min, "
        "value_max, first_seen, last_seen, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE " + _ADD_FIGURES)
    UPSERT_KEY_STATS = (
        "INSERT INTO key_stats (user_id, `key`, message_count, value_count, value_sum, "
        "value_min, value_max, first_seen, last_seen, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
        + _ADD_FIGURES)
    INSERT_DEAD_LETTER = (
        "INSERT INTO dead_letters (user_id, stream_id, msg_id, payload, error, attempts, "
        "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
        "error = VALUES(error), attempts = VALUES(attempts), replayed_at = NULL")
    SELECT_NEW = ("SELECT msg_id FROM messages WHERE committed_at = %s AND user_id = %s "
                  "AND msg_id IN ({marks})")

    #: `INSERT_MESSAGES` as `_insert_messages` sends it: rows written out as literals.
    INSERT_HEAD = INSERT_MESSAGES[:INSERT_MESSAGES.index("VALUES") + len("VALUES ")]
    INSERT_TAIL = INSERT_MESSAGES[INSERT_MESSAGES.index(" ON DUPLICATE"):]
    #: The most characters of rows in one INSERT; less when the server's max_allowed_packet
    #: could not take that many 4-byte characters.
    STATEMENT_CHARS = 1 << 20

    def __init__(self, url: URL) -> None:
        super().__init__()
        self._statement_chars = self.STATEMENT_CHARS
        self._seconds: dict[int, str] = {}  # epoch second -> "'YYYY-MM-DD HH:MM:SS."
        query = dict(url.query)
        self._params: dict[str, Any] = {
            "host": url.host or "127.0.0.1", "port": url.port or 3306,
            "user": url.username or "root", "password": url.password or "",
            "database": url.database, "charset": "utf8mb4", "autocommit": False,
            "init_command": MYSQL_INIT,
            **MYSQL_TIMEOUTS}
        if "unix_socket" in query:
            self._params["unix_socket"] = query["unix_socket"]

    def _connect(self) -> Any:
        conn = pymysql.connect(**self._params)
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@max_allowed_packet")
            (packet,) = cursor.fetchone()
        conn.commit()
        self._statement_chars = max(1024, min(self.STATEMENT_CHARS, (int(packet) - 4096) // 4))
        return conn

    def _insert_messages(self, cursor: Any, rows: Sequence[Row],
                         committed_at: dt.datetime) -> int:
        """The rows written out as SQL literals, in as few statements as the packet size
        allows. PyMySQL's `executemany` would run every parameter through its generic
        encoders, a datetime dearest of all; this is the engine's hottest loop, and the row's
        types are known here."""
        quote = _quoter(self._conn)
        stamp = committed_at.strftime("'%Y-%m-%d %H:%M:%S.%f'")
        users: dict[str, str] = {}
        values: list[str] = []
        size = 0
        inserted = 0
        for row in rows:
            user = users.get(row.user_id)
            if user is None:
                user = users[row.user_id] = quote(row.user_id)
            key = "NULL" if row.key is None else quote(row.key)
            literal = (f"({user},{quote(row.msg_id)},{quote(row.message)},"
                       f"{_number(row.value)},{key},{quote(self._timestamp(row.timestamp))},"
                       f"{self._millis(row.received_ms)},{quote(row.stream_id)},{stamp})")
            if values and size + len(literal) > self._statement_chars:
                inserted += cursor.execute(self._insert(values))
                values, size = [], 0
            values.append(literal)
            size += len(literal) + 1
        if values:
            inserted += cursor.execute(self._insert(values))
        return inserted

    def _insert(self, values: list[str]) -> str:
        return self.INSERT_HEAD + ",".join(values) + self.INSERT_TAIL

    def _millis(self, ms: int) -> str:
        """A DATETIME(3) literal of `ms` milliseconds since the epoch (UTC)."""
        second, millis = divmod(ms, 1000)
        prefix = self._seconds.get(second)
        if prefix is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            prefix = self._seconds[second] = millis_to_datetime(second * 1000).strftime(
                "'%Y-%m-%d %H:%M:%S.")
        return f"{prefix}{millis:03d}'"

    def _timestamp(self, iso: str) -> str:
        # "2026-11-26T18:29:00.123Z" -> "2026-11-26 18:29:00.123"; anything else is passed
        # through and refused by the database if it is not a date.
        if len(iso) == 24 and iso[10] == "T" and iso[23] == "Z":
            return f"{iso[:10]} {iso[11:23]}"
        return iso

    def _classify(self, exc: Exception) -> Exception:
        if is_mysql_outage(exc):
            # The connection may be broken: start afresh next time.
            self.close()
            return StorageUnavailable(f"{type(exc).__name__}: {exc}")
        return RowRejected(_describe(exc))


class SQLiteStorage(_BaseStorage):
    """SQLite (the embedded default), in WAL mode so the web process can read meanwhile."""

    PARAM = "?"
    INSERT_MESSAGES = (
        "INSERT INTO messages (user_id, msg_id, message, value, key, timestamp, received_at, "
        "stream_id, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id, msg_id) DO NOTHING")
    _ADD_FIGURES = (
        "message_count = message_count + excluded.message_count, "
        "value_count = value_count + excluded.value_count, "
        "value_sum = COALESCE(value_sum + excluded.value_sum, value_sum, excluded.value_sum), "
        "value_min = COALESCE(MIN(value_min, excluded.value_min), value_min, "
        "excluded.value_min), "
        "value_max = COALESCE(MAX(value_max, excluded.value_max), value_max, "
        "excluded.value_max), "
        "first_seen = MIN(first_seen, excluded.first_seen), "
        "last_seen = MAX(last_seen, excluded.last_seen), "
        "updated_at = excluded.updated_at")
    UPSERT_STATS = (
        "INSERT INTO user_stats (user_id, message_count, value_count, value_sum, value_min, "
        "value_max, first_seen, last_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id) DO UPDATE SET " + _ADD_FIGURES)
    UPSERT_KEY_STATS = (
        "INSERT INTO key_stats (user_id, key, message_count, value_count, value_sum, "
        "value_min, value_max, first_seen, last_seen, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (user_id, key) DO UPDATE SET " + _ADD_FIGURES)
    INSERT_DEAD_LETTER = (
        "INSERT INTO dead_letters (user_id, stream_id, msg_id, payload, error, attempts, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, stream_id) DO UPDATE "
        "SET error = excluded.error, attempts = excluded.attempts, replayed_at = NULL")
    SELECT_NEW = ("SELECT msg_id FROM messages WHERE committed_at = ? AND user_id = ? "
                  "AND msg_id IN ({marks})")

    def __init__(self, url: URL) -> None:
        super().__init__()
        self._path = url.database or ":memory:"

    def _connect(self) -> Any:
        conn = sqlite3.connect(self._path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")

    def _timestamp(self, iso: str) -> str:
        # The text form SQLAlchemy's SQLite DateTime reads back: microseconds, space separator.
        if len(iso) == 24 and iso[10] == "T" and iso[23] == "Z":
            return f"{iso[:10]} {iso[11:23]}000"
        return iso

    def _datetime(self, moment: dt.datetime) -> Any:
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _classify(self, exc: Exception) -> Exception:
        # OperationalError is SQLite's word for the file or the connection (locked, read-only,
        # disk I/O, no such table); DatabaseError alone is a damaged file. The rest
        # (IntegrityError, DataError, binding errors, integers out of range) is the data.
        if isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError \
                or isinstance(exc, OSError):
            self.close()
            return StorageUnavailable(f"{type(exc).__name__}: {exc}")
        return RowRejected(_describe(exc))


#: What MySQL's own escaping (mysql_real_escape_string) writes for each special character.
_ESCAPES = {"\\": "\\\\", "\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z",
            '"': '\\"', "'": "\\'"}
#: The same as a table of the ASCII characters, for str.translate (its fastest form).
_ASCII_ESCAPES = [_ESCAPES.get(chr(code), chr(code)) for code in range(128)]


def _escaped(text: str) -> str:
    if text.isascii():
        return text.translate(_ASCII_ESCAPES)
    for special, escape in _ESCAPES.items():  # the backslash first: the rest add backslashes
        text = text.replace(special, escape)
    return text


def _quoter(conn: Any) -> Callable[[str], str]:
    """A function quoting a string as an SQL literal for `conn`: with backslash escapes, or
    only doubled quotes when the session's sql_mode has NO_BACKSLASH_ESCAPES."""
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        return lambda text: "'" + text.replace("'", "''") + "'"
    return lambda text: "'" + _escaped(text) + "'"


def _number(value: float | None) -> str:
    """A DOUBLE literal of `value`, as PyMySQL writes one; a value MySQL cannot hold (an
    infinity, not a number) is the row's fault."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        text = repr(value)
        if text in ("inf", "-inf", "nan"):
            raise RowRejected(f"value {text} can not be stored")
        return text if "e" in text else text + "e0"
    return str(int(value))


def is_mysql_outage(exc: BaseException) -> bool:
    """Whether a MySQL/MariaDB error is about the server or the connection, not the data."""
    if isinstance(exc, (OSError, pymysql.err.InterfaceError)):  # sockets, timeouts, closed
        return True
    if not isinstance(exc, pymysql.err.MySQLError):
        return False  # the driver refusing a value it cannot send (ValueError, TypeError…)
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if errno is None:
        # PyMySQL's own refusals carry no number (ProgrammingError "inf can not be used with
        # MySQL"); an OperationalError without one is about the connection.
        return isinstance(exc, pymysql.err.OperationalError)
    return errno in OUTAGE_ERRNOS or errno in CLIENT_ERRNOS


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pymysql.err.MySQLError) and len(exc.args) >= 2 and \
            isinstance(exc.args[0], int):
        return f"({exc.args[0]}) {exc.args[1]}"
    return f"{type(exc).__name__}: {exc}"


def open_storage(database_url: str) -> Storage:
    url = normalize_url(database_url)
    return SQLiteStorage(url) if is_sqlite(url) else MySQLStorage(url)
