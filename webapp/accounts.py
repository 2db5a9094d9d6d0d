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

import contextlib
import logging
from collections.abc import Iterable

import sqlalchemy as sa

from engine.errors import StorageUnavailable
from engine.keys import USER_ID_PATTERN
from webapp.batching import Batcher
from webapp.users import User

log = logging.getLogger(__name__)

#: Usernames per query at most (the `IN` list).
BATCH_MAX = 500


#: The accounts of a batch, as text: the statement is the same every time but for the length
#: of its IN list, and a connect storm runs it a few dozen times a second.
_FIND_USERS = sa.text("SELECT id, username, role, disabled FROM users "
                      "WHERE username IN :names").bindparams(
                          sa.bindparam("names", expanding=True))


def find_users(db: sa.engine.Engine | sa.engine.Connection,
               usernames: Iterable[str]) -> dict[str, User]:
    """The accounts named exactly as one of `usernames`, by name, in one query; names no
    account can have are left out. On a connection (not an engine), the read's transaction
    is ended before returning, so the next read sees every change committed meanwhile."""
    names = sorted({name for name in usernames if USER_ID_PATTERN.fullmatch(name)})
    if not names:
        return {}
    if isinstance(db, sa.engine.Engine):
        with db.connect() as conn:
            return find_users(conn, names)
    try:
        rows = db.execute(_FIND_USERS, {"names": names}).all()
    finally:
        db.rollback()
    # Exact names only: a PAD SPACE collation compares `bob ` equal to `bob`.
    wanted = set(names)
    return {row.username: User(row.id, row.username, row.role, bool(row.disabled))
            for row in rows if row.username in wanted}


class AccountLoader:
    """Looks up the accounts that connects asked for, a batch at a time."""

    def __init__(self, db: sa.engine.Engine) -> None:
        self.db = db
        #: The loader's own pooled connection, kept between batches (no checkout and ping per
        #: batch); given back when a query fails.
        self._conn: sa.engine.Connection | None = None
        self._batches: Batcher[str, User | None] = Batcher(self._look_up, BATCH_MAX)

    def load(self, username: str) -> User | None:
        """The account named exactly `username` as the database has it, or None when there is
        none. Raises StorageUnavailable when the look-up failed."""
        found = self._batches.call(username)
        if isinstance(found, Exception):
            raise StorageUnavailable(str(found))
        return found

    def _look_up(self, names: list[str]) -> list[User | Exception | None]:
        """The account of each name (None for none), in one query; a name may come twice."""
        error: Exception | None = None
        for _ in range(2):  # a kept connection may have been closed by the server since
            try:
                if self._conn is None:
                    self._conn = self.db.connect()
                found = find_users(self._conn, names)
                return [found.get(name) for name in names]
            except sa.exc.SQLAlchemyError as exc:
                self._release()
                error = exc
                if not getattr(exc, "connection_invalidated", False):
                    break
        log.warning("could not look up %d accounts: %s", len(set(names)), error)
        return [StorageUnavailable("cannot look up the account")] * len(names)

    def _release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.close()
            self._conn = None
