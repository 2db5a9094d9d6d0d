"""The accounts of connecting clients that are not cached yet, looked up many at a time.

A connect reads the account's role and disabled flag from its cached copy in Redis
(users.account_record) in the round trip that authorizes it. After a deploy most copies have
expired, and every client of the process reconnects within seconds: one query and one pooled
database connection per connect would make the database the bottleneck of the storm (and each
new PyMySQL connection builds a TLS context). Here the connects that miss the cache together
wait for one query (`WHERE username IN (…)`), run by one greenlet: while it runs, the next
misses gather for the following batch, so a lone connect waits for one query and a storm for a
few dozen. Each connect then caches what was found in its next round trip (open.lua), the one
that opens it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import gevent
import sqlalchemy as sa
from gevent.event import AsyncResult, Event

from engine.errors import StorageUnavailable
from engine.keys import USER_ID_PATTERN
from engine.schema import users
from webapp.users import User

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


class AccountLoader:
    """Looks up the accounts that connects asked for, a batch at a time."""

    def __init__(self, db: sa.engine.Engine) -> None:
        self.db = db
        #: Username -> what its connects wait for: the account, or None when there is none.
        self._waiting: dict[str, AsyncResult] = {}
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None

    def load(self, username: str) -> User | None:
        """The account named exactly `username` as the database has it, or None when there is
        none. Raises StorageUnavailable when the look-up failed."""
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
            return find_users(self.db, names)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not look up %d accounts: %s", len(names), exc)
            return StorageUnavailable("cannot look up the account")
