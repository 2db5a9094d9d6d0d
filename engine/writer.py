"""Turning a batch of stream entries into committed rows, and sorting out the ones that fail.

One batch is one transaction (see storage.py). When the database refuses the batch for a data
reason, the batch is bisected: halves are retried until the refused entries stand alone, so
every good row commits and only the bad ones are retried. A refused entry counts one failed
attempt (in Redis, so the count survives engine restarts); at MAX_DELIVERIES it moves to
`dead_letters`, and is then acknowledged and deleted like a written one. Until then it stays
pending, and the entries after it of the same user are held back with it: within a user, no
row is ever committed before the rows of earlier entries.

An entry that is not a Tributary message at all (not our JSON) cannot succeed on a retry, so it
goes to `dead_letters` at once. An entry without a body was deleted while pending: there is
nothing to write or to keep, so it is only acknowledged.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from engine import streams
from engine.errors import RowRejected, StorageUnavailable
from engine.messages import decode
from engine.storage import Row, Storage
from engine.streams import Entry

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one batch."""

    #: Entries whose rows are committed (new or already there), per user, in stream order.
    written: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: msg_ids of the written entries, per user (for the receipts).
    msg_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Entries moved to dead_letters, per user: (entry id, msg_id or None, error).
    dead: dict[str, list[tuple[str, str | None, str]]] = field(
        default_factory=lambda: defaultdict(list))
    #: Entries deleted while pending (no body left), per user: acknowledged, nothing written.
    gone: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Users with an entry left pending after a refusal; their later entries wait with it.
    held: set[str] = field(default_factory=set)
    #: Keys of the written rows, per user (whose live key aggregates may have changed).
    keys: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: Rows really inserted (the rest were redeliveries).
    inserted: int = 0
    #: Refusals of a row by the database in this batch (each counted once per attempt).
    refused: int = 0
    #: Set when the database became unavailable part-way; what is above was still committed.
    unavailable: StorageUnavailable | None = None

    def to_acknowledge(self) -> dict[str, list[str]]:
        done: dict[str, list[str]] = {user: list(ids) for user, ids in self.written.items()}
        for user, dead in self.dead.items():
            done.setdefault(user, []).extend(entry_id for entry_id, _, _ in dead)
        for user, gone in self.gone.items():
            done.setdefault(user, []).extend(gone)
        return done


class BatchWriter:
    """Writes batches of entries through a Storage, with bisection and dead letters."""

    def __init__(self, storage: Storage, redis: Redis, max_deliveries: int) -> None:
        self.storage = storage
        self.redis = redis
        self.max_deliveries = max_deliveries

    def write(self, entries: Sequence[Entry], held: set[str] | None = None) -> Outcome:
        """Write what can be written of `entries`; users in `held` are skipped entirely."""
        outcome = Outcome(held=set(held or ()))
        rows: list[tuple[Row, Entry]] = []
        try:
            for entry in entries:
                if entry.user_id in outcome.held:
                    continue
                if entry.data is None:
                    log.warning("entry %s of user %s was deleted while pending; acknowledged",
                                entry.entry_id, entry.user_id, extra=_context(entry))
                    outcome.gone[entry.user_id].append(entry.entry_id)
                    continue
                try:
                    message = decode(entry.data)
                except ValueError as exc:
                    self._dead_letter(entry, None, f"not a Tributary message: {exc}", 1,
                                      outcome)
                    continue
                rows.append((row_of(entry, message), entry))
            self._write(rows, outcome)
        except StorageUnavailable as exc:
            outcome.unavailable = exc
        return outcome

    def _write(self, rows: list[tuple[Row, Entry]], outcome: Outcome) -> None:
        rows = [pair for pair in rows if pair[0].user_id not in outcome.held]
        if not rows:
            return
        try:
            outcome.inserted += self.storage.write([row for row, _ in rows])
        except RowRejected as exc:
            if len(rows) == 1:
                self._refused(rows[0], str(exc), outcome)
                return
            middle = len(rows) // 2
            self._write(rows[:middle], outcome)
            self._write(rows[middle:], outcome)
            return
        for row, _ in rows:
            outcome.written[row.user_id].append(row.stream_id)
            outcome.msg_ids[row.user_id].append(row.msg_id)
            if row.key is not None:
                outcome.keys[row.user_id].add(row.key)

    def _refused(self, pair: tuple[Row, Entry], error: str, outcome: Outcome) -> None:
        row, entry = pair
        outcome.refused += 1
        attempts = streams.record_failure(self.redis, row.user_id, row.stream_id)
        if attempts >= self.max_deliveries:
            self._dead_letter(entry, row.msg_id, error, attempts, outcome)
            return
        log.warning("entry %s of user %s refused by the database (attempt %d of %d): %s",
                    row.stream_id, row.user_id, attempts, self.max_deliveries, error,
                    extra=_context(entry, row.msg_id))
        outcome.held.add(row.user_id)

    def _dead_letter(self, entry: Entry, msg_id: str | None, error: str, attempts: int,
                     outcome: Outcome) -> None:
        try:
            self.storage.dead_letter(entry.user_id, entry.entry_id, _safe_msg_id(msg_id),
                                     entry.data or "", error, attempts)
        except RowRejected as exc:
            log.error("cannot dead-letter entry %s of user %s: %s; it stays pending",
                      entry.entry_id, entry.user_id, exc, extra=_context(entry, msg_id))
            outcome.held.add(entry.user_id)
            return
        log.error("entry %s of user %s moved to dead_letters after %d attempt(s): %s",
                  entry.entry_id, entry.user_id, attempts, error, extra=_context(entry, msg_id))
        outcome.dead[entry.user_id].append((entry.entry_id, msg_id, error))


def _context(entry: Entry, msg_id: str | None = None) -> dict[str, Any]:
    """Fields of a log line about one entry."""
    return {"user": entry.user_id, "entry_id": entry.entry_id,
            **({"msg_id": msg_id} if msg_id is not None else {})}


def _safe_msg_id(msg_id: str | None) -> str | None:
    return msg_id if msg_id is not None and len(msg_id) <= 64 else None


def row_of(entry: Entry, message: dict[str, Any]) -> Row:
    """The row of a stream entry whose body decoded to `message`; it was received when Redis
    stamped its entry id."""
    return Row(entry.user_id, entry.entry_id, message["msg_id"], message["message"],
               message.get("value"), message.get("key"), message["timestamp"],
               int(entry.entry_id.split("-", 1)[0]))
