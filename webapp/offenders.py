"""Warnings about clients that break the rules, written so that no client can flood the log.

The rule is one warning line per offending connection: whoever detects the offence writes the
line and ends the connection, so the next packet of a flood finds nobody to warn about. That
bounds the lines an authenticated user can cause by the connections the user opens. Clients
nobody authenticated (a malformed packet before CONNECT, a session that never joins, a slow or
oversized HTTP request) cost an attacker nothing to open by the thousand, so their lines are
also rate-limited: at most ANONYMOUS_LINES per ANONYMOUS_WINDOW seconds, then one line saying
how many more there were.

Deadlines for such clients are spread (`spread`): a flood opened at once would otherwise come
due at once, and closing hundreds of connections in one turn of the event loop delays every
other client's acks by as much.

Whoever ends a connection (or refuses a request) for an offence also calls `offence` with the
client's address: the process's per-address admission (webapp/admission.py), once installed
with `on_offence`, charges that address OFFENCE_COST new connections, so that an address whose
connections keep breaking the rules gets few new ones.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import gevent

#: Lines about unauthenticated clients written one by one per window; the rest are counted.
ANONYMOUS_LINES = 5
#: Seconds of that window.
ANONYMOUS_WINDOW = 10.0
#: A deadline for a client that gets nowhere falls between its setting and this many times it.
DEADLINE_SPREAD = 1.5

#: New connections an offence costs the offender's address.
OFFENCE_COST = 10

log = logging.getLogger(__name__)
#: What `offence` tells: the process's admission, once installed.
_charge: Callable[[str, int], None] | None = None


def spread(seconds: float) -> float:
    """A deadline of at least `seconds` and at most DEADLINE_SPREAD times it, drawn uniformly."""
    return seconds * random.uniform(1.0, DEADLINE_SPREAD)


class _AnonymousLimit:
    """A fixed window of ANONYMOUS_LINES lines; what it holds back is summed up at its end."""

    def __init__(self) -> None:
        self.window_end = 0.0
        self.written = 0
        self.held_back = 0

    def admit(self) -> bool:
        now = time.monotonic()
        if now >= self.window_end:
            self.window_end, self.written = now + ANONYMOUS_WINDOW, 0
        if self.written < ANONYMOUS_LINES:
            self.written += 1
            return True
        if not self.held_back:
            gevent.spawn_later(self.window_end - now, self.summarize)
        self.held_back += 1
        return False

    def summarize(self) -> None:
        held_back, self.held_back = self.held_back, 0
        if held_back:
            log.warning("%d more lines about unauthenticated clients in the last %.0f s were not "
                        "logged one by one", held_back, ANONYMOUS_WINDOW)


_anonymous = _AnonymousLimit()


def warn(logger: logging.Logger, user_id: str | None, message: str, *args: Any,
         level: int = logging.WARNING) -> None:
    """Log a line (a warning, unless `level` says otherwise) about a client: always when
    `user_id` names the authenticated user it belongs to, within the rate limit when the client
    is unauthenticated (None)."""
    if (user_id is not None or _anonymous.admit()) and logger.isEnabledFor(level):
        logger.log(level, message, *args)


def who(user_id: str | None, peer: str | None) -> str:
    """How a warning names a client: `user alice at 10.0.0.7`, or `an unauthenticated client
    at 10.0.0.7`."""
    return f"user {user_id} at {peer}" if user_id is not None else \
        f"an unauthenticated client at {peer}"


def on_offence(charge: Callable[[str, int], None] | None) -> None:
    """Install what `offence` calls with an offender's address and OFFENCE_COST (None: nothing)."""
    global _charge
    _charge = charge


def offence(peer: str | None) -> None:
    """A connection (or request) of the client at `peer` was ended (refused) for breaking the
    rules."""
    if _charge is not None and peer:
        _charge(peer, OFFENCE_COST)
