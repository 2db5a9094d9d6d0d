"""Start-up checks and the health command: the engine refuses to run on a Redis that may evict
keys or on a database without the schema, with a clear message and no traceback; `python -m
engine health` tells whether an engine is alive on this host."""

from __future__ import annotations

import socket

from engine import keys
from tests.conftest import TEST_DATABASE_URL, Backend, free_port, service_env, wait_until
from tests.engine_support import scratch_mysql_database


def run(processes, backend, *args: str, timeout: float = 30) -> tuple[int, str]:
    """Run `python -m engine <args>` against `backend`; returns (status, output)."""
    process = processes.start("engine-cli", ["-m", "engine", *args], service_env(backend))
    status = process.popen.wait(timeout)
    return status, process.log()


def on(redis_url: str, database_url: str, client=None) -> Backend:
    return Backend("custom", redis_url, database_url, client, None, ())  # type: ignore[arg-type]


def test_the_engine_refuses_a_redis_that_may_evict_keys(private_redis, sqlite_db, processes):
    private_redis.stop()
    private_redis.start("--maxmemory-policy", "allkeys-lru")
    client = private_redis.client()
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}

    status, output = run(processes, on(private_redis.url, sqlite_db.url.render_as_string()))

    assert status != 0
    assert "maxmemory-policy is 'allkeys-lru'" in output and "noeviction" in output
    assert "Traceback" not in output
    assert client.keys("*") == []  # it refused before announcing itself
    client.close()


def test_the_engine_refuses_an_sqlite_file_without_the_schema(redis_db, tmp_path, processes):
    empty = tmp_path / "empty.db"
    empty.touch()

    status, output = run(processes, on(redis_db.url, f"sqlite:///{empty}"))

    assert status != 0
    assert "database schema is missing" in output and "init-db" in output
    assert "Traceback" not in output
    assert redis_db.client.smembers(keys.ENGINES) == set()


def test_the_engine_refuses_a_mysql_database_without_the_schema(redis_db, processes):
    with scratch_mysql_database(TEST_DATABASE_URL, "noschema") as url:
        status, output = run(processes, on(redis_db.url, url))

    assert status != 0
    assert "database schema is missing" in output and "tributary_scratch_noschema" in output
    assert "Traceback" not in output


def test_health_exits_0_with_a_live_engine_on_this_host_and_1_without(backend, start_engine,
                                                                      processes):
    status, output = run(processes, backend, "health")
    assert status == 1 and "no live engine" in output

    engine = start_engine(backend)
    status, output = run(processes, backend, "health")
    assert status == 0, output
    assert f"{socket.gethostname()}-{engine.pid}-" in output

    assert engine.stop() == 0
    status, output = run(processes, backend, "health")
    assert status == 1 and "no live engine" in output


def test_health_counts_an_engine_on_another_host_only_when_asked(redis_db, processes):
    elsewhere = "another-host-4242-abcdef"
    redis_db.client.set(keys.engine_heartbeat(elsewhere), "{}", ex=60)
    redis_db.client.sadd(keys.ENGINES, elsewhere)
    backend = on(redis_db.url, TEST_DATABASE_URL)

    status, output = run(processes, backend, "health")
    assert status == 1 and "1 elsewhere" in output
    status, output = run(processes, backend, "health", "--any-host")
    assert status == 0 and elsewhere in output


def test_health_exits_1_when_redis_is_unreachable(processes):
    backend = on(f"redis://127.0.0.1:{free_port()}/0", TEST_DATABASE_URL)
    status, output = run(processes, backend, "health")
    assert status == 1
    assert "Redis unreachable" in output and "Traceback" not in output


def test_an_engine_whose_database_is_unreachable_at_start_says_so_without_a_traceback(
        redis_db, processes):
    backend = on(redis_db.url, f"mysql+pymysql://root@127.0.0.1:{free_port()}/tributary_test")
    process = processes.start("engine", ["-m", "engine"], service_env(backend))
    wait_until(lambda: not process.alive(), 30, what="the engine to give up")
    output = process.log()
    assert process.popen.returncode != 0
    assert "cannot use the database" in output and "Traceback" not in output


def test_an_engine_whose_redis_is_unreachable_at_start_says_so_without_a_traceback(
        sqlite_db, processes):
    backend = on(f"redis://127.0.0.1:{free_port()}/0", sqlite_db.url.render_as_string())
    status, output = run(processes, backend)
    assert status != 0
    assert "cannot reach Redis" in output and "Traceback" not in output
