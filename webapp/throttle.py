"""Login throttling: per client address and per username, checked before any password is
hashed, shared by every web process through Redis.

Two token buckets (engine/lua/bucket.lua). Every login or registration attempt takes a token
from its address's bucket; every failed login takes one from its username's bucket, which is
looked at (not taken from) before the password is verified. Either bucket empty: 429 with
`Retry-After`, and no hash is computed, so a flood costs the process a Redis round trip per
attempt instead of 70 ms of a core. A username under attack stays locked only while failures
keep coming; its owner's next login goes through once the bucket refills.

A bucket Redis found empty is remembered in the process until it holds a token again
(`_blocked`): a flood's further attempts are refused without a Redis round trip, and their 429
says `Connection: close` and counts as an offence of the address, so that each costs the
flooder new connections, which webapp/admission.py limits. Redis stays the truth shared by the
processes: nothing but time refills a bucket, so what a process remembers is never more lenient
than Redis.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from redis import Redis

from engine import keys, scripts, streams
from engine.connections import REDIS_FAILURES
from engine.errors import RedisUnavailable
from engine.scripts import execute_scripts
from engine.settings import Settings


@dataclass(frozen=True)
class Bucket:
    """A limit of `limit` attempts per `window` seconds; a limit of 0 disables it."""

    limit: int
    window: float

    @property
    def rate(self) -> float:
        return self.limit / self.window


class LoginThrottle:
    """Decides whether a login (or registration) attempt may go on to the password hash."""

    #: Empty buckets remembered at most; past it, those refilled are forgotten, then all.
    MAX_BLOCKED = 10_000

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.by_address = Bucket(settings.LOGIN_ADDRESS_LIMIT, settings.LOGIN_ADDRESS_WINDOW)
        self.by_username = Bucket(settings.LOGIN_USERNAME_LIMIT,
                                  settings.LOGIN_USERNAME_WINDOW)
        #: Redis key of a bucket found empty -> monotonic time it holds a token again.
        self._blocked: dict[str, float] = {}

    def attempt(self, address: str | None, username: str | None = None) -> int:
        """Count an attempt from `address` (for `username`, when it is a login); returns 0
        when it may go on, else the seconds to wait before trying again."""
        calls: list[tuple[str, Bucket, int]] = []
        if self.by_address.limit:
            calls.append((keys.login_address_bucket(address or "unknown"), self.by_address, 1))
        if username is not None and self.by_username.limit:
            calls.append((keys.login_username_bucket(username), self.by_username, 0))
        if self._blocked and calls:
            now = time.monotonic()
            until = max(self._blocked.get(key, 0.0) for key, _, _ in calls)
            if until > now:
                return math.ceil(until - now)
        return self._take(calls)

    def failed(self, username: str) -> None:
        """Count a failed login of `username`."""
        if self.by_username.limit:
            self._take([(keys.login_username_bucket(username), self.by_username, 1)])

    def _take(self, calls: list[tuple[str, Bucket, int]]) -> int:
        if not calls:
            return 0
        now = streams.now_ms()
        pipe = self.redis.pipeline(transaction=False)
        for key, bucket, cost in calls:
            scripts.BUCKET.queue(pipe, [key], [now, bucket.rate, bucket.limit, cost])
        try:
            replies = execute_scripts(self.redis, pipe)
        except REDIS_FAILURES as exc:
            raise RedisUnavailable("cannot check the login throttle") from exc
        for reply in replies:
            if isinstance(reply, Exception):
                raise RedisUnavailable(f"cannot check the login throttle: {reply}")
        wait_ms = max(int(reply) for reply in replies)
        if wait_ms:
            self._remember(calls, replies)
        return math.ceil(wait_ms / 1000) if wait_ms else 0

    def _remember(self, calls: list[tuple[str, Bucket, int]], replies: list[int]) -> None:
        """Remember the buckets Redis found empty until they hold a token again."""
        now = time.monotonic()
        if len(self._blocked) >= self.MAX_BLOCKED:
            self._blocked = {key: until for key, until in self._blocked.items() if until > now}
            if len(self._blocked) >= self.MAX_BLOCKED:
                self._blocked.clear()
        for (key, _, _), reply in zip(calls, replies):
            if int(reply):
                self._blocked[key] = now + int(reply) / 1000
