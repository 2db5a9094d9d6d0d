"""One ingest path for socket.io events and HTTP batches: validate, append, answer per message.

Before any message is validated, the user's items are counted against an in-process token
bucket with the path's rate and burst (`Allowance`): what is beyond it is answered "rate
limited" at once, unvalidated. The authoritative limit is the bucket in Redis (ingest.lua),
which counts only messages that were valid; this one counts every item a user sends, valid or
not, so that a client posting thousands of invalid items per request (which cost validation and
an answer each, and never reached the Redis bucket) is held to the same rate as everyone.

A user who sends more than a whole burst beyond its allowance in one event is flooding: for as
long as its bucket takes to refill, its long-polling bodies larger than one message are not
even decoded (`refuse_unread`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from engine import streams
from engine.errors import ValidationError
from engine.messages import Message, validate
from engine.streams import Limits
from webapp import gateway as gateway_module
from webapp.gateway import Gateway

RATE_LIMITED = "rate limited"
BACKLOG_FULL = "backlog full, retry later"
UNAVAILABLE = "unavailable"
OVERRIDE_WARNING = "user_id: replaced by the authenticated user"

_REFUSALS = {streams.RATE_LIMITED: RATE_LIMITED, streams.BACKLOG_FULL: BACKLOG_FULL,
             gateway_module.UNAVAILABLE: UNAVAILABLE}
#: The same refusals as metric labels (webapp/metrics.py REFUSALS).
_REASONS = {streams.RATE_LIMITED: "rate_limited", streams.BACKLOG_FULL: "backlog_full",
            gateway_module.UNAVAILABLE: "unavailable"}


class Allowance:
    """Per-user token buckets of one process, one per ingest path."""

    #: Users kept before idle (full) buckets are forgotten.
    PRUNE_AT = 10_000

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        #: Users who sent one event of more items beyond their allowance than a whole burst
        #: (no client of ours does) -> until when that is remembered (a refill of the bucket).
        self._flooding: dict[tuple[str, str], float] = {}

    def take(self, user_id: str, limits: Limits, wanted: int) -> int:
        """How many of `wanted` items the user may have validated now (all when the path has
        no rate limit); those are taken from the bucket."""
        if limits.rate <= 0:
            return wanted
        now = time.monotonic()
        key = (limits.path, user_id)
        tokens, at = self._buckets.get(key, (float(limits.burst), now))
        tokens = min(float(limits.burst), tokens + (now - at) * limits.rate)
        granted = min(wanted, int(tokens))
        self._buckets[key] = (tokens - granted, now)
        if wanted - granted > limits.burst:
            if len(self._flooding) > self.PRUNE_AT:
                self._flooding = {k: t for k, t in self._flooding.items() if t > now}
            self._flooding[key] = now + limits.burst / limits.rate
        if len(self._buckets) > self.PRUNE_AT:
            self._prune(now, limits)
        return granted

    def left(self, user_id: str, limits: Limits) -> float:
        """The items the user may have validated now on the path (infinite without a rate
        limit); nothing is taken."""
        if limits.rate <= 0:
            return math.inf
        state = self._buckets.get((limits.path, user_id))
        if state is None:
            return float(limits.burst)
        tokens, at = state
        return min(float(limits.burst), tokens + (time.monotonic() - at) * limits.rate)

    def flooding(self, user_id: str, limits: Limits) -> bool:
        """Whether the user sent, within the time its bucket takes to refill, one event of
        more items beyond its allowance than the whole burst."""
        return self._flooding.get((limits.path, user_id), 0.0) > time.monotonic()

    def _prune(self, now: float, limits: Limits) -> None:
        full = [key for key, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * limits.rate >= limits.burst]
        for key in full:
            del self._buckets[key]


#: The process's allowance (one gateway per web process).
allowance = Allowance()


def largest_item_bytes(max_message_bytes: int) -> int:
    """The most bytes one valid message takes in JSON: its text with every byte escaped
    (`\u0000`, 6 bytes), and its other fields."""
    return 6 * max_message_bytes + 1024


def refuse_unread(user_id: str, limits: Limits, body_bytes: int, max_message_bytes: int) -> bool:
    """Whether a request body of `body_bytes` from the user is to be refused without decoding
    it (webapp/realtime/engineio_session.py): it is larger than one message can be, and either
    the user is flooding (`Allowance.flooding`), or the body is larger than as many messages
    of the largest size as the user may have validated now could be (so some of its messages
    are certainly over the rate, or too large to be valid)."""
    largest = largest_item_bytes(max_message_bytes)
    if body_bytes <= largest:
        return False
    return allowance.flooding(user_id, limits) or \
        body_bytes > (allowance.left(user_id, limits) + 1) * largest


def ingest(gateway: Gateway, user_id: str, limits: Limits, items: list[Any]) -> list[dict]:
    """Validate and append one user's messages, waiting for Redis; one answer per item, in
    order (see `submit`)."""
    answers, valid = _validate(gateway, user_id, limits, items)
    if valid:
        statuses = gateway.append(user_id, limits, [message.data for _, message in valid])
        _settle(gateway, user_id, limits, answers, valid, statuses)
    return answers  # type: ignore[return-value]


def submit(gateway: Gateway, user_id: str, limits: Limits, items: list[Any],
           done: Callable[[list[dict]], None]) -> None:
    """Validate and queue one user's messages; `done` gets one answer per item, in order, once
    Redis has the valid ones (at once when none is valid).

    An accepted message is `{ok: true, id, msg_id}` (plus `user_id` and `warning` when the
    payload named another user); a refused one is `{ok: false, error, msg_id?}`. Invalid items
    are never written; valid ones around them are.
    """
    answers, valid = _validate(gateway, user_id, limits, items)
    if not valid:
        done(answers)  # type: ignore[arg-type]
        return

    def settle(statuses: list[str]) -> None:
        _settle(gateway, user_id, limits, answers, valid, statuses)
        done(answers)  # type: ignore[arg-type]

    gateway.submit(user_id, limits, [message.data for _, message in valid], settle)


def _validate(gateway: Gateway, user_id: str, limits: Limits,
              items: list[Any]) -> tuple[list[dict | None], list[tuple[int, Message]]]:
    max_bytes = gateway.settings.MAX_MESSAGE_BYTES
    answers: list[dict | None] = [None] * len(items)
    valid: list[tuple[int, Message]] = []
    allowed = allowance.take(user_id, limits, len(items))
    for index, raw in enumerate(items):
        if index >= allowed:
            answers[index] = _refused(RATE_LIMITED, raw.get("msg_id") if isinstance(raw, dict)
                                      else None)
            continue
        try:
            valid.append((index, validate(raw, user_id, max_bytes)))
        except ValidationError as exc:
            answers[index] = _refused(str(exc), raw.get("msg_id") if isinstance(raw, dict)
                                      else None)
    metrics = gateway.metrics
    if metrics is not None:
        metrics.received[limits.path] += len(items)
        if allowed < len(items):
            metrics.refused[limits.path, "rate_limited"] += len(items) - allowed
        if len(valid) < allowed:
            metrics.refused[limits.path, "invalid"] += min(allowed, len(items)) - len(valid)
    return answers, valid


def _settle(gateway: Gateway, user_id: str, limits: Limits, answers: list[dict | None],
            valid: list[tuple[int, Message]], statuses: list[str]) -> None:
    refused = 0
    for (index, message), status in zip(valid, statuses):
        if status in _REFUSALS:
            answers[index] = _refused(_REFUSALS[status], message.msg_id)
            refused += 1
            if gateway.metrics is not None:
                gateway.metrics.refused[limits.path, _REASONS[status]] += 1
        else:
            answer: dict[str, Any] = {"ok": True, "id": status, "msg_id": message.msg_id}
            if message.user_overridden:
                answer["user_id"] = user_id
                answer["warning"] = OVERRIDE_WARNING
            answers[index] = answer
    if gateway.metrics is not None:
        gateway.metrics.accepted[limits.path] += len(valid) - refused


def _refused(error: str, msg_id: object) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error": error}
    if isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool):
        answer["msg_id"] = msg_id
    return answer
