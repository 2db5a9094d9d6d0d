"""One ingest path for socket.io events and HTTP batches: validate, append, answer per message."""

from __future__ import annotations

from typing import Any

from engine import streams
from engine.errors import UnavailableError, ValidationError
from engine.messages import Message, validate
from engine.streams import Limits
from webapp.gateway import Gateway

RATE_LIMITED = "rate limited"
BACKLOG_FULL = "backlog full, retry later"
UNAVAILABLE = "unavailable"
OVERRIDE_WARNING = "user_id: replaced by the authenticated user"

_REFUSALS = {streams.RATE_LIMITED: RATE_LIMITED, streams.BACKLOG_FULL: BACKLOG_FULL}


def ingest(gateway: Gateway, user_id: str, limits: Limits, items: list[Any]) -> list[dict]:
    """Validate and append one user's messages; one answer per item, in order.

    An accepted message is `{ok: true, id, msg_id}` (plus `user_id` and `warning` when the
    payload named another user); a refused one is `{ok: false, error, msg_id?}`. Invalid items
    are never written; valid ones around them are.
    """
    max_bytes = gateway.settings.MAX_MESSAGE_BYTES
    answers: list[dict | None] = [None] * len(items)
    valid: list[tuple[int, Message]] = []
    for index, raw in enumerate(items):
        try:
            valid.append((index, validate(raw, user_id, max_bytes)))
        except ValidationError as exc:
            answers[index] = _refused(str(exc), raw.get("msg_id") if isinstance(raw, dict)
                                      else None)
    if valid:
        try:
            statuses = gateway.append(user_id, limits, [message.data for _, message in valid])
        except UnavailableError:
            statuses = [UNAVAILABLE] * len(valid)
        for (index, message), status in zip(valid, statuses):
            if status == UNAVAILABLE or status in _REFUSALS:
                answers[index] = _refused(_REFUSALS.get(status, UNAVAILABLE), message.msg_id)
            else:
                answer: dict[str, Any] = {"ok": True, "id": status, "msg_id": message.msg_id}
                if message.user_overridden:
                    answer["user_id"] = user_id
                    answer["warning"] = OVERRIDE_WARNING
                answers[index] = answer
    return answers  # type: ignore[return-value]


def _refused(error: str, msg_id: object) -> dict[str, Any]:
    answer: dict[str, Any] = {"ok": False, "error": error}
    if isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool):
        answer["msg_id"] = msg_id
    return answer
