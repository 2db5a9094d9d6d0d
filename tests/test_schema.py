"""sql/schema.sql and engine/schema.py describe the same tables; init-db is idempotent; the
engine refuses a schema of another version."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Inspector

from engine.db import create_db
from engine.schema import SCHEMA_VERSION, apply_schema, metadata, schema_version, users
from tests.conftest import TEST_DATABASE_URL, Backend, service_env
from tests.engine_support import scratch_mysql_database

_DISPLAY_WIDTH = re.compile(r"^(BIGINT|INTEGER|INT|SMALLINT|TINYINT)\(\d+\)$")


def _type(compiled: str) -> str:
    compiled = compiled.upper()
    if compiled in ("TINYINT(1)", "BOOL", "BOOLEAN"):
        return "BOOLEAN"
    compiled = _DISPLAY_WIDTH.sub(r"\1", compiled)
    return "INTEGER" if compiled == "INT" else compiled


def _sql(text: Any) -> str | None:
    """A default or generated-column expression, without quoting, case or spacing."""
    if text is None:
        return None
    text = str(getattr(text, "arg", text))
    text = re.sub(r"[`'\"\s]", "", text).lower()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return {"false": "0", "true": "1"}.get(text, text)


def reflected(inspector: Inspector, dialect: sa.engine.Dialect, types: bool = True
              ) -> dict[str, Any]:
    """Everything the comparison looks at, as the database itself reports it."""
    tables = {}
    for table in sorted(inspector.get_table_names()):
        columns = {c["name"]: {"type": _type(c["type"].compile(dialect=dialect)) if types else
                               None, "nullable": c["nullable"],
                               "default": _sql(c.get("default")),
                               "computed": _sql((c.get("computed") or {}).get("sqltext"))}
                   for c in inspector.get_columns(table)}
        uniques = {u["name"]: tuple(u["column_names"])
                   for u in inspector.get_unique_constraints(table)}
        indexes = {i["name"]: tuple(i["column_names"]) for i in inspector.get_indexes(table)
                   if not i.get("unique") and i["name"] not in uniques}
        tables[table] = {"columns": columns, "column_order": list(columns),
                         "primary_key": tuple(inspector.get_pk_constraint(table)
                                              ["constrained_columns"]),
                         "unique": uniques, "indexes": indexes}
    return tables


def declared(dialect: sa.engine.Dialect, types: bool = True) -> dict[str, Any]:
    """The same description, built from the SQLAlchemy metadata."""
    tables = {}
    for table in metadata.sorted_tables:
        columns = {c.name: {"type": _type(c.type.compile(dialect=dialect)) if types else None,
                            "nullable": c.nullable and not c.primary_key,
                            "default": None if c.computed is not None else
                            _sql(c.server_default),
                            "computed": _sql(c.computed.sqltext if c.computed is not None
                                             else None)}
                   for c in table.columns}
        uniques = {u.name: tuple(col.name for col in u.columns) for u in table.constraints
                   if isinstance(u, sa.UniqueConstraint)}
        indexes = {i.name: tuple(col.name for col in i.columns) for i in table.indexes
                   if not i.unique}
        tables[table.name] = {"columns": columns, "column_order": list(columns),
                              "primary_key": tuple(c.name for c in table.primary_key.columns),
                              "unique": uniques, "indexes": indexes}
    return dict(sorted(tables.items()))


def test_schema_sql_and_the_sqlalchemy_tables_agree_on_mysql():
    with scratch_mysql_database(TEST_DATABASE_URL, "fromsql") as from_sql, \
            scratch_mysql_database(TEST_DATABASE_URL, "frommeta") as from_metadata:
        sql_db, meta_db = create_db(from_sql), create_db(from_metadata)
        try:
            apply_schema(sql_db)  # MySQL gets sql/schema.sql, statement by statement
            with meta_db.begin() as conn:
                metadata.create_all(conn)
            sql_side = reflected(sa.inspect(sql_db), sql_db.dialect)
            assert sql_side == declared(sql_db.dialect)
            # And the tables SQLAlchemy itself would create are the very same.
            assert sql_side == reflected(sa.inspect(meta_db), meta_db.dialect)
            sql_options = {t: sa.inspect(sql_db).get_table_options(t) for t in sql_side}
            for table, options in sql_options.items():
                assert options.get("mysql_engine") == "InnoDB", table
                assert options.get("mysql_collate") == "utf8mb4_bin", table
            with sql_db.connect() as conn:
                assert conn.execute(sa.select(schema_version.c.version)).scalar_one() == \
                    SCHEMA_VERSION
        finally:
            sql_db.dispose()
            meta_db.dispose()


def test_the_sqlalchemy_tables_create_the_same_keys_and_indexes_on_sqlite(tmp_path):
    db = create_db(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        apply_schema(db)
        assert reflected(sa.inspect(db), db.dialect, types=False) == \
            declared(db.dialect, types=False)
    finally:
        db.dispose()


def run_cli(processes, database_url: str, redis_url: str, *args: str) -> tuple[int, str]:
    backend = Backend("custom", redis_url, database_url, None, None, ())  # type: ignore[arg-type]
    process = processes.start("engine-cli", ["-m", "engine", *args], service_env(backend))
    return process.popen.wait(30), process.log()


@pytest.fixture(params=["mysql", "sqlite"])
def scratch_database(request, tmp_path):
    """A database with nothing in it, on either kind of server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    with scratch_mysql_database(TEST_DATABASE_URL, "initdb") as url:
        yield url


