"""The audit log: one `audit_log` row per operator action (replay, delete, purge, pause, resume,
write now, disable, enable, role change, token revocation, user creation, forgetting a
process): who, what, on which object, when, from where, and how it ended.

    with audited("pause", "queue:alice") as entry:
        changed = control.pause(...)
        entry.detail = None if changed else "was paused already"

records `ok` when the block completes, `failed` (with the error) when it raises, and the
exception goes on. Refusals are recorded by the caller with `record(..., DENIED, ...)`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import has_request_context, request
from flask_login import current_user

from engine.schema import audit_log
from webapp.extensions import services

log = logging.getLogger(__name__)

OK, FAILED, DENIED = "ok", "failed", "denied"
#: Longest detail text kept (the column is TEXT; details are short sentences and id lists).
MAX_DETAIL = 2000


@dataclass
class Entry:
    action: str
    target: str
    outcome: str = OK
    detail: str | None = None


def _actor() -> str:
    if has_request_context() and current_user and current_user.is_authenticated:
        return str(current_user.get_id())
    return "anonymous"


def record(action: str, target: str, outcome: str, detail: str | None = None) -> None:
    """Write one row now, in its own transaction."""
    actor = _actor()
    address = request.remote_addr if has_request_context() else None
    with services().db.begin() as conn:
        conn.execute(audit_log.insert().values(
            at=dt.datetime.now(dt.UTC).replace(tzinfo=None), actor=actor[:64],
            action=action[:32], target=target[:255], outcome=outcome,
            detail=detail[:MAX_DETAIL] if detail else None,
            address=address[:64] if address else None))
    log.info("audit: %s %s %s: %s%s", actor, action, target, outcome,
             f" ({detail[:200]})" if detail else "")


@contextmanager
def audited(action: str, target: str) -> Iterator[Entry]:
    entry = Entry(action, target)
    try:
        yield entry
    except Exception as exc:
        record(action, target, FAILED, f"{type(exc).__name__}: {exc}")
        raise
    record(action, target, entry.outcome, entry.detail)
