"""The committer thread: batches reach the database one at a time and in order, an entry is
acknowledged only once the transaction holding it committed, and the loop really does its Redis
work (acknowledging the batch before, reading the next streams) while a batch is in the
database."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from engine import keys, scripts
from engine.committer import Committer
from engine.settings import Settings
from engine.storage import Row, open_storage
from engine.sweeper import STREAMS_PER_READ, Sweeper
from tests.conftest import TEST_DATABASE_URL, TEST_JWT_SECRET, wait_until
from tests.engine_support import (
    append_many,
    order_violations,
    payload,
    pending_total,
    row_count,
    stats_mismatches,
    written_ids,
)

# --- the hand-off on its own ---------------------------------------------------------------------


def test_jobs_run_on_another_thread_one_at_a_time_and_their_results_come_back_in_order():
    committer: Committer[tuple[int, str]] = Committer()
    results = []
    for number in range(5):
        committer.submit(lambda number=number: (number, threading.current_thread().name))
        results.append(committer.take())

    assert [number for number, _ in results] == [0, 1, 2, 3, 4]
    assert {name for _, name in results} == {"committer"}


def test_a_second_job_is_refused_until_the_first_ones_result_is_taken_back():
    committer: Committer[int] = Committer()
    release = threading.Event()
    committer.submit(lambda: int(release.wait(10)))
    assert committer.busy

    with pytest.raises(RuntimeError, match="take its result first"):
        committer.submit(lambda: 2)

    release.set()
    assert committer.take() == 1
    assert not committer.busy and committer.take() is None  # nothing left in hand
    committer.submit(lambda: 3)  # so a new job is taken
    assert committer.take() == 3


def test_what_a_job_raises_is_raised_where_its_result_is_taken():
    committer: Committer[int] = Committer()

    def refuse() -> int:
        raise LookupError("refused")

    committer.submit(refuse)
    with pytest.raises(LookupError, match="refused"):
        committer.take()
    committer.submit(lambda: 7)  # the thread lives on
    assert committer.take() == 7


# --- the engine's pipeline, watched ---------------------------------------------------------------

@dataclass
class Seen:
    """What Redis said while one batch was in the database, its transaction not yet committed,
    with the loop waiting for it (so the loop had done all it does meanwhile)."""

    batch: list[tuple[str, str]]
    acknowledged_of_batch: list[tuple[str, str]]
    unacknowledged_before: list[tuple[str, str]]
    read_not_yet_written: int


@dataclass
class WatchedStorage:
    """The real storage, watched from the committer thread: before each batch's transaction it
    waits until the engine's loop is blocked on that batch, then notes what Redis shows. A spy
    on the real database, not a replacement for it."""

    inner: object
    redis: object
    loop: threading.Thread
    seen: list[Seen] = field(default_factory=list)
    written: list[tuple[str, str]] = field(default_factory=list)

    def write(self, rows: Sequence[Row]) -> int:
        wait_until(self._loop_waits, 10, interval=0.005, what="the loop to wait for this batch")
        batch = [(row.user_id, row.stream_id) for row in rows]
        pending = self._pending()
        self.seen.append(Seen(
            batch=batch,
            acknowledged_of_batch=[entry for entry in batch if entry not in pending],
            unacknowledged_before=[entry for entry in self.written if entry in pending],
            read_not_yet_written=len(pending - set(batch) - set(self.written))))
        inserted = self.inner.write(rows)  # type: ignore[attr-defined]
        self.written.extend(batch)
        return inserted

    def _loop_waits(self) -> bool:
        frame = sys._current_frames().get(self.loop.ident or 0)
        while frame is not None:
            if frame.f_code.co_name == "take" and frame.f_code.co_filename.endswith(
                    "committer.py"):
                return True
            frame = frame.f_back
        return False

    def _pending(self) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for stream in self.redis.scan_iter(match=keys.STREAM_PATTERN):  # type: ignore[attr-defined]
            user = keys.user_from_stream(stream)
            for item in self.redis.xpending_range(  # type: ignore[attr-defined]
                    stream, keys.GROUP, min="-", max="+", count=100_000):
                found.add((str(user), item["message_id"]))
        return found

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def watched_engine(mysql_backend) -> Iterator[tuple[Sweeper, WatchedStorage]]:
    settings = Settings.load(environ={"REDIS_URL": mysql_backend.redis_url,
                                      "DATABASE_URL": TEST_DATABASE_URL,
                                      "JWT_SECRET_KEY": TEST_JWT_SECRET,
                                      "BATCH_MAX": "500", "BATCH_SIZE_THRESHOLD": "1"},
                             env_file=None)
    storage = WatchedStorage(open_storage(TEST_DATABASE_URL), mysql_backend.redis,
                             threading.current_thread())
    engine = Sweeper(settings, storage=storage)  # type: ignore[arg-type]
    scripts.load_all(engine.redis)
    try:
        yield engine, storage
    finally:
        storage.inner.close()  # type: ignore[attr-defined]
        engine.redis.close()


USERS = [f"user{n:03d}" for n in range(STREAMS_PER_READ + 50)]  # two reads per pass


def fill(client, per_user: int = 20) -> None:
    append_many(client, {user: [payload(f"{user}-{n}", value=float(n)) for n in range(per_user)]
                         for user in USERS})


def test_no_entry_is_acknowledged_before_the_transaction_holding_it_committed(
        mysql_backend, watched_engine):
    engine, storage = watched_engine
    fill(mysql_backend.redis)

    engine.sweep()

    assert len(storage.seen) == 6  # 3,000 entries in batches of 500
    for seen in storage.seen:
        assert seen.acknowledged_of_batch == [], "acknowledged while still in the database"
    assert row_count(mysql_backend.db) == 3000
    assert len(set(written_ids(mysql_backend.db))) == 3000
    assert pending_total(mysql_backend.redis, USERS) == 0
    assert sum(mysql_backend.redis.xlen(keys.stream(user)) for user in USERS) == 0
    assert order_violations(mysql_backend.db) == []
    assert stats_mismatches(mysql_backend.db) == []


def test_the_batch_before_is_acknowledged_and_the_next_streams_read_while_a_batch_commits(
        mysql_backend, watched_engine):
    engine, storage = watched_engine
    fill(mysql_backend.redis)

    engine.sweep()

    # Each batch found every earlier one acknowledged by the time the loop waited for it: the
    # loop acknowledges batch N after handing batch N+1 over, before it waits for N+1.
    assert [seen.unacknowledged_before for seen in storage.seen] == [[]] * len(storage.seen)
    # The first read covers 100 streams (2,000 entries, four batches); while the fourth of
    # them was in the database the loop had already read the other 50 streams.
    fourth = storage.seen[3]
    assert {user for user, _ in fourth.batch} <= set(USERS[:STREAMS_PER_READ])
    assert fourth.read_not_yet_written == 1000
