"""The accounts of connecting clients that are not cached yet, looked up many at a time.

A connect reads the account's role and disabled flag from its cached copy in Redis
(users.account_record) in the round trip that authorizes it. After a deploy most copies have
expired, and every client of the process reconnects within seconds: one query and one pooled
database connection per connect would make the database the bottleneck of the storm (and each
new PyMySQL connection builds a TLS context). Here the connects that miss the cache together
wait for one query (`WHERE username IN (…)`) and one pipeline that caches what it found, run
by one greenlet: while it runs, the next misses gather for the following batch, so a lone
connect waits for one query and a storm for a few dozen.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import gevent
import sqlalchemy as sa
from gevent.event import AsyncResult, Event
from redis import Redis

from engine import keys
from engine.connections import REDIS_FAILURES
from engine.errors import RedisUnavailable, StorageUnavailable
from engine.keys import USER_ID_PATTERN
from engine.schema import users
from webapp.users import ACCOUNT_CACHE_SECONDS, User, account_record

log = logging.getLogger(__name__)

#: Usernames per query at most (the `IN` list).
BATCH_MAX = 500


def find_users(db: sa.engine.Engine, usernames: Iterable[str]) -> dict[str, User]:
    """The accounts named exactly as one of `usernames`, by name, in one query; names no
    account can have are left out."""
    names = sorted({name for name in usernames if USER_ID_PATTERN.fullmatch(name)})
    if not names:
        return {}
    with db.connect() as conn:
        rows = conn.execute(sa.select(users.c.id, users.c.username, users.c.role,
                                      users.c.disabled).where(users.c.username.in_(names)))
        # Exact names only: a PAD SPACE collation compares `bob ` equal to `bob`.
        wanted = set(names)
        return {row.username: User(row.id, row.username, row.role, bool(row.disabled))
                for row in rows if row.username in wanted}


def cache_accounts(redis: Redis, accounts: Iterable[User]) -> None:
    """Cache these accounts where a connect reads them, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for user in accounts:
        pipe.set(keys.account(user.username), account_record(user), ex=ACCOUNT_CACHE_SECONDS)
    pipe.execute()


class AccountLoader:
    """Looks up and caches the accounts that connects asked for, a batch at a time."""

    def __init__(self, db: sa.engine.Engine, redis: Redis) -> None:
        self.db = db
        self.redis = redis
        #: Username -> what its connects wait for: the account, or None when there is none.
        self._waiting: dict[str, AsyncResult] = {}
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None

    def load(self, username: str) -> User | None:
        """The account named exactly `username`, now cached, or None when there is none.
        Raises StorageUnavailable or RedisUnavailable when the look-up failed."""
        result = self._waiting.get(username)
        if result is None:
            result = self._waiting[username] = AsyncResult()
            if self._greenlet is None or self._greenlet.dead:
                self._greenlet = gevent.spawn(self._run)
            self._wake.set()
        found: User | Exception | None = result.get()
        if isinstance(found, Exception):
            # A fresh one per connect: one instance raised in many greenlets would collect
            # all their tracebacks.
            raise type(found)(str(found))
        return found

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._waiting:
                names = list(self._waiting)[:BATCH_MAX]
                batch = {name: self._waiting.pop(name) for name in names}
                outcome = self._look_up(names)
                for name, result in batch.items():
                    result.set(outcome if isinstance(outcome, Exception) else outcome.get(name))

    def _look_up(self, names: list[str]) -> dict[str, User] | Exception:
        try:
            found = find_users(self.db, names)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not look up %d accounts: %s", len(names), exc)
            return StorageUnavailable("cannot look up the account")
        try:
            cache_accounts(self.redis, found.values())
        except REDIS_FAILURES as exc:
            log.debug("could not cache %d accounts: %s", len(found), exc)
            return RedisUnavailable("cannot cache the account")
        return found
