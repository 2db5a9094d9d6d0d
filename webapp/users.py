"""User accounts: creation, password checks and look-ups, over SQLAlchemy Core.

A username is compared exactly, byte for byte. The database's collation would not do that
alone: MySQL's PAD SPACE collations find `alice` for `alice ` (with a trailing space), which
once let a token naming `alice ` act as alice and write to a queue of its own. Every look-up
checks the name it got back, and callers use the canonical name of the `User` they got.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from redis import Redis
from werkzeug.security import generate_password_hash

from engine import keys
from engine.errors import UsernameTaken, ValidationError
from engine.keys import USER_ID_PATTERN
from engine.schema import users
from webapp.passwords import hash_password, verify_password

ROLES = ("user", "viewer", "admin")
#: Roles that may read every user's messages and figures (a viewer changes nothing).
READER_ROLES = frozenset({"viewer", "admin"})
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
#: Verified against when the username is unknown, so that the answer takes as long either way.
_DUMMY_HASH = generate_password_hash("tributary-timing-equalizer")
_WHITESPACE = re.compile(r"\s")
#: Longest a connect may go by the cached copy of an account (it is dropped at every change; the
#: bound covers a look-up that raced a change and cached what it read before it).
ACCOUNT_CACHE_SECONDS = 300


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    disabled: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_operator(self) -> bool:
        """May open the operator dashboard (a viewer or an admin)."""
        return self.role in READER_ROLES


def check_username(username: object) -> str:
    if not isinstance(username, str) or not USER_ID_PATTERN.fullmatch(username):
        raise ValidationError("username", "must be 1-64 characters from A-Z a-z 0-9 _ . -")
    return username


def check_password(password: object) -> str:
    if not isinstance(password, str) or not \
            MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValidationError("password", f"must be {MIN_PASSWORD_CHARS} to "
                              f"{MAX_PASSWORD_CHARS} characters")
    return password


def create_user(db: sa.engine.Engine, username: str, password: str, role: str = "user") -> User:
    """Create an account; raises ValidationError or UsernameTaken."""
    check_username(username)
    check_password(password)
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    try:
        with db.begin() as conn:
            result = conn.execute(users.insert().values(
                username=username, password_hash=hash_password(password), role=role,
                disabled=False, created_at=now))
    except sa.exc.IntegrityError:
        raise UsernameTaken(username) from None
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return User(int(key[0]), username, role, False)


def find_user(db: sa.engine.Engine, username: object) -> User | None:
    """The account named exactly `username`, or None."""
    if not isinstance(username, str) or not USER_ID_PATTERN.fullmatch(username):
        return None
    with db.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.username, users.c.role,
                                     users.c.disabled).where(users.c.username == username)).first()
    if row is None or row.username != username:
        return None
    return User(row.id, row.username, row.role, bool(row.disabled))


def authenticate(db: sa.engine.Engine, username: object, password: object) -> User | None:
    """The enabled account matching these credentials, or None."""
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    if not USER_ID_PATTERN.fullmatch(username):
        return None  # no account can have that name: nothing to hash
    with db.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    if row is None or row.username != username:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(row.password_hash, password) or row.disabled:
        return None
    return User(row.id, row.username, row.role, bool(row.disabled))


def set_password(db: sa.engine.Engine, username: str, password: str) -> None:
    check_username(username)
    check_password(password)
    with db.begin() as conn:
        conn.execute(users.update().where(users.c.username == username)
                     .values(password_hash=hash_password(password)))


def set_role(db: sa.engine.Engine, username: str, role: str, *, redis: Redis) -> bool:
    """Change an account's role (and drop its cached copy); False when there is no such
    account."""
    check_username(username)
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
    with db.begin() as conn:
        result = conn.execute(users.update().where(users.c.username == username)
                              .values(role=role))
    forget_account(redis, username)
    return bool(result.rowcount)


def set_disabled(db: sa.engine.Engine, username: str, disabled: bool, *, redis: Redis) -> bool:
    """Disable or enable an account (and drop its cached copy); False when there is no such
    account."""
    check_username(username)
    with db.begin() as conn:
        result = conn.execute(users.update().where(users.c.username == username)
                              .values(disabled=disabled))
    forget_account(redis, username)
    return bool(result.rowcount)


# --- the copy a connect reads --------------------------------------------------------------------

def account_record(user: User) -> bytes:
    """The copy of the account's id, role and disabled flag that a connect reads in its one
    Redis round trip (keys.account), kept there for ACCOUNT_CACHE_SECONDS at most by
    webapp/accounts.py."""
    return orjson.dumps({"id": user.id, "role": user.role, "disabled": user.disabled})


def cached_account(username: str, record: bytes | str | None) -> User | None:
    """The account as `account_record` kept it (the reply of GET keys.account), or None."""
    if record is None:
        return None
    fields = orjson.loads(record)
    return User(int(fields["id"]), username, str(fields["role"]), bool(fields["disabled"]))


def forget_account(redis: Redis, username: str) -> None:
    """Drop the cached copy after a change, so that the next connect reads the database."""
    redis.delete(keys.account(username))
