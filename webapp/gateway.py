"""The ingest gateway of one web process: validated messages in, Redis stream entries out.

Handlers hand their messages to the gateway with a callback and return at once. A single flusher
greenlet takes everything queued since its last round trip and sends it as one pipeline of
ingest.lua calls, which apply each user's backlog cap and rate limit and XADD atomically (on one
Redis a call carries many users, on a cluster one). That is group commit: under load each round
trip carries many messages, and an idle server answers at once. A callback gets the entry ids
(or refusal codes) only after Redis has the messages; only then is the client acknowledged. A
socket.io event is answered from the flusher, so a connection's reader goes on to its next
message meanwhile; an HTTP request waits for its callback (`append`).

With ACK_REPLICAS above 0, each flush ends with one WAIT on the same connection (on Redis
Cluster, one per master the flush touched, see engine/replication.py): its messages are
acknowledged only once that many replicas hold them, and answered "unavailable" (a retry with
the same msg_id is stored once) when the replicas do not confirm in ACK_REPLICAS_TIMEOUT.

When Redis fails, every queued message is answered "unavailable" at once, and new messages are
refused immediately until the next attempt is due (backoff capped at a few seconds), so clients
hear "unavailable" within a bounded time and the server recovers by itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import gevent
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from redis import Redis
from redis.cluster import RedisCluster

from engine import liveness, replication, streams
from engine.connections import REDIS_FAILURES
from engine.errors import RedisUnavailable
from engine.outage import Outage
from engine.settings import Settings
from engine.streams import Limits
from webapp.batching import Batcher
from webapp.users import ACCOUNT_CACHE_SECONDS

if TYPE_CHECKING:
    from webapp.metrics import WebMetrics

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0
HEARTBEAT_TTL = 30.0
#: Connects authorized in one round trip at most (see `connected`).
CONNECTS_PER_ROUND_TRIP = 256
#: Longest pause between two attempts while Redis is down.
MAX_RETRY_DELAY = 2.0
#: The status of a message Redis did not take (down, or did not answer in time).
UNAVAILABLE = "U"

#: Called with one status per message: an entry id, or a refusal code (streams.RATE_LIMITED,
#: streams.BACKLOG_FULL, UNAVAILABLE).
Done = Callable[[list[str]], None]


@dataclass(slots=True)
class _Append:
    user_id: str
    limits: Limits
    data: Sequence[bytes]
    done: Done
    #: When the handler queued it (perf_counter), for the ack latency.
    at: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class _Connect:
    user_id: str
    jti: str
    issued_at: float
    #: The account's record as just read from the database (webapp/accounts.py), to cache in
    #: the same call; None to read the cached one.
    account: bytes | None = None


class Gateway:
    """Appends messages to user streams with group commit; tracks this process's connections."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.instance = liveness.instance_name()
        self.socket_limits = Limits("socket", settings.RATE_LIMIT, settings.RATE_BURST,
                                    settings.MAX_BACKLOG_PER_USER)
        self.http_limits = Limits("http", settings.HTTP_RATE_LIMIT, settings.HTTP_RATE_BURST,
                                  settings.MAX_BACKLOG_PER_USER)
        self.outage = Outage("Redis", log, first_delay=0.25, max_delay=MAX_RETRY_DELAY)
        self.users: dict[str, str] = {}  # socket.io sid -> user id
        self._queued: list[_Append] = []
        self._wake = Event()
        self._greenlets: list[gevent.Greenlet] = []
        #: Disconnects not recorded in Redis yet, one user id each (a user may lose several).
        self._unclosed: list[str] = []
        self._closing = Event()
        self._closes_failing = False
        #: Users counted out to no connection, not yet marked closing (user id -> time).
        self._marks: dict[str, int] = {}
        self._close_lock = Semaphore()
        #: Connects waiting together share one round trip (`_open`).
        self._connects: Batcher[_Connect, tuple[bool, list[Any]]] = Batcher(
            self._open, CONNECTS_PER_ROUND_TRIP)
        self._stopped = False
        #: Whether the last WAIT fell short of ACK_REPLICAS (logged when that changes).
        self._replicas_short = False
        #: Messages Redis took, since start (counted per flush, not per message).
        self.accepted_total = 0
        #: What this process counts for Prometheus (webapp/metrics.py); None: nothing.
        self.metrics: WebMetrics | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the flusher and heartbeat greenlets (idempotent)."""
        if not self._greenlets:
            self._greenlets = [gevent.spawn(self._flusher), gevent.spawn(self._closer),
                               gevent.spawn(self._heartbeat)]
            log.info("gateway %s started", self.instance)

    def stop(self) -> None:
        """Flush what is queued, record the disconnects, stop the greenlets and withdraw this
        instance's heartbeat."""
        self._stopped = True
        if self._queued:
            self._flush(self._take())
        with self._close_lock:  # waits for a round trip of the closer's in flight
            gevent.killall(self._greenlets)
        self._greenlets = []
        self._record_disconnects()
        with contextlib.suppress(*REDIS_FAILURES):
            liveness.withdraw(self.redis, liveness.WEB, self.instance)

    # --- connections ---------------------------------------------------------------------------

    def connected(self, sid: str, user_id: str, jti: str, issued_at: float,
                  account: bytes | None = None) -> tuple[str, Any]:
        """Authorize a new connection of the user with a token (its id and issued-at) and
        record it (streams.open_authorized_many); returns open.lua's status and detail, or
        ("revoked", None) when the token itself was revoked. Only "open" records the
        connection. `account` is the account's record just read from the database, cached in
        the same call when no copy is (after an "uncached" answer). Raises RedisUnavailable
        when Redis is down.

        The connects waiting at the same moment share one round trip, sent by the connector
        greenlet (as the flusher does for messages): in a reconnect storm thousands of
        connects cost a few dozen pipelines instead of a pooled connection and a round trip
        each, and while one round trip is out the next connects gather for the following."""
        answer = self._connects.call(_Connect(user_id, jti, issued_at, account))
        if isinstance(answer, Exception):
            raise RedisUnavailable(str(answer)) from answer
        revoked, reply = answer
        status = str(reply[0])
        if revoked:
            return "revoked", None
        if status == "open":
            self.users[sid] = user_id
            if self.metrics is not None:
                self.metrics.connects += 1
        return status, reply[-1]

    def _open(self, batch: list[_Connect]) -> list[tuple[bool, list[Any]] | Exception]:
        """One round trip for the connects of `batch` (and one more when some need it: a
        revoked token that open.lua counted in, a stream it created): each one's answer."""
        try:
            answers = streams.open_authorized_many(
                self.redis, [(c.user_id, c.jti, c.issued_at, c.account) for c in batch],
                self.instance, ACCOUNT_CACHE_SECONDS)
            opened = [(c.user_id, a) for c, a in zip(batch, answers)
                      if not isinstance(a, Exception) and str(a[1][0]) == "open"]
            revoked = [user_id for user_id, (was_revoked, _) in opened if was_revoked]
            created = [user_id for user_id, (was_revoked, reply) in opened
                       if not was_revoked and int(reply[1])]
            if revoked:  # counted in by open.lua: count them out again
                remaining = streams.close_connections(self.redis, revoked, self.instance)
                streams.mark_closing(self.redis, streams.left_with_none(remaining))
            if created:
                streams.register(self.redis, created)
        except Exception as exc:  # every connect of the batch is answered, whatever happened
            if not isinstance(exc, REDIS_FAILURES):
                log.exception("could not authorize %d connects", len(batch))
            return [exc] * len(batch)
        self.outage.succeeded()
        return answers

    def redis_failed(self, exc: BaseException) -> None:
        """Note a Redis failure met outside the flusher (a connect, a token check), so that the
        outage is logged once, however many clients run into it."""
        self.outage.failed(exc.__cause__ or exc)

    def disconnected(self, sid: str) -> None:
        """Forget a connection; its count in Redis goes down from the closer greenlet, which
        records every disconnect since its last round trip at once (thousands of clients
        leaving together cost a few round trips, not one pooled connection each)."""
        user_id = self.users.pop(sid, None)
        if user_id is None:
            return
        if not self._greenlets and not self._stopped:
            self.start()
        self._unclosed.append(user_id)
        self._closing.set()

    def _closer(self) -> None:
        while True:
            self._closing.wait()
            self._closing.clear()
            if not self._record_disconnects():
                gevent.sleep(MAX_RETRY_DELAY)
                self._closing.set()

    def _record_disconnects(self) -> bool:
        """Record the disconnects not recorded yet; False when Redis failed (they are kept).

        Once Redis has counted a batch out, it is never sent again (counting twice would make
        a connected user look gone); only marking the queues left with no connection closing,
        which is harmless to repeat, is retried.
        """
        with self._close_lock:
            user_ids, self._unclosed = self._unclosed, []
            try:
                if user_ids:
                    remaining = streams.close_connections(self.redis, user_ids, self.instance)
                    user_ids = []
                    self._marks.update(streams.left_with_none(remaining))
                streams.mark_closing(self.redis, self._marks)
                self._marks = {}
            except REDIS_FAILURES as exc:
                self._unclosed[:0] = user_ids
                if not self._closes_failing:
                    log.warning("could not record %d disconnects (%s); will retry",
                                len(self._unclosed) + len(self._marks), exc)
                self._closes_failing = True
                return False
        if self._closes_failing:
            log.info("recorded the disconnects held back by a Redis failure")
            self._closes_failing = False
        return True

    # --- appending -----------------------------------------------------------------------------

    def submit(self, user_id: str, limits: Limits, data: Sequence[bytes], done: Done) -> None:
        """Queue one user's encoded messages; `done` is called with their statuses once Redis
        answered (from the flusher greenlet), or at once when Redis is known to be down."""
        if not self.outage.attempt_due():
            done([UNAVAILABLE] * len(data))
            return
        if not self._greenlets:
            self.start()
        self._queued.append(_Append(user_id, limits, data, done))
        self._wake.set()

    def append(self, user_id: str, limits: Limits, data: Sequence[bytes]) -> list[str]:
        """Append one user's encoded messages and wait for their statuses, at most
        INGEST_TIMEOUT seconds (then every one is UNAVAILABLE; it may still have been written,
        and a retry with the same msg_id is a no-op in storage)."""
        result: AsyncResult = AsyncResult()
        self.submit(user_id, limits, data, result.set)
        try:
            return result.get(timeout=self.settings.INGEST_TIMEOUT)  # type: ignore[no-any-return]
        except gevent.Timeout:
            return [UNAVAILABLE] * len(data)

    def _take(self) -> list[_Append]:
        batch, self._queued = self._queued, []
        return batch

    def _flusher(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            batch = self._take()
            if batch:
                self._flush(batch)

    def _flush(self, batch: list[_Append]) -> None:
        if not self.outage.attempt_due():  # failed while these waited: answer them now
            self._answer_all(batch, UNAVAILABLE)
            return
        groups: dict[tuple[str, Limits], list[_Append]] = defaultdict(list)
        for item in batch:
            groups[(item.user_id, item.limits)].append(item)
        appends = [(user_id, limits, [data for item in items for data in item.data])
                   for (user_id, limits), items in groups.items()]
        started = time.perf_counter()
        try:
            replies, confirmed = self._append(appends)
        except REDIS_FAILURES as exc:
            self.outage.failed(exc)
            self._answer_all(batch, UNAVAILABLE)
            return
        answered = time.perf_counter()
        self.outage.succeeded()
        for items, reply, held in zip(groups.values(), replies, confirmed):
            if isinstance(reply, Exception):
                if not (self._per_master and isinstance(reply, replication.LOST)):
                    log.error("append refused by Redis for %s: %s", items[0].user_id, reply,
                              extra={"user": items[0].user_id})
                self._answer_all(items, UNAVAILABLE)
                continue
            _, statuses = streams.parse_append(reply)
            if not held:
                statuses = [UNAVAILABLE if "-" in status else status for status in statuses]
            self.accepted_total += sum(1 for status in statuses if "-" in status)
            start = 0
            for item in items:
                _answer(item, statuses[start:start + len(item.data)])
                start += len(item.data)
        if self.metrics is not None:
            self._measure(self.metrics, batch, started, answered)

    def _append(self, appends: list[tuple[str, Limits, list[bytes]]]) -> tuple[list[Any],
                                                                             list[bool]]:
        """Append in one round trip: each item's reply (or error), and whether ACK_REPLICAS
        replicas hold it. On one Redis a single WAIT ends the pipeline; on a cluster each
        master's share ends with its own (engine/replication.py)."""
        wanted = self.settings.ACK_REPLICAS
        timeout_ms = int(self.settings.ACK_REPLICAS_TIMEOUT * 1000)
        if self._per_master:
            replies, counts = replication.append_confirmed(cast(RedisCluster, self.redis),
                                                           appends, wanted, timeout_ms)
            heard = [count for count, reply in zip(counts, replies)
                     if not isinstance(reply, Exception)]
            if heard:
                self._replicas_confirmed(min(heard))
            return replies, [count >= wanted for count in counts]
        replies = streams.append_all(self.redis, appends, wanted, timeout_ms)
        confirmed = self._replicas_confirmed(replies.pop()) if wanted else True
        return replies, [confirmed] * len(replies)

    @property
    def _per_master(self) -> bool:
        """Whether flushes go out per master (engine/replication.py, which logs a master it
        loses once per outage) rather than as one pipeline."""
        return bool(self.settings.ACK_REPLICAS) and isinstance(self.redis, RedisCluster)

    def _replicas_confirmed(self, reply: object) -> bool:
        """Whether a WAIT reply says ACK_REPLICAS replicas hold this flush's messages (on a
        cluster: the fewest any master of the flush reported)."""
        wanted = self.settings.ACK_REPLICAS
        short = not isinstance(reply, int) or reply < wanted
        if short != self._replicas_short:
            self._replicas_short = short
            if short:
                log.warning("only %s of %d replicas confirmed within %.2f s: messages are "
                            "answered 'unavailable' until they do", reply, wanted,
                            self.settings.ACK_REPLICAS_TIMEOUT)
            else:
                log.info("%d replicas confirm again: messages are acknowledged", wanted)
        return not short

    @staticmethod
    def _measure(metrics: WebMetrics, batch: list[_Append], started: float,
                 answered: float) -> None:
        """One flush's figures: its round trip, its size, each message's wait for Redis."""
        metrics.append_seconds.observe(answered - started)
        acks, size = metrics.ack_seconds, 0
        for item in batch:
            size += len(item.data)
            acks[item.limits.path].observe(answered - item.at)
        metrics.flush_messages.observe(size)

    @staticmethod
    def _answer_all(items: list[_Append], status: str) -> None:
        for item in items:
            _answer(item, [status] * len(item.data))

    # --- liveness ------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Say this process is alive, with its connections and the rate of messages it took."""
        last_total, last_at = self.accepted_total, time.monotonic()
        while True:
            now = time.monotonic()
            rate = (self.accepted_total - last_total) / max(now - last_at, 1e-3)
            last_total, last_at = self.accepted_total, now
            try:
                liveness.beat(self.redis, liveness.WEB, self.instance, HEARTBEAT_TTL,
                              {"instance": self.instance, "pid": os.getpid(),
                               "connections": len(self.users),
                               "accepted_total": self.accepted_total,
                               "accepted_per_second": round(rate, 1)})
            except REDIS_FAILURES as exc:
                log.debug("heartbeat of %s failed: %s", self.instance, exc)
            gevent.sleep(HEARTBEAT_EVERY)


def _answer(item: _Append, statuses: list[str]) -> None:
    """Hand `item` its statuses; a failing callback must not stop the flusher."""
    try:
        item.done(statuses)
    except Exception:
        log.exception("answering the messages of %s failed", item.user_id)
