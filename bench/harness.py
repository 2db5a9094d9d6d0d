"""What every benchmark needs: services of its own, processes it starts and stops by pid, the
load generator, and readings of a process's CPU time and memory.

A bench invocation runs on a private redis-server (a spare port, nothing on disk) and a
database of its own (`BENCH_DATABASE_URL`, default MariaDB's `tributary_bench`), so it never
touches the data of the test suite or of a running service, and can empty both at will.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa

from engine import streams
from engine.db import create_db, normalize_url
from engine.schema import apply_schema, metadata, users

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "bench" / "loadgen" / "loadgen.js"
BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL",
                                    "mysql+pymysql://root@127.0.0.1:3306/tributary_bench")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- process readings -----------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def database_server_pid() -> int | None:
    """The pid of the local MariaDB or MySQL server, for CPU readings (None when there is none
    on this machine, e.g. a database elsewhere)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    return int(proc.name)
    return None


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` now."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


# --- processes ------------------------------------------------------------------------------------

@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


@dataclass
class Run:
    """One bench invocation: its directory, its services and every process it started."""

    directory: Path
    redis_url: str = ""
    redis: redis.Redis | None = None
    redis_process: Process | None = None
    db: sa.engine.Engine | None = None
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    processes: list[Process] = field(default_factory=list)

    # processes
    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> Process:
        log_path = self.directory / f"{name}-{len(self.processes)}.log"
        with log_path.open("wb") as out:
            popen = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def watched(self, *processes: Process) -> list[Process]:
        """`processes` and this run's redis-server, for CPU readings."""
        return [*processes, *([self.redis_process] if self.redis_process else [])]

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=15)

    def service_env(self, **overrides: Any) -> dict[str, str]:
        """Environment of a web or engine process on this run's services."""
        assert self.db is not None
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("REDIS_", "DATABASE_", "TEST_"))}
        env.update({
            "TRIBUTARY_ENV": "production",
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.db.url.render_as_string(hide_password=False),
            "JWT_SECRET_KEY": self.jwt_secret,
            "JWT_ACCESS_TOKEN_MINUTES": "600",
            "SOCKETIO_CHANNEL": f"tributary-bench-{os.getpid()}",
            "LOG_LEVEL": "WARNING",
            "METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def start_web(self, name: str = "web", module: str = "webapp",
                  **overrides: Any) -> tuple[Process, str]:
        """A web process (`python -m <module>`) on a free port, once it is ready."""
        port = free_port()
        process = self.start(name, [sys.executable, "-m", module],
                             self.service_env(HOST="127.0.0.1", PORT=port, **overrides))
        url = f"http://127.0.0.1:{port}"
        wait_for_http(process, f"{url}/readyz")
        return process, url

    def start_engine(self, name: str = "engine", **overrides: Any) -> Process:
        process = self.start(name, [sys.executable, "-m", "engine"],
                             self.service_env(LOG_LEVEL="INFO", **overrides))
        wait_until(lambda: "started:" in process.log() or not process.alive(), 60,
                   "the engine to start")
        if not process.alive():
            raise RuntimeError(f"the engine exited:\n{process.log()}")
        return process

    # data
    def reset(self) -> None:
        """Empty Redis and every table but the users."""
        assert self.redis is not None and self.db is not None
        self.redis.flushall()
        with self.db.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                if table.name not in ("schema_version", "users"):
                    conn.exec_driver_sql(f"TRUNCATE TABLE `{table.name}`")


def wait_for_http(process: Process, url: str, timeout: float = 60.0) -> None:
    import urllib.request

    def answers() -> bool:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(answers, timeout, f"{url} to answer")


@contextlib.contextmanager
def bench_run(directory: Path) -> Iterator[Run]:
    """A private redis-server and the bench database, for the duration of the block."""
    directory.mkdir(parents=True, exist_ok=True)
    run = Run(directory)
    binary = shutil.which("redis-server")
    if binary is None:
        from engine.embedded import redis_server_binary

        binary = redis_server_binary()
    port = free_port()
    server = run.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(directory),
                                 "--maxmemory-policy", "noeviction", "--maxclients", "20000"])
    run.redis_process = server
    run.redis_url = f"redis://127.0.0.1:{port}/0"
    run.redis = redis.Redis.from_url(run.redis_url, decode_responses=True, protocol=2)

    def redis_answers() -> bool:
        if not server.alive():
            raise RuntimeError(f"redis-server exited:\n{server.log()}")
        with contextlib.suppress(redis.ConnectionError):
            return bool(run.redis and run.redis.ping())
        return False

    wait_until(redis_answers, 20, "the private redis-server")
    run.db = bench_database(BENCH_DATABASE_URL)
    try:
        yield run
    finally:
        run.stop_all()
        run.redis.close()
        run.db.dispose()


def bench_database(url: str) -> sa.engine.Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "mysql":
        server = create_db(parsed.set(database="").render_as_string(hide_password=False))
        with server.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS `{parsed.database}` "
                                 "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        server.dispose()
    db = create_db(url)
    apply_schema(db)
    return db


def backlog(run: Run) -> int:
    """Entries in every registered user stream: written or not, acknowledged or not."""
    assert run.redis is not None
    users = streams.registered_users(run.redis)
    return sum(length for length, _ in streams.measure(run.redis, users).values())


# --- users and tokens -----------------------------------------------------------------------------

def ensure_users(run: Run, count: int, prefix: str = "bench") -> list[str]:
    """Accounts `prefix`0 … `prefix`count-1 (inserted in bulk: one password hash for all, as
    these accounts only ever sign in with tokens); returns their usernames."""
    from werkzeug.security import generate_password_hash

    assert run.db is not None
    names = [f"{prefix}{i}" for i in range(count)]
    with run.db.connect() as conn:
        existing = {row[0] for row in conn.execute(
            sa.select(users.c.username).where(users.c.username.like(f"{prefix}%")))}
    missing = [name for name in names if name not in existing]
    if missing:
        password_hash = generate_password_hash(secrets.token_urlsafe(16))
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with run.db.begin() as conn:
            conn.execute(users.insert(), [
                {"username": name, "password_hash": password_hash, "role": "user",
                 "disabled": False, "created_at": now} for name in missing])
    return names


def write_tokens(run: Run, usernames: list[str], path: Path, hours: int = 10) -> Path:
    """One access token per user, signed as the web process signs them (HS256, this run's
    secret), one per line."""
    import jwt

    now = int(time.time())
    lines = [jwt.encode({"sub": name, "role": "user", "type": "access", "jti": str(uuid.uuid4()),
                         "iat": now, "nbf": now, "exp": now + hours * 3600, "fresh": False},
                        run.jwt_secret, algorithm="HS256") for name in usernames]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the load generator ---------------------------------------------------------------------------

@dataclass
class LoadResult:
    report: dict[str, Any]
    #: Length of the measurement window, and the CPU seconds each watched process (by name)
    #: used during it.
    window: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    #: Resident memory of the first watched process at the start and the end of the window.
    rss_at_start: int | None = None
    rss_at_end: int | None = None

    @property
    def server_cpu(self) -> float | None:
        return next(iter(self.cpu.values()), None)

    @property
    def server_cpu_pct(self) -> float | None:
        if self.server_cpu is None or not self.window:
            return None
        return 100 * self.server_cpu / self.window

    def cpu_pct(self) -> dict[str, float]:
        return {name: round(100 * seconds / self.window, 1)
                for name, seconds in self.cpu.items()} if self.window else {}


#: Benchmark clients per source address on loopback (bench/loadgen/addresses.js): real
#: clients come from many addresses, and a web process limits new connections per address.
CLIENTS_PER_ADDRESS = 100


def spread_over_addresses(url: str) -> dict[str, Any]:
    """The load generator's options spreading its clients over loopback source addresses,
    CLIENTS_PER_ADDRESS each, when `url` is on loopback (nothing otherwise)."""
    host = urlsplit(url).hostname or ""
    return {"per_address": CLIENTS_PER_ADDRESS} if host.startswith("127.") else {}


def run_loadgen(run: Run, name: str, url: str, watch: Process | list[Process] | None = None,
                **options: Any) -> LoadResult:
    """Run bench/loadgen with `options` (`--key value`); read the CPU time of the `watch`
    processes (the first one's memory too) over the measurement window, which the generator
    marks on its stderr."""
    watched = [] if watch is None else [watch] if isinstance(watch, Process) else watch
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: run `make bench`, which installs it")
    argv = [node, str(LOADGEN), "--url", url]
    for key, value in {**spread_over_addresses(url), **options}.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    log_path = run.directory / f"{name}.loadgen.log"
    result = LoadResult({})
    marks: dict[str, tuple[float, dict[str, float], int | None]] = {}

    def mark(which: str) -> None:
        live = [process for process in watched if process.alive()]
        marks[which] = (time.monotonic(), {p.name: cpu_seconds(p.pid) for p in live},
                        rss_bytes(live[0].pid) if live else None)

    with log_path.open("w") as err_log:
        popen = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)

        def follow() -> None:
            assert popen.stderr is not None
            for line in popen.stderr:
                err_log.write(line)
                err_log.flush()
                if "window start" in line:
                    mark("start")
                elif "window end" in line:
                    mark("end")

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            assert popen.stdout is not None
            out = popen.stdout.read()
            popen.wait()
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        follower.join()
    if popen.returncode != 0:
        raise RuntimeError(f"loadgen {name} failed ({popen.returncode}); see {log_path}")
    result.report = json.loads(out.strip().splitlines()[-1])
    if "start" in marks and "end" in marks:
        (t0, cpu0, rss0), (t1, cpu1, rss1) = marks["start"], marks["end"]
        result.window = t1 - t0
        result.cpu = {name: cpu1[name] - cpu0[name] for name in cpu0 if name in cpu1}
        result.rss_at_start, result.rss_at_end = rss0, rss1
    return result
