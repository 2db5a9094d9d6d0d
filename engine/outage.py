"""Following one dependency through an outage: log it once when it starts and once when it ends,
and space the attempts in between with a doubling delay, capped."""

from __future__ import annotations

import logging
import time


def duration(seconds: float) -> str:
    """A delay for the log: "250ms" below a second, else seconds to one decimal ("1.5s", "60s")."""
    if round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)}ms"
    return f"{seconds:.1f}".removesuffix(".0") + "s"


class Outage:
    """The state of one dependency (Redis, the database) as seen by one process."""

    def __init__(self, what: str, logger: logging.Logger, *, first_delay: float = 0.5,
                 max_delay: float = 60.0) -> None:
        self.what = what
        self.log = logger
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.since: float | None = None
        self.delay = first_delay
        self.next_attempt = 0.0
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def attempt_due(self) -> bool:
        """Whether the next attempt may be made now (always true while the dependency is up)."""
        return self.since is None or time.monotonic() >= self.next_attempt

    def failed(self, error: BaseException) -> float:
        """Record a failed attempt; returns the seconds to wait before the next one."""
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since = now
            self.delay = self.first_delay
            self.log.error("%s unavailable (%s: %s); retrying with backoff up to %s",
                           self.what, type(error).__name__, error, duration(self.max_delay))
        else:
            self.delay = min(self.delay * 2, self.max_delay)
        self.next_attempt = now + self.delay
        return self.delay

    def succeeded(self) -> None:
        """Record a successful attempt; logs the end of an outage."""
        if self.since is not None:
            self.log.warning("%s available again after %.1fs (%d failed attempts)", self.what,
                             time.monotonic() - self.since, self.failures)
            self.since = None
            self.failures = 0
            self.delay = self.first_delay
