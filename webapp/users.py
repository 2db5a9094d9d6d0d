"""User accounts: creation, password checks and look-ups, over SQLAlchemy Core."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from engine.errors import ValidationError
from engine.keys import USER_ID_PATTERN
from engine.schema import users

ROLES = ("user", "admin")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
#: Verified against when the username is unknown, so that the answer takes as long either way.
_DUMMY_HASH = generate_password_hash("tributary-timing-equalizer")
_WHITESPACE = re.compile(r"\s")


class UsernameTaken(Exception):
    """Another account already has this username."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    disabled: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


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
                username=username, password_hash=generate_password_hash(password), role=role,
                disabled=False, created_at=now))
    except sa.exc.IntegrityError:
        raise UsernameTaken(username) from None
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return User(int(key[0]), username, role, False)


def find_user(db: sa.engine.Engine, username: str) -> User | None:
    with db.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.username, users.c.role,
                                     users.c.disabled).where(users.c.username == username)).first()
    return User(row.id, row.username, row.role, bool(row.disabled)) if row else None


def authenticate(db: sa.engine.Engine, username: object, password: object) -> User | None:
    """The enabled account matching these credentials, or None."""
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    with db.connect() as conn:
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(row.password_hash, password) or row.disabled:
        return None
    return User(row.id, row.username, row.role, bool(row.disabled))


def set_password(db: sa.engine.Engine, username: str, password: str) -> None:
    check_password(password)
    with db.begin() as conn:
        conn.execute(users.update().where(users.c.username == username)
                     .values(password_hash=generate_password_hash(password)))


def set_role(db: sa.engine.Engine, username: str, role: str) -> None:
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}")
    with db.begin() as conn:
        conn.execute(users.update().where(users.c.username == username).values(role=role))
