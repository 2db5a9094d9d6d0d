"""Revoked tokens, and the live connections they end: at once, on every web process.

What is revoked is recorded in Redis: one token's jti on a denylist until the token would have
expired anyway (logout), or, for a user, the moment before which every token of theirs is void
(an admin revoking them all, or disabling the account). Each revocation is also announced on
the REVOCATIONS pub/sub channel. Every web process keeps the tokens of its live connections
(`LiveTokens`) and ends a connection

- when an announcement names its token or its user;
- when a check of every live token against Redis, every REVOCATION_CHECK_INTERVAL, finds it
  revoked (pub/sub delivers at most once: an announcement sent while this process's
  subscription was down is caught up there, and right after the subscription is back);
- when its token expires.

Ending a connection: the client gets the event `session_ended` `{reason}` ("token revoked",
"account disabled" or "token expired"), then the server disconnects it. The standard client does
not reconnect after a server disconnect; a client that refreshes its token connects again.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
import orjson
from gevent.event import Event
from redis import Redis

from engine import keys
from engine.connections import REDIS_FAILURES
from engine.errors import RedisUnavailable
from engine.outage import Outage

log = logging.getLogger(__name__)

#: What ends a round of listening for revocations: Redis gone, or the check against it.
_LISTEN_FAILURES: tuple[type[Exception], ...] = (*REDIS_FAILURES, RedisUnavailable)

TOKEN_REVOKED = "token revoked"
ACCOUNT_DISABLED = "account disabled"
TOKEN_EXPIRED = "token expired"

#: Ends one connection (by socket.io sid), telling the client why.
EndSession = Callable[[str, str], None]


# --- recording and checking revocations ----------------------------------------------------------

def revoke_token(redis: Redis, claims: dict[str, Any]) -> None:
    """Revoke one token (by its jti) until it would have expired, and announce it."""
    ttl = max(1, math.ceil(float(claims["exp"]) - time.time()) + 1)
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.revoked_token(claims["jti"]), 1, ex=ttl)
    pipe.execute_command("PUBLISH", keys.REVOCATIONS,  # by name: see engine.receipts.flush
                         orjson.dumps({"jti": claims["jti"], "reason": TOKEN_REVOKED}))
    _execute(pipe, "cannot revoke the token")


def revoke_user(redis: Redis, user_id: str, reason: str, keep_seconds: float) -> None:
    """Void every token of `user_id` issued until now, and announce it. `keep_seconds` is the
    lifetime of the longest-lived token (a refresh token): after that, none issued before now
    can still be valid."""
    record = orjson.dumps({"at": time.time(), "reason": reason})
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.tokens_revoked_before(user_id), record, ex=max(1, math.ceil(keep_seconds)))
    pipe.execute_command("PUBLISH", keys.REVOCATIONS,
                         orjson.dumps({"user": user_id, "reason": reason}))
    _execute(pipe, "cannot revoke the user's tokens")


def revocation(redis: Redis, claims: dict[str, Any]) -> str | None:
    """Why a token is revoked ("token revoked", "account disabled"), or None when it is not;
    one round trip."""
    pipe = redis.pipeline(transaction=False)
    pipe.exists(keys.revoked_token(claims["jti"]))
    pipe.get(keys.tokens_revoked_before(claims["sub"]))
    denied, before = _execute(pipe, "cannot check token revocation")
    if denied:
        return TOKEN_REVOKED
    return _voided(before, float(claims.get("iat", 0)))


def _voided(record: bytes | str | None, issued: float) -> str | None:
    """The reason of a user's revoked-before record when it voids a token issued at `issued`."""
    if record is None:
        return None
    mark = orjson.loads(record)
    # `iat` has whole seconds: a token of the same second as the revocation counts as before.
    return str(mark["reason"]) if issued <= mark["at"] else None


def _execute(pipe: Any, what: str) -> list[Any]:
    try:
        return pipe.execute()  # type: ignore[no-any-return]
    except REDIS_FAILURES as exc:
        raise RedisUnavailable(what) from exc


# --- the live connections of one web process ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Token:
    """The token a live connection was authenticated with."""

    user: str
    jti: str
    issued: float
    expires: float


