"""The SQL tables as SQLAlchemy Core objects, mirroring `sql/schema.sql`, and applying them.

MySQL/MariaDB get the plain SQL file, statement by statement; SQLite (the embedded default) gets
`metadata.create_all`. Both record `SCHEMA_VERSION` in `schema_version`, which the engine checks
before it starts.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from engine.errors import StartupCheckError

log = logging.getLogger(__name__)

#: Bump with every change to sql/schema.sql (and add the migration next to it).
SCHEMA_VERSION = 2

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "sql" / "schema.sql"

_MYSQL_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4",
                "mysql_collate": "utf8mb4_bin"}

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Millis = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
Micros = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
Text = sa.Text()
MediumText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("id", sa.SmallInteger().with_variant(mysql.TINYINT(), "mysql", "mariadb"),
              primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("applied_at", Millis, nullable=False),
    **_MYSQL_TABLE,
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False, server_default="user"),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", Millis, nullable=False),
    sa.UniqueConstraint("username", name="uq_users_username"),
    **_MYSQL_TABLE,
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("msg_id", sa.String(64), nullable=False),
    sa.Column("message", Text, nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("timestamp", Millis, nullable=False),
    sa.Column("received_at", Millis, nullable=False),
    sa.Column("stream_id", sa.String(41), nullable=False),
    sa.Column("committed_at", Micros, nullable=False),
    sa.UniqueConstraint("user_id", "msg_id", name="uq_messages_user_msg"),
    sa.Index("ix_messages_user_time", "user_id", "timestamp"),
    # History pages: every user's messages by time, and one user's messages of one key.
    sa.Index("ix_messages_time", "timestamp"),
    sa.Index("ix_messages_user_key_time", "user_id", "key", "timestamp"),
    **_MYSQL_TABLE,
)

user_stats = sa.Table(
    "user_stats", metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("message_count", sa.BigInteger, nullable=False),
    sa.Column("value_count", sa.BigInteger, nullable=False),
    sa.Column("value_sum", sa.Double, nullable=True),
    sa.Column("value_min", sa.Double, nullable=True),
    sa.Column("value_max", sa.Double, nullable=True),
    sa.Column("value_avg", sa.Double,
              sa.Computed("value_sum / NULLIF(value_count, 0)", persisted=False)),
    sa.Column("first_seen", Millis, nullable=False),
    sa.Column("last_seen", Millis, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    **_MYSQL_TABLE,
)

key_stats = sa.Table(
    "key_stats", metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("message_count", sa.BigInteger, nullable=False),
    sa.Column("value_count", sa.BigInteger, nullable=False),
    sa.Column("value_sum", sa.Double, nullable=True),
    sa.Column("value_min", sa.Double, nullable=True),
    sa.Column("value_max", sa.Double, nullable=True),
    sa.Column("value_avg", sa.Double,
              sa.Computed("value_sum / NULLIF(value_count, 0)", persisted=False)),
    sa.Column("first_seen", Millis, nullable=False),
    sa.Column("last_seen", Millis, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    **_MYSQL_TABLE,
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", Millis, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", Text, nullable=True),
    sa.Column("address", sa.String(64), nullable=True),
    sa.Index("ix_audit_log_at", "at"),
    **_MYSQL_TABLE,
)

dead_letters = sa.Table(
    "dead_letters", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("stream_id", sa.String(41), nullable=False),
    sa.Column("msg_id", sa.String(64), nullable=True),
    sa.Column("payload", MediumText, nullable=False),
    sa.Column("error", Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("created_at", Millis, nullable=False),
    sa.Column("replayed_at", Millis, nullable=True),
    sa.UniqueConstraint("user_id", "stream_id", name="uq_dead_letters_entry"),
    sa.Index("ix_dead_letters_created", "created_at"),
    **_MYSQL_TABLE,
)


def mysql_statements() -> list[str]:
    """The statements of sql/schema.sql, comments removed."""
    lines = [line for line in SCHEMA_FILE.read_text().splitlines()
             if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def apply_schema(db: sa.engine.Engine) -> int:
    """Create whatever is missing and record the schema version; safe to run again.

    Upgrading is creating what is missing: new tables (every CREATE is IF NOT EXISTS), then the
    indexes that tables created by an earlier version lack (on a large `messages` table that
    takes a while, once)."""
    with db.begin() as conn:
        if db.dialect.name in ("mysql", "mariadb"):
            for statement in mysql_statements():
                conn.exec_driver_sql(statement)
        else:
            metadata.create_all(conn)
        for table in metadata.sorted_tables:
            for index in table.indexes:
                index.create(conn, checkfirst=True)
        current = conn.execute(sa.select(schema_version.c.version)
                               .where(schema_version.c.id == 1)).scalar()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        if current is None:
            conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION,
                                                        applied_at=now))
        elif current < SCHEMA_VERSION:
            conn.execute(schema_version.update().where(schema_version.c.id == 1)
                         .values(version=SCHEMA_VERSION, applied_at=now))
    log.info("schema version %s applied to %s", SCHEMA_VERSION, db.url.render_as_string())
    return SCHEMA_VERSION


def check_schema(db: sa.engine.Engine) -> None:
    """Raise StartupCheckError unless the database holds the schema this code expects."""
    try:
        with db.connect() as conn:
            version = conn.execute(sa.select(schema_version.c.version)
                                   .where(schema_version.c.id == 1)).scalar()
    except sa.exc.ProgrammingError as exc:
        raise StartupCheckError(_missing(db)) from exc
    except sa.exc.OperationalError as exc:
        if "no such table" in str(exc):
            raise StartupCheckError(_missing(db)) from exc
        raise StartupCheckError(f"cannot use the database {db.url.render_as_string()}: "
                                f"{exc.orig}") from exc
    if version is None:
        raise StartupCheckError(_missing(db))
    if version < SCHEMA_VERSION:
        raise StartupCheckError(
            f"database schema is version {version}, this engine needs {SCHEMA_VERSION}: "
            "run `flask --app wsgi init-db` to upgrade it")
    if version > SCHEMA_VERSION:
        raise StartupCheckError(
            f"database schema is version {version}, newer than this engine ({SCHEMA_VERSION}): "
            "deploy the matching release of Tributary")


def _missing(db: sa.engine.Engine) -> str:
    return (f"database schema is missing in {db.url.render_as_string()}: "
            "run `flask --app wsgi init-db` first")