def test_init_db_is_idempotent(scratch_database, redis_db, processes):
    status, output = run_cli(processes, scratch_database, redis_db.url, "init-db")
    assert status == 0 and f"schema version {SCHEMA_VERSION} is in place" in output, output
    db = create_db(scratch_database)
    try:
        with db.begin() as conn:
            conn.execute(users.insert().values(username="kept", password_hash="x",
                                               created_at=sa.func.now()))

        status, output = run_cli(processes, scratch_database, redis_db.url, "init-db")
        assert status == 0, output

        with db.connect() as conn:
            assert conn.execute(sa.select(users.c.username)).scalars().all() == ["kept"]
            assert [tuple(r) for r in conn.execute(sa.select(schema_version.c.id,
                                                             schema_version.c.version))] == \
                [(1, SCHEMA_VERSION)]
    finally:
        db.dispose()


@pytest.mark.parametrize("version, says", [
    (SCHEMA_VERSION - 1, f"is version {SCHEMA_VERSION - 1}, this engine needs {SCHEMA_VERSION}"),
    (SCHEMA_VERSION + 1, "newer than this engine")])
def test_the_engine_refuses_a_schema_of_another_version(scratch_database, redis_db, processes,
                                                        version, says):
    db = create_db(scratch_database)
    try:
        apply_schema(db)
        with db.begin() as conn:
            conn.execute(schema_version.update().values(version=version))
    finally:
        db.dispose()

    status, output = run_cli(processes, scratch_database, redis_db.url)

    assert status != 0
    assert says in output and "Traceback" not in output
    assert redis_db.client.smembers("tributary:engines") == set()


def test_init_db_upgrades_a_version_1_database_keeping_its_rows(scratch_database, redis_db,
                                                                 processes):
    db = create_db(scratch_database)
    try:
        apply_schema(db)
        with db.begin() as conn:  # back to what version 1 had
            for table in ("key_stats", "audit_log"):
                conn.exec_driver_sql(f"DROP TABLE {table}")
            on_table = "" if db.dialect.name == "sqlite" else " ON messages"
            for index in ("ix_messages_time", "ix_messages_user_key_time"):
                conn.exec_driver_sql(f"DROP INDEX {index}{on_table}")
            conn.execute(schema_version.update().values(version=1))
            conn.execute(users.insert().values(username="kept", password_hash="x",
                                               created_at=sa.func.now()))
        status, output = run_cli(processes, scratch_database, redis_db.url, "init-db")
        assert status == 0 and f"schema version {SCHEMA_VERSION} is in place" in output, output
        inspector = sa.inspect(db)
        assert {"key_stats", "audit_log"} <= set(inspector.get_table_names())
        assert {"ix_messages_time", "ix_messages_user_key_time"} <= {
            index["name"] for index in inspector.get_indexes("messages")}
        with db.connect() as conn:
            assert conn.execute(sa.select(users.c.username)).scalars().all() == ["kept"]
            assert conn.execute(sa.select(schema_version.c.version)).scalar_one() == \
                SCHEMA_VERSION
    finally:
        db.dispose()
