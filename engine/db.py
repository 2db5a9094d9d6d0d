"""Connecting to the database: SQLAlchemy engines for MySQL/MariaDB (PyMySQL) and SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.errors import ConfigError

#: Session settings every MySQL connection starts with: refuse bad data instead of mangling it,
#: and keep every DATETIME in UTC.
MYSQL_INIT = ("SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
              "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', time_zone = '+00:00'")

#: Seconds before a MySQL connect, read or write is given up as an outage.
MYSQL_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}


def normalize_url(url: str) -> sa.engine.URL:
    """Parse DATABASE_URL, defaulting plain mysql:// to the PyMySQL driver."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL: not a database URL ({exc})") from None
    if parsed.drivername in ("mysql", "mariadb"):
        # As a PaaS hands it out (mysql://…): PyMySQL is Tributary's driver, and some add a
        # `reconnect` parameter PyMySQL does not know (the pool reconnects anyway).
        parsed = parsed.set(drivername="mysql+pymysql").difference_update_query(["reconnect"])
    if parsed.drivername not in ("mysql+pymysql", "mariadb+pymysql", "sqlite"):
        raise ConfigError(f"DATABASE_URL: unsupported database {parsed.drivername!r}; "
                          "use mysql+pymysql://… or sqlite:///…")
    return parsed


def is_sqlite(url: sa.engine.URL) -> bool:
    return url.drivername == "sqlite"


def create_db(url: str, **kwargs: Any) -> sa.engine.Engine:
    """A SQLAlchemy engine for DATABASE_URL with Tributary's session settings."""
    parsed = normalize_url(url)
    if is_sqlite(parsed):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        db = sa.create_engine(parsed, connect_args={"timeout": 30}, **kwargs)
        sa.event.listen(db, "connect", _sqlite_pragmas)
        return db
    connect_args = {"charset": "utf8mb4", "init_command": MYSQL_INIT, **MYSQL_TIMEOUTS}
    return sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True,
                            pool_recycle=3600, **kwargs)


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # WAL lets the web process read users while the engine writes messages.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
