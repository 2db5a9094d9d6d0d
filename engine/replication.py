"""Appends acknowledged only once replicas hold them, on Redis Cluster: one WAIT per master.

WAIT counts the replicas holding the writes of the node it is sent to, so a flush spread over
several masters needs one WAIT on each. The appends are grouped by the master of each user's
slot; each group goes out on a connection to its master and ends with its own WAIT. Every master
gets its commands before any reply is read, so the WAITs run side by side (one round trip, as
long as the slowest master). An append counts as confirmed only by its own master's WAIT.

A master that fails (refused, dropped or timed-out connection) fails its own appends only; they
may have run, and are answered like any other unconfirmed append (the client resends with the
same msg_id, which is stored once). Appends answered MOVED, ASK, TRYAGAIN or NOSCRIPT did not
run: they are sent again, after the slot map or the script cache is put right, at most ROUNDS
times in all. (While a slot migrates, a user whose two keys are not both on one side gets
TRYAGAIN, then 'unavailable', until the migration is done: Redis runs no script over keys
split between two nodes.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine import keys, scripts, streams
from engine.connections import REDIS_FAILURES
from engine.streams import Limits

log = logging.getLogger(__name__)

#: Round trips one flush may take: the first, and resends of appends that were redirected
#: (MOVED, ASK), met a slot in migration (TRYAGAIN) or an emptied script cache (NOSCRIPT),
#: none of which ran.
ROUNDS = 3

#: Seconds a master that failed is left alone (its appends answered at once) before it is tried
#: again, and the least time between two refreshes of the slot map on its account.
RETRY_FAILED_AFTER = 0.25

#: Answers to a call that did not run, and may be sent again.
_RESEND = (MovedError, AskError, TryAgainError, NoScriptError)
#: A connection to a master refused, dropped or timed out: its commands may or may not have run.
LOST = (RedisConnectionError, RedisTimeoutError)

Appends = Sequence[tuple[str, Limits, Sequence[bytes]]]


class _Failing:
    """Masters of this process's last flushes that failed: name -> when to try it again. Each
    is logged once when it fails and once when it answers again, not once per flush."""

    def __init__(self) -> None:
        self.retry_at: dict[str, float] = {}

    def skip(self, name: str) -> bool:
        return time.monotonic() < self.retry_at.get(name, 0.0)

    def failed(self, client: RedisCluster, name: str, error: Exception, appends: int) -> None:
        if name not in self.retry_at:
            log.warning("master %s failed (%s: %s): its appends are answered 'unavailable' "
                        "until it, or a replica promoted in its place, answers", name,
                        type(error).__name__, error)
        elif not self.skip(name):
            log.debug("master %s failed again; %d appends answered 'unavailable'", name, appends)
        else:
            return
        self.retry_at[name] = time.monotonic() + RETRY_FAILED_AFTER
        try:
            client.nodes_manager.initialize()  # learns of a replica promoted in its place
        except REDIS_FAILURES as exc:
            log.debug("refreshing the cluster's slot map failed: %s", exc)

    def answered(self, name: str) -> None:
        if self.retry_at.pop(name, None) is not None:
            log.info("master %s answers again", name)


_FAILING = _Failing()


@dataclass(slots=True)
class _Node:
    """One round's commands to one master: ingest.lua calls (each with its item's index) and
    the ASKING before a call an ASK sent there (index None), ending with the WAIT."""

    node: ClusterNode
    commands: list[tuple[Any, ...]] = field(default_factory=list)
    indexes: list[int | None] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)

    def add(self, command: tuple[Any, ...], index: int | None) -> None:
        self.commands.append(command)
        self.indexes.append(index)

    def answers(self) -> list[tuple[int, Any]]:
        """(item, reply) of each ingest.lua call."""
        return [(index, reply) for index, reply in zip(self.indexes, self.replies)
                if index is not None]

    def confirmed(self) -> int:
        """Replicas that confirmed, by the WAIT's reply (0 when it failed)."""
        wait = self.replies[-1]
        return wait if isinstance(wait, int) and not isinstance(wait, bool) else 0


