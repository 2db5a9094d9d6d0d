"""The engine's loop: sweep the user streams every SWEEP_INTERVAL and drain them into the
database in large batches, acknowledging entries only after their rows committed.

    bootstrap → install signal handlers → while not stopping:
        maintenance (heartbeat; every RECONCILE_EVERY: registry, dead consumers, idle queues)
        sweep: measure the backlog; when it reaches BATCH_SIZE_THRESHOLD, or the oldest entry
               is older than MAX_BATCH_AGE, drain:
                   per chunk of streams: take the users' leases → claim what dead or stuck
                   engines left pending → XREADGROUP (own pending entries first, then new
                   ones) → transactions of up to BATCH_MAX rows → COMMIT → XACK + XDEL →
                   receipts; then hand back the leases beyond this engine's share.
                   Transactions run on the committer thread (engine/committer.py), one
                   batch at a time: while batch N+1 commits, this loop acknowledges batch N
                   and reads the next streams
               and keep draining while the backlog stays at or above the threshold
        remove the queues of users who left and whose streams are empty
        wait for the next sweep
    → teardown

Stopping (written down, and in this order): the first SIGTERM or SIGINT stops reading; the
batch in hand is committed and acknowledged; leases are released and the heartbeat withdrawn;
connections close; exit 0. A second signal exits at once with status 1: the entries in hand
stay pending and another engine (or this one, restarted) claims them. A warm stop that hangs is
cut off after STOP_TIMEOUT by SIGALRM, the same way (one warning line, exit status 1).

Order: one engine at a time holds a user's stream (a lease with a TTL, taken or renewed right
before each read). It reads the stream only when no other consumer still holds an earlier entry
of it, and commits a user's entries in stream order, so no row of a user is ever committed
before the row of an earlier entry. Sharing: after each pass an engine hands back the leases it
holds beyond its share of the active streams (streams / live engines), so that every engine
gets work.
Fairness: each pass reads at most PER_STREAM_COUNT entries from every stream, so a user with a
huge backlog does not keep one with a few entries waiting beyond the pass.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError
from sqlalchemy.pool import NullPool

from engine import control, keys, liveness, metrics, recovery, scripts, streams
from engine.committer import Committer
from engine.connections import REDIS_FAILURES, check_redis, connect_redis
from engine.db import create_db
from engine.errors import (
    RowRejected,
    StartupCheckError,
    StopRequested,
    StopTimedOut,
    StorageUnavailable,
)
from engine.logs import bind_process
from engine.metrics import EngineCollector, Histogram, MetricsServer, process_registry
from engine.outage import Outage, duration
from engine.receipts import ReceiptEmitter
from engine.schema import check_schema
from engine.settings import Settings
from engine.storage import Storage, open_storage
from engine.streams import Entry
from engine.writer import BatchWriter, Outcome

log = logging.getLogger(__name__)

#: Most entries read from one stream in one pass (fairness between users).
PER_STREAM_COUNT = 1000
#: Streams named in one XREADGROUP call.
STREAMS_PER_READ = 100
#: Seconds between registry reconciliation, dead-consumer clean-up and idle-queue checks.
RECONCILE_EVERY = 60.0
#: What a warm stop's goodbye, and the figures of followed keys, give up on with a warning.
GOODBYE_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, StorageUnavailable)
FIGURES_FAILURES: tuple[type[Exception], ...] = (*GOODBYE_FAILURES, RowRejected)


@dataclass
class Stats:
    """The engine's figures, for the heartbeat, the dashboard room and Prometheus
    (engine/metrics.py reads them when scraped). Updated by the engine's loop only."""

    rows_total: int = 0
    batches_total: int = 0
    dead_letters_total: int = 0
    last_batch_size: int = 0
    last_commit_ms: float = 0.0
    backlog: int = 0
    pending: int = 0
    #: Time (epoch ms) of the oldest entry not yet written, paused queues included.
    oldest_ms: int | None = None
    rows_per_second: float = 0.0
    oldest_age_seconds: float = 0.0
    active_streams: int = 0
    live_engines: int = 0
    claimed_total: int = 0
    redelivered_total: int = 0
    sweeps_total: int = 0
    last_commit_at: float = 0.0
    rows_by_outcome: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("inserted", "duplicate", "dead_lettered", "deleted"), 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("redis", "database", "row_rejected"), 0))
    batch_rows: Histogram = field(default_factory=lambda: Histogram(metrics.BATCH_SIZES))
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(metrics.COMMIT_SECONDS))
    ingest_lag: Histogram = field(default_factory=lambda: Histogram(metrics.LAG_SECONDS))
    _window: list[tuple[float, int]] = field(default_factory=list)

    def committed(self, rows: int, seconds: float) -> None:
        now = time.monotonic()
        self.rows_total += rows
        self.batches_total += 1
        self.last_batch_size = rows
        self.last_commit_ms = round(seconds * 1000, 1)
        self.last_commit_at = time.time()
        self.batch_rows.observe(rows)
        self.commit_seconds.observe(seconds)
        self._window.append((now, rows))
        self.refresh_rate(now)

    def written(self, outcome: Outcome, committed_ms: int) -> None:
        """Count what became of a batch's entries; the lag of each written one is the commit
        time minus the time in its entry id (when Redis took it, just before the ack)."""
        written = sum(len(ids) for ids in outcome.written.values())
        dead = sum(len(entries) for entries in outcome.dead.values())
        counts = self.rows_by_outcome
        counts["inserted"] += outcome.inserted
        counts["duplicate"] += written - outcome.inserted
        counts["dead_lettered"] += dead
        counts["deleted"] += sum(len(ids) for ids in outcome.gone.values())
        self.errors["row_rejected"] += outcome.refused
        self.ingest_lag.observe_many(
            (committed_ms - int(entry_id.split("-", 1)[0])) / 1000
            for ids in outcome.written.values() for entry_id in ids)

    def refresh_rate(self, now: float) -> None:
        self._window = [(t, n) for t, n in self._window if now - t <= 10.0]
        self.rows_per_second = round(sum(n for _, n in self._window) / 10.0, 1)

    def public(self) -> dict[str, Any]:
        """The plain figures (no histograms), for the heartbeat and the dashboard room."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and isinstance(v, (int, float))}


@dataclass
class Written:
    """A batch back from the committer thread: what became of its entries, how long its
    transaction took, when it committed, and the new figures of followed keys it wrote."""

    entries: int
    outcome: Outcome
    seconds: float
    committed_ms: int
    figures: dict[tuple[str, str], dict[str, Any]]


#: A hook called between a batch's COMMIT and its XACK, with the engine and the number of
#: entries about to be acknowledged, like dramatiq's after_* middleware hooks. Production sets
#: none; the tests add one to stop or kill an engine at that very point.
AfterCommit = Callable[["Sweeper", int], None]


class Sweeper:
    """One engine process: one consumer of the `writers` group."""

    def __init__(self, settings: Settings, storage: Storage | None = None,
                 after_commit: Sequence[AfterCommit] = ()) -> None:
        self.settings = settings
        self.after_commit = list(after_commit)
        self.name = liveness.instance_name()
        bind_process(consumer=self.name)
        self.redis: Redis = streams.raw_replies(
            connect_redis(settings, timeout=max(settings.REDIS_TIMEOUT, 5.0)))
        self.storage = storage or open_storage(settings.DATABASE_URL)
        self.writer = BatchWriter(self.storage, self.redis, settings.MAX_DELIVERIES)
        #: Runs every transaction, while this thread reads and acknowledges in Redis.
        self.committer: Committer[Written] = Committer()
        self.receipts = ReceiptEmitter(self.redis, settings.SOCKETIO_CHANNEL)
        self.redis_outage = Outage("Redis", log, max_delay=settings.RETRY_MAX_DELAY)
        self.db_outage = Outage("database", log, max_delay=settings.RETRY_MAX_DELAY)
        self.stats = Stats()
        self.metrics: MetricsServer | None = None
        self.stop_requested = False
        self.leases: set[str] = set()
        #: Streams whose lease this engine handed back to share the work, until when.
        self.handed_back: dict[str, float] = {}
        self.live_engines: set[str] = set()
        self.next_beat = 0.0
        self.next_reconcile = 0.0
        #: Set when an operator asked for a sweep now ("write now"), by the listener thread.
        self.sweep_asked = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; returns the exit status."""
        self.bootstrap()
        self.install_signal_handlers()
        cold = False
        try:
            while not self.stop_requested:
                started = time.monotonic()
                try:
                    self.maintenance()
                    self.sweep()
                except REDIS_FAILURES as exc:
                    self.stats.errors["redis"] += 1
                    self.wait(self.redis_outage.failed(exc))
                    continue
                except StorageUnavailable as exc:
                    self.stats.errors["database"] += 1
                    self.wait(self.db_outage.failed(exc))
                    continue
                self.redis_outage.succeeded()
                self.wait(self.settings.SWEEP_INTERVAL - (time.monotonic() - started))
            log.info("engine %s stopping: nothing more is read; the batch in hand is committed",
                     self.name)
        except StopTimedOut:
            cold = True
            log.warning("engine %s: stop timed out after %s; exiting, entries in hand stay "
                        "pending and will be claimed", self.name,
                        duration(self.settings.STOP_TIMEOUT))
        except StopRequested:
            cold = True
            log.warning("engine %s: second stop signal, exiting at once; entries in hand stay "
                        "pending and will be claimed", self.name)
        finally:
            cold = self.teardown(cold)
        return 1 if cold else 0

    def bootstrap(self) -> None:
        """Refuse to start on an unfit Redis or database; then announce this consumer."""
        try:
            info = check_redis(self.redis)
        except REDIS_FAILURES as exc:
            raise StartupCheckError(f"cannot reach Redis: {exc}") from exc
        check_schema(create_db(self.settings.DATABASE_URL, poolclass=NullPool))
        scripts.load_all(self.redis)
        if self.settings.METRICS_ENABLED and self.settings.METRICS_PORT:
            self.metrics = MetricsServer(self.settings.HOST, self.settings.METRICS_PORT,
                                         process_registry(EngineCollector(self)))
        self.beat(force=True)
        threading.Thread(target=self._listen_for_sweep_requests, name="sweep-now",
                         daemon=True).start()
        log.info("engine %s started: Redis %s, threshold %d, sweep every %.1fs, max batch age "
                 "%.1fs, batches of up to %d rows", self.name, info["version"],
                 self.settings.BATCH_SIZE_THRESHOLD, self.settings.SWEEP_INTERVAL,
                 self.settings.MAX_BATCH_AGE, self.settings.BATCH_MAX)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGALRM, self._on_stop_timeout)

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        # Only flags here: the loop notices them between steps. The second signal escalates;
        # any later one is ignored, also during interpreter shutdown, which would otherwise put
        # back the default action and let a late signal end the process with its own status.
        if self.stop_requested:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            raise StopRequested(signal.Signals(signum).name)
        self.stop_requested = True
        signal.setitimer(signal.ITIMER_REAL, self.settings.STOP_TIMEOUT)
        with contextlib.suppress(BlockingIOError):  # a wake-up is already pending
            os.write(self._wake_w, b"!")

    def _on_stop_timeout(self, _signum: int, _frame: Any) -> None:
        # The alarm set by the first stop signal: the warm stop hangs (a statement waiting on a
        # lock, say). Cut it off as a second signal would; later signals are ignored.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise StopTimedOut(f"warm stop over {self.settings.STOP_TIMEOUT}s")

    def _listen_for_sweep_requests(self) -> None:
        """Wake the loop when an operator asks for a sweep now (a thread of its own: the loop
        waits on its wake-up pipe, not on Redis). Ends with the process."""
        outage = Outage("Redis (sweep requests)", log, max_delay=self.settings.RETRY_MAX_DELAY)
        while not self.stop_requested:
            try:  # a Redis Cluster client connects when made: it may fail here already
                listener = connect_redis(self.settings,
                                         timeout=max(self.settings.REDIS_TIMEOUT, 5.0))
            except REDIS_FAILURES as exc:
                time.sleep(outage.failed(exc))
                continue
            pubsub = listener.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.SWEEP_NOW)
                outage.succeeded()
                while not self.stop_requested:
                    if pubsub.get_message(timeout=1.0) is not None:
                        log.info("engine %s: a sweep was asked for", self.name)
                        self.sweep_asked = True
                        with contextlib.suppress(BlockingIOError):
                            os.write(self._wake_w, b"s")
            except REDIS_FAILURES as exc:
                time.sleep(outage.failed(exc))
            finally:
                pubsub.close()
                listener.close()

    def wait(self, seconds: float) -> None:
        """Sleep until the next step is due or a stop is requested, keeping the heartbeat."""
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stop_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            ready, _, _ = select.select([self._wake_r], [], [],
                                        min(remaining, self.settings.heartbeat_ttl / 3))
            if ready:
                os.read(self._wake_r, 64)
                if self.sweep_asked:
                    return
            with contextlib.suppress(*REDIS_FAILURES):  # the loop itself reports Redis outages
                self.beat()

    def teardown(self, cold: bool) -> bool:
        """Say goodbye (warm stop only) and close the connections; returns whether the stop
        ended cold (a second signal may still arrive during a warm goodbye)."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        if not cold:
            try:
                self.settle(set())  # a batch left in hand by a pass an outage cut short
                self.receipts.flush()
                streams.release_leases(self.redis, sorted(self.leases), self.name)
                liveness.withdraw(self.redis, liveness.ENGINE, self.name)
            except GOODBYE_FAILURES as exc:
                log.warning("could not withdraw engine %s cleanly: %s", self.name, exc)
            except StopRequested:
                cold = True
                log.warning("engine %s: second stop signal during the warm stop, exiting at "
                            "once", self.name)
        if self.metrics is not None:
            self.metrics.close()
        if not self.committer.busy:  # else a cold stop mid-transaction: the server rolls it back
            self.storage.close()
        self.redis.close()
        log.info("engine %s stopped (%s)", self.name, "cold" if cold else "warm")
        return cold

    # --- maintenance ---------------------------------------------------------------------------

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self.next_beat:
            liveness.beat(self.redis, liveness.ENGINE, self.name, self.settings.heartbeat_ttl,
                          {"pid": os.getpid(), "leases": len(self.leases),
                           **self.stats.public()})
            self.next_beat = now + self.settings.heartbeat_ttl / 3

    def maintenance(self) -> None:
        self.beat()
        self.live_engines = set(liveness.live(self.redis, liveness.ENGINE))
        self.stats.live_engines = len(self.live_engines | {self.name})
        now = time.monotonic()
        if now < self.next_reconcile:
            return
        self.next_reconcile = now + RECONCILE_EVERY
        registered = streams.registered_users(self.redis)
        recovery.reconcile_registry(self.redis, registered)
        recovery.remove_dead_consumers(self.redis, registered, self.live_engines)
        # Queues whose users left without a recorded disconnect (a web process died).
        backlog = streams.measure(self.redis, registered)
        idle = [user for user, (length, _) in backlog.items() if length == 0]
        recovery.remove_idle_queues(self.redis, idle, liveness.live_names(self.redis, liveness.WEB))

    # --- sweeping ------------------------------------------------------------------------------

    def sweep(self) -> None:
        users = streams.registered_users(self.redis)
        backlog = streams.measure(self.redis, users)
        self.stats.backlog = sum(length for length, _ in backlog.values())
        self.stats.oldest_ms = min((ms for _, ms in backlog.values() if ms is not None),
                                   default=None)
        control.record_ranking(self.redis, {user: length for user, (length, _)
                                            in backlog.items()}, self.settings.heartbeat_ttl)
        self.stats.refresh_rate(time.monotonic())
        # Paused queues count as backlog, but neither start a drain nor take part in one.
        for user in control.paused_among(self.redis, [u for u, (n, _) in backlog.items() if n]):
            del backlog[user]
        total = sum(length for length, _ in backlog.values())
        oldest = min((ms for _, ms in backlog.values() if ms is not None), default=None)
        self.stats.sweeps_total += 1
        self.stats.active_streams = sum(1 for length, _ in backlog.values() if length)
        self.stats.oldest_age_seconds = (max(0, streams.now_ms() - oldest) / 1000
                                         if oldest is not None else 0.0)
        asked, self.sweep_asked = self.sweep_asked, False
        if total and (asked or total >= self.settings.BATCH_SIZE_THRESHOLD or
                      (oldest is not None and
                       streams.now_ms() - oldest >= self.settings.MAX_BATCH_AGE * 1000)):
            self.drain(backlog)
        self.remove_closed_queues()
        self.receipts.stats({"engine": self.name, **self.stats.public()})
        self.receipts.flush()

    def drain(self, backlog: dict[str, tuple[int, int | None]]) -> None:
        """Write passes over the users with a backlog while it stays at or over the threshold."""
        while not self.stop_requested:
            active = [user for user, (length, _) in backlog.items() if length]
            if not active or not self.drain_pass(active):
                return
            backlog = streams.measure(self.redis, active)
            self.stats.backlog = sum(length for length, _ in backlog.values())
            if self.stats.backlog < self.settings.BATCH_SIZE_THRESHOLD:
                return

    def drain_pass(self, users: list[str]) -> int:
        """One pass over `users`: returns the entries written or dead-lettered."""
        now = time.monotonic()
        self.handed_back = {user: until for user, until in self.handed_back.items()
                            if until > now}
        users = [user for user in users if user not in self.handed_back]
        handled = 0
        held: list[str] = []
        held_back: set[str] = set()
        batch: list[Entry] = []
        self.stats.pending = 0
        self.settle(held_back)  # a batch left in hand by a pass an outage cut short
        for chunk in _chunks(users, STREAMS_PER_READ):
            if self.stop_requested:
                break
            # Leases are taken (or renewed) right before the read, chunk by chunk: a pass over
            # many users may outlast LEASE_TTL, and a stream must never be read under a
            # lease that has lapsed meanwhile.
            start = self.prepare(chunk, held)
            entries = self.read(start)
            # A user whose own pending entries all came back goes on with its new entries in
            # the same pass: they are part of the backlog that started this drain.
            got = Counter(entry.user_id for entry in entries)
            self.stats.redelivered_total += sum(got[user] for user, at in start.items()
                                                if at == "0")
            resumed = {user: ">" for user, at in start.items()
                       if at == "0" and got[user] < PER_STREAM_COUNT}
            if resumed:
                entries.extend(self.read(resumed))
            batch.extend(entries)
            while len(batch) >= self.settings.BATCH_MAX:
                handled += self.commit(batch[:self.settings.BATCH_MAX], held_back)
                batch = batch[self.settings.BATCH_MAX:]
            self.beat()
        if batch:
            handled += self.commit(batch, held_back)
        handled += self.settle(held_back)
        self.share_leases(users, held, held_back)
        return handled

    def prepare(self, users: list[str], held: list[str]) -> dict[str, str]:
        """Take the leases of `users` and claim what other engines left pending; returns where
        to read each stream this engine may read now: '>' (new entries) or '0' (its own
        pending entries first). Adds the users whose lease it holds to `held`."""
        taken = streams.take_leases(self.redis, users, self.name,
                                    int(self.settings.LEASE_TTL * 1000))
        paused = control.paused_among(self.redis, taken)
        if paused:  # paused since the sweep measured them: hand them back, read nothing
            streams.release_leases(self.redis, sorted(paused), self.name)
            self.leases.difference_update(paused)
            taken = [user for user in taken if user not in paused]
        held.extend(taken)
        self.leases.update(taken)
        holders = streams.pending_by_consumer(self.redis, taken)
        self.stats.pending += sum(sum(h.values()) for h in holders.values())
        start: dict[str, str] = {}
        for user in taken:
            claimed = recovery.claim_from_others(self.redis, user, self.name, holders[user],
                                                 self.live_engines, self.settings.CLAIM_IDLE_MS)
            if claimed is None:
                continue  # an earlier entry is still with another engine: wait for it
            self.stats.claimed_total += claimed
            start[user] = "0" if claimed or holders[user].get(self.name) else ">"
        return start

    def share_leases(self, users: list[str], held: list[str], keep: set[str]) -> None:
        """Hand back the leases this engine holds beyond its share of `users`, so that the
        other live engines get streams to write too: without this, an engine renews every
        lease it holds pass after pass and the others stay idle. Users in `keep` (entries
        still pending here) are kept. A handed-back stream is left alone for two sweeps, time
        for another engine to take it; nobody did if it is free again after that."""
        engines = len(self.live_engines | {self.name})
        share = math.ceil(len(users) / engines)
        if engines == 1 or len(held) <= share:
            return
        surplus = [user for user in held[share:] if user not in keep]
        streams.release_leases(self.redis, surplus, self.name)
        self.leases.difference_update(surplus)
        until = time.monotonic() + 2 * self.settings.SWEEP_INTERVAL
        self.handed_back.update(dict.fromkeys(surplus, until))
        log.debug("engine %s handed back %d of its %d leases (its share: %d of %d users, %d "
                  "engines)", self.name, len(surplus), len(held), share, len(users), engines)

    def read(self, start: dict[str, str]) -> list[Entry]:
        """XREADGROUP over these users; a stream without the group (a stray XADD, a group
        destroyed by hand, a queue removed meanwhile) gets it back or is skipped, instead of
        failing the read of every other user with it."""
        try:
            return streams.read(self.redis, self.name, start, PER_STREAM_COUNT)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        start = {user: at for user, at in start.items()
                 if recovery.restore_group(self.redis, user)}
        return streams.read(self.redis, self.name, start, PER_STREAM_COUNT)

    # --- committing: the loop hands batches to the committer thread ----------------------------

    def commit(self, entries: list[Entry], held_back: set[str]) -> int:
        """Hand a batch to the committer; while the database writes it, finish the batch handed
        over before it (acknowledge, count, receipts). Returns the entries of that earlier
        batch written or dead-lettered."""
        previous = self.collect(held_back)
        held = frozenset(held_back)  # with the refusals of every earlier batch
        self.committer.submit(lambda: self.write(entries, held))
        return self.finish(previous) if previous is not None else 0

    def settle(self, held_back: set[str]) -> int:
        """Take back and finish the batch still with the committer, if there is one."""
        previous = self.collect(held_back)
        return self.finish(previous) if previous is not None else 0

    def collect(self, held_back: set[str]) -> Written | None:
        """Wait for the batch with the committer and run the after-commit hooks: nothing of it
        is acknowledged yet and the next batch is not handed over yet. When the database went
        away part-way, finish what did commit, then raise StorageUnavailable."""
        written = self.committer.take()
        if written is None:
            return None
        outcome = written.outcome
        held_back |= outcome.held
        handled = sum(len(ids) for ids in outcome.to_acknowledge().values())
        if handled:
            for hook in self.after_commit:
                hook(self, handled)
        if outcome.unavailable is not None:
            self.finish(written)
            raise outcome.unavailable
        return written

    def write(self, entries: list[Entry], held: frozenset[str]) -> Written:
        """The committer's job: one batch's transaction, then the figures of the keys it wrote
        that someone follows (the database connection is the committer's alone)."""
        started = time.monotonic()
        outcome = self.writer.write(entries, set(held))
        seconds = time.monotonic() - started
        committed_ms = streams.now_ms()
        figures = self.key_figures(outcome.keys) if outcome.keys else {}
        return Written(len(entries), outcome, seconds, committed_ms, figures)

    def finish(self, written: Written) -> int:
        """Acknowledge what a committed batch wrote or dead-lettered, count it and send its
        receipts; returns the entries acknowledged."""
        outcome = written.outcome
        done = outcome.to_acknowledge()
        handled = sum(len(ids) for ids in done.values())
        if done:
            streams.ack_delete(self.redis, done)
        count = sum(len(ids) for ids in outcome.written.values())
        if count:
            self.db_outage.succeeded()
            self.stats.committed(count, written.seconds)
        self.stats.written(outcome, written.committed_ms)
        for user, msg_ids in outcome.msg_ids.items():
            self.receipts.committed(user, msg_ids, outcome.written[user][-1])
        for user, dead in outcome.dead.items():
            self.stats.dead_letters_total += len(dead)
            for _, msg_id, error in dead:
                self.receipts.dead_lettered(user, msg_id, error)
        for (user, key), figures in written.figures.items():
            self.receipts.key_stats(user, key, figures)
        self.receipts.flush()
        dead_count = sum(len(dead) for dead in outcome.dead.values())
        log.debug("batch of %d entries: %d written (%d new), %d dead-lettered, %d deleted while "
                  "pending, %d users held back, commit %.1f ms", written.entries, count,
                  outcome.inserted, dead_count, handled - count - dead_count,
                  len(outcome.held), written.seconds * 1000)
        return handled

    def key_figures(self, written: dict[str, set[str]]
                    ) -> dict[tuple[str, str], dict[str, Any]]:
        """The new aggregates of the keys just written that someone subscribed to (one Redis
        round trip to learn which, one query for their figures). Best effort, like the
        receipts: the rows are committed whatever happens here."""
        users = list(written)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for user in users:
                pipe.hgetall(keys.subscriptions(user))
            pairs = [(user, key) for user, subscribed in zip(users, pipe.execute())
                     for key in written[user] if int(subscribed.get(key, 0)) > 0]
            return self.storage.key_figures(pairs) if pairs else {}
        except FIGURES_FAILURES as exc:
            log.warning("live aggregates of %d user(s) not sent: %s", len(users), exc)
            return {}

    def remove_closed_queues(self) -> None:
        closing = streams.closing_users(self.redis)
        if closing:
            recovery.remove_idle_queues(self.redis, closing,
                                        liveness.live_names(self.redis, liveness.WEB))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