class LiveTokens:
    """The tokens of one web process's live connections, and the greenlets that end those
    connections when their token is revoked or expires."""

    def __init__(self, redis: Redis, end: EndSession, check_interval: float) -> None:
        self.redis = redis
        self.end = end
        self.check_interval = check_interval
        self.by_sid: dict[str, Token] = {}
        self._by_jti: dict[str, set[str]] = {}
        self._by_user: dict[str, set[str]] = {}
        #: (expiry, sid, jti), soonest first; entries of connections gone are skipped lazily.
        self._expiries: list[tuple[float, str, str]] = []
        self._expiry_changed = Event()
        self._greenlets: list[gevent.Greenlet] = []
        self._stopped = False

    # --- bookkeeping -----------------------------------------------------------------------------

    def add(self, sid: str, token: Token) -> None:
        if not self._greenlets and not self._stopped:
            self.start()
        self.by_sid[sid] = token
        self._by_jti.setdefault(token.jti, set()).add(sid)
        self._by_user.setdefault(token.user, set()).add(sid)
        heapq.heappush(self._expiries, (token.expires, sid, token.jti))
        if self._expiries[0][1] == sid:
            self._expiry_changed.set()

    def remove(self, sid: str) -> None:
        token = self.by_sid.pop(sid, None)
        if token is None:
            return
        _discard(self._by_jti, token.jti, sid)
        _discard(self._by_user, token.user, sid)

    def end_sessions(self, sids: Iterable[str], reason: str) -> int:
        """End these connections, telling each client `reason`; returns how many."""
        ended = 0
        for sid in list(sids):
            token = self.by_sid.get(sid)
            if token is None:
                continue
            self.remove(sid)
            log.info("ending connection %s of user %s: %s", sid, token.user, reason)
            try:
                self.end(sid, reason)
            except Exception:
                log.exception("could not end connection %s of user %s", sid, token.user)
            ended += 1
        return ended

    # --- the greenlets ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self._greenlets:
            self._greenlets = [gevent.spawn(self._listen), gevent.spawn(self._expire),
                               gevent.spawn(self._check_periodically)]

    def stop(self) -> None:
        self._stopped = True
        gevent.killall(self._greenlets)
        self._greenlets = []

    def _listen(self) -> None:
        """Follow the announcements; after every (re)subscription, check every live token."""
        outage = Outage("Redis (revocation announcements)", log, first_delay=0.5,
                        max_delay=30.0)
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(keys.REVOCATIONS)
                if outage.since is not None:
                    self.check_all()
                outage.succeeded()
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.announced(message["data"])
            except _LISTEN_FAILURES as exc:
                gevent.sleep(outage.failed(exc))
            finally:
                pubsub.close()

    def announced(self, data: bytes | str) -> None:
        """Act on one announcement from the REVOCATIONS channel."""
        try:
            notice = orjson.loads(data)
            reason = str(notice["reason"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed revocation announcement: %.80r", data)
            return
        if "jti" in notice:
            self.end_sessions(self._by_jti.get(notice["jti"], ()), reason)
        elif "user" in notice:
            # Only the tokens issued before the revocation: the user may have connected again
            # since with a new one (after being enabled again, say).
            self.check_users([str(notice["user"])])

    def _expire(self) -> None:
        expiries = self._expiries
        while True:
            if not expiries:
                self._expiry_changed.wait()
                self._expiry_changed.clear()
                continue
            expires, sid, jti = expiries[0]
            delay = expires - time.time()
            if delay > 0:
                self._expiry_changed.wait(timeout=delay)
                self._expiry_changed.clear()
                continue
            heapq.heappop(expiries)
            token = self.by_sid.get(sid)
            if token is not None and token.jti == jti:
                self.end_sessions([sid], TOKEN_EXPIRED)

    def _check_periodically(self) -> None:
        while True:
            gevent.sleep(self.check_interval)
            try:
                self.check_all()
            except RedisUnavailable as exc:
                log.debug("revocation check skipped: %s", exc)

    def check_all(self) -> int:
        """Check every live token against Redis in one round trip; end the revoked ones.
        Returns how many connections were ended."""
        return self._check(list(self.by_sid.items()))

    def check_users(self, users: Iterable[str]) -> int:
        """Check the live tokens of these users against Redis; end the revoked ones."""
        return self._check([(sid, self.by_sid[sid]) for user in users
                            for sid in list(self._by_user.get(user, ())) if sid in self.by_sid])

    def _check(self, live: list[tuple[str, Token]]) -> int:
        if not live:
            return 0
        jtis = sorted({token.jti for _, token in live})
        users = sorted({token.user for _, token in live})
        pipe = self.redis.pipeline(transaction=False)
        for jti in jtis:
            pipe.exists(keys.revoked_token(jti))
        for user in users:
            pipe.get(keys.tokens_revoked_before(user))
        replies = _execute(pipe, "cannot check token revocation")
        denied = {jti for jti, exists in zip(jtis, replies) if exists}
        marks = dict(zip(users, replies[len(jtis):]))
        by_reason: dict[str, list[str]] = {}
        for sid, token in live:
            reason = TOKEN_REVOKED if token.jti in denied else \
                _voided(marks.get(token.user), token.issued)
            if reason is not None:
                by_reason.setdefault(reason, []).append(sid)
        return sum(self.end_sessions(sids, reason) for reason, sids in by_reason.items())


def _discard(index: dict[str, set[str]], key: str, sid: str) -> None:
    sids = index.get(key)
    if sids is not None:
        sids.discard(sid)
        if not sids:
            del index[key]