def append_confirmed(client: RedisCluster, appends: Appends, replicas: int,
                     timeout_ms: int) -> tuple[list[Any], list[int]]:
    """Append several users' messages (one ingest.lua call each), each master's share followed
    by `WAIT replicas timeout_ms` on that master, and register the queues this created.

    Returns, per item of `appends`, ingest.lua's reply or the error met for it (nothing is
    raised: a failing master fails its own items), and how many replicas of its master
    confirmed it (0 when its WAIT did not answer). An item may be acknowledged only when its
    reply is not an error and its count reaches `replicas`."""
    now = streams.now_ms()
    evals = [_evalsha(user_id, limits, data, now) for user_id, limits, data in appends]
    replies: list[Any] = [None] * len(appends)
    confirmed = [0] * len(appends)
    todo = list(range(len(appends)))
    asked: dict[int, ClusterNode] = {}  # item -> the node an ASK sent it to
    for round_ in range(ROUNDS):
        groups = _group(client, appends, todo, asked, evals, replies)
        for group in groups:
            group.add(("WAIT", replicas, timeout_ms), None)
        _round_trip(client, groups)
        todo, asked = [], {}
        for group in groups:
            count = group.confirmed()
            for index, reply in group.answers():
                if isinstance(reply, list):  # a call for one user: that user's reply
                    [reply] = reply
                replies[index] = reply
                confirmed[index] = 0 if isinstance(reply, Exception) else count
                if isinstance(reply, _RESEND):
                    todo.append(index)
                    if isinstance(reply, AskError):
                        asked[index] = _node_of(client, reply)
            _follow(client, group, last=round_ == ROUNDS - 1)
        if not todo:
            break
    created = [user_id for (user_id, _, _), reply in zip(appends, replies)
               if isinstance(reply, list) and reply[0]]
    try:
        streams.register(client, created)  # type: ignore[arg-type]
    except REDIS_FAILURES as exc:  # the engines' reconciliation registers them (see register)
        log.warning("could not register %d new queues (%s); the engines will", len(created), exc)
    return replies, confirmed


def _evalsha(user_id: str, limits: Limits, data: Sequence[bytes], now: int) -> tuple[Any, ...]:
    names, args = streams.ingest_arguments([(user_id, limits, data)], now)
    return ("EVALSHA", scripts.INGEST.sha, len(names), *names, *args)


def _group(client: RedisCluster, appends: Appends, todo: list[int],
           asked: dict[int, ClusterNode], evals: list[tuple[Any, ...]],
           replies: list[Any]) -> list[_Node]:
    """The items of `todo` by master: the master of the user's slot, or the node an ASK named
    (then preceded by ASKING). An item whose slot has no known master now gets that error."""
    groups: dict[str, _Node] = {}
    for index in todo:
        try:
            node = asked.get(index) or client.get_node_from_key(keys.stream(appends[index][0]))
        except REDIS_FAILURES as exc:  # a slot not covered while a failover goes on
            replies[index] = exc
            continue
        group = groups.setdefault(node.name, _Node(node))
        if index in asked:
            group.add(("ASKING",), None)
        group.add(evals[index], index)
    return list(groups.values())


def _round_trip(client: RedisCluster, groups: list[_Node]) -> None:
    """Write every group's commands to its master, then read every reply; a group whose
    connection fails gets that error for each of its commands."""
    sent: list[tuple[_Node, Redis, Any]] = []
    for group in groups:
        if _FAILING.skip(group.node.name):
            group.replies = [RedisConnectionError(f"master {group.node.name} failed just now")] \
                * len(group.commands)
            continue
        redis_node = client.get_redis_connection(group.node)
        pool = redis_node.connection_pool
        connection = None
        try:
            connection = pool.get_connection()
            connection.send_packed_command(connection.pack_commands(group.commands))
        except LOST as exc:
            group.replies = [exc] * len(group.commands)
            if connection is not None:
                connection.disconnect()
                pool.release(connection)
            continue
        sent.append((group, redis_node, connection))
    for group, redis_node, connection in sent:
        try:
            group.replies = [_reply(redis_node, connection, command[0])
                             for command in group.commands]
        except LOST as exc:
            group.replies = [exc] * len(group.commands)
            connection.disconnect()  # replies may still be on their way: never reuse it
        finally:
            redis_node.connection_pool.release(connection)


def _reply(redis_node: Redis, connection: Any, command: str) -> Any:
    try:
        return redis_node.parse_response(connection, command)
    except LOST:
        raise
    except RedisError as exc:  # this command's error only (MOVED, NOSCRIPT, a wrong type)
        return exc


def _follow(client: RedisCluster, group: _Node, *, last: bool) -> None:
    """Put right what this master's answers say is out of date: the slot map after a MOVED or
    a failed connection, the script cache after a NOSCRIPT; say once per round what failed."""
    answers = [reply for _, reply in group.answers()]
    failed = next((a for a in group.replies if isinstance(a, LOST)),
                  None)
    if failed is not None:
        _FAILING.failed(client, group.node.name, failed, len(answers))
        return
    _FAILING.answered(group.node.name)
    for answer in answers:
        if isinstance(answer, MovedError):
            client.nodes_manager.move_slot(answer)
    if any(isinstance(answer, NoScriptError) for answer in answers):
        scripts.load_all(client.get_redis_connection(group.node))
    if last and any(isinstance(a, _RESEND) for a in answers):
        log.warning("appends to master %s were still redirected or told to try again after "
                    "%d rounds",
                    group.node.name, ROUNDS)


def _node_of(client: RedisCluster, error: AskError) -> ClusterNode:
    node = client.get_node(host=error.host, port=error.port)
    return node if node is not None else ClusterNode(error.host, error.port)
