"""Every Tributary setting, declared once with its default and a one-line description.

Values come from the process environment, then from a `.env` file in the working directory
(the environment wins). Read them with `Settings.load()`; nothing else in Tributary reads
`os.environ` for configuration. A bad value raises `ConfigError` naming the setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from engine.errors import ConfigError

MIN_JWT_SECRET_BYTES = 32
DEVELOPMENT = "development"
PRODUCTION = "production"


#: URL schemes naming a Redis Cluster, and the scheme of its nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def setting(default: Any, doc: str, *, check: Callable[[Any], str | None] | None = None,
            secret: bool = False, example: str | None = None) -> Any:
    """Declare one setting: its default, what it is for, and an optional value check."""
    return field(default=default, metadata={"doc": doc, "check": check, "secret": secret,
                                            "example": example})


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def port_number(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a TCP port between 1 and 65535"


def port_or_zero(value: int) -> str | None:
    return None if 0 <= value < 65536 else "must be a TCP port between 1 and 65535, or 0"


def message_size(value: int) -> str | None:
    return None if 0 < value <= 65535 else "must be between 1 and 65535 (a TEXT column)"


@dataclass(frozen=True)
class Settings:
    # --- deployment ---------------------------------------------------------------------------
    TRIBUTARY_ENV: str = setting(
        PRODUCTION, "production, or development (allows generated secrets and the embedded "
        "Redis/SQLite)", check=one_of(DEVELOPMENT, PRODUCTION))
    REDIS_URL: str = setting(
        "redis://127.0.0.1:6379/0", "Redis holding the per-user streams (redis://, rediss://, "
        "unix://), or a Redis Cluster named by some of its nodes "
        "(redis+cluster://host:port,host:port/, rediss+cluster://); `make run` starts an "
        "embedded one when unset", secret=True)
    DATABASE_URL: str = setting(
        "sqlite:///var/tributary.db", "where messages land: mysql://user:pass@host/db (or "
        "mysql+pymysql://) in production, SQLite for the embedded default", secret=True)
    VAR_DIR: str = setting("var", "directory for the embedded Redis, SQLite and dev secrets")
    HOST: str = setting("127.0.0.1", "interface the web server and an engine's metrics "
                        "endpoint bind (0.0.0.0 in containers)")
    PORT: int = setting(3000, "port the web server listens on", check=port_number)

    # --- authentication ------------------------------------------------------------------------
    JWT_SECRET_KEY: str = setting(
        "", "HMAC key for access and refresh tokens, at least 32 bytes; required in production",
        secret=True, example="")
    JWT_ACCESS_TOKEN_MINUTES: int = setting(15, "lifetime of an access token", check=positive)
    JWT_REFRESH_TOKEN_DAYS: int = setting(30, "lifetime of a refresh token", check=positive)
    REGISTRATION_OPEN: bool = setting(True, "whether POST /api/auth/register accepts new users")
    LOGIN_ADDRESS_LIMIT: int = setting(
        20, "login and registration attempts one client address may make per "
        "LOGIN_ADDRESS_WINDOW (a token bucket; checked before any password is hashed); 0 "
        "disables", check=non_negative)
    LOGIN_ADDRESS_WINDOW: float = setting(60.0, "seconds in which LOGIN_ADDRESS_LIMIT attempts "
                                          "refill", check=positive)
    LOGIN_USERNAME_LIMIT: int = setting(
        10, "failed logins one username may have per LOGIN_USERNAME_WINDOW before its logins "
        "are answered 429; 0 disables", check=non_negative)
    LOGIN_USERNAME_WINDOW: float = setting(900.0, "seconds in which LOGIN_USERNAME_LIMIT "
                                           "failures refill", check=positive)
    PASSWORD_HASH_THREADS: int = setting(
        1, "threads of a web process that hash and verify passwords (about 70 ms of a core "
        "each), off the event loop that serves the connections", check=positive)
    TRUSTED_PROXY_HOPS: int = setting(
        0, "reverse proxies in front of the web process whose X-Forwarded-For is trusted for "
        "the client address (login throttling, per-address admission, logs); 0 when clients "
        "connect directly",
        check=non_negative)
    REVOCATION_CHECK_INTERVAL: float = setting(
        30.0, "seconds between two checks of every live connection's token against Redis, "
        "which ends a connection whose revocation announcement was missed", check=positive)
    ADMIN_USERNAME: str = setting("admin", "admin account `make run` creates on first start")
    ADMIN_PASSWORD: str = setting(
        "", "its password; a random one is generated and printed once when empty", secret=True)
    CORS_ORIGINS: tuple[str, ...] = setting(
        ("http://localhost:5173",), "comma-separated browser origins allowed to connect; "
        "never * unless you mean it", example="http://localhost:5173")

    # --- operator dashboard (/admin) -------------------------------------------------------------
    ADMIN_SESSION_HOURS: float = setting(
        12.0, "lifetime of a signed-in session of the operator dashboard; signing out, "
        "disabling the account or revoking its tokens ends it sooner", check=positive)
    DASHBOARD_SAMPLE_INTERVAL: float = setting(
        2.0, "seconds between two samples of the dashboard's live figures (its charts show "
        "the last 15 minutes of them)", check=positive)
    EXPORT_MAX_ROWS: int = setting(100_000, "most rows one CSV export of the Messages view "
                                   "holds", check=positive)

    # --- ingest ----------------------------------------------------------------------------------
    MAX_MESSAGE_BYTES: int = setting(4096, "largest `message` text accepted, in UTF-8 bytes",
                                     check=message_size)
    MAX_BATCH_ITEMS: int = setting(5000, "most messages in one HTTP batch or socket.io array",
                                   check=positive)
    MAX_FRAME_BYTES: int = setting(1_000_000, "largest socket.io frame or HTTP body accepted; "
                                   "bigger ones are refused at the transport", check=positive)
    RATE_LIMIT: float = setting(20.0, "socket.io messages per second per user (token bucket "
                                "refill rate); 0 disables", check=non_negative)
    RATE_BURST: int = setting(100, "socket.io token bucket size per user", check=positive)
    HTTP_RATE_LIMIT: float = setting(500.0, "HTTP batch messages per second per user; 0 disables",
                                     check=non_negative)
    HTTP_RATE_BURST: int = setting(5000, "HTTP batch token bucket size per user", check=positive)
    MAX_BACKLOG_PER_USER: int = setting(100_000, "unwritten messages a user may have queued "
                                        "before new ones are refused", check=positive)
    INGEST_TIMEOUT: float = setting(3.0, "seconds a client waits for its ack before it is told "
                                    "'unavailable'", check=positive)
    REDIS_TIMEOUT: float = setting(2.0, "seconds before a Redis connect or command is given up",
                                   check=positive)
    ACK_REPLICAS: int = setting(
        0, "replicas that must hold a message before it is acknowledged (Redis WAIT, once per "
        "flush, on each master it touched); 0 acknowledges once the master has it",
        check=non_negative)
    ACK_REPLICAS_TIMEOUT: float = setting(0.5, "seconds the gateway waits for ACK_REPLICAS "
                                          "replicas before it answers 'unavailable'",
                                          check=positive)
    SOCKETIO_CHANNEL: str = setting("flask-socketio", "Redis pub/sub channel shared by web "
                                    "processes and engines for socket.io emits")

    # --- connections that get nowhere ------------------------------------------------------------
    CONNECT_TIMEOUT: float = setting(
        10.0, "seconds an engine.io connection may stay open without joining socket.io (its "
        "CONNECT with a valid token); socket.io's own server allows 45", check=positive)
    HTTP_HEADER_TIMEOUT: float = setting(
        10.0, "seconds a client has to send a request line and its headers, counted from when "
        "the server waits for them (idle keep-alive connections close then too)", check=positive)
    HTTP_BODY_TIMEOUT: float = setting(
        30.0, "seconds a client has to send a whole request body once its headers are in",
        check=positive)
    MAX_HEADER_BYTES: int = setting(
        16384, "largest block of request headers accepted (431 beyond it); request lines are "
        "limited to 8 KiB (414)", check=positive)
    CONNECTION_RATE_PER_ADDRESS: float = setting(
        50.0, "new connections per second one client address may open (token bucket refill "
        "rate); past it and its burst, a connection is answered 503 with Retry-After before "
        "anything of it is read; 0 disables", check=non_negative)
    CONNECTION_BURST_PER_ADDRESS: int = setting(
        500, "new connections one client address may open at once (token bucket size): an "
        "office of a few hundred users behind one NAT reconnecting after a deploy",
        check=positive)
    REFUSED_CONNECTION_DELAY: float = setting(
        1.0, "seconds a new connection refused for its address's rate waits before it is "
        "answered 503 (at most 2,000 wait at a time): a client retrying the moment it is "
        "refused is slowed to its own pace; 0 answers at once", check=non_negative)
    REQUEST_RATE_PER_ADDRESS: float = setting(
        500.0, "HTTP requests per second one client address may make, new connections or "
        "keep-alive (a long-polling client makes about 2); past it and its burst, 429 with "
        "Retry-After and the connection closed; 0 disables", check=non_negative)
    REQUEST_BURST_PER_ADDRESS: int = setting(
        2000, "HTTP requests one client address may make at once (token bucket size)",
        check=positive)
    ALLOW_UNVERIFIED_LIBRARIES: bool = setting(
        False, "let the web process start on versions of python-engineio, python-socketio, "
        "Flask-SocketIO, gevent-websocket or gevent other than those its realtime layer was "
        "verified with (webapp/realtime/internals.py); each difference is logged")

    # --- engine ----------------------------------------------------------------------------------
    BATCH_SIZE_THRESHOLD: int = setting(1000, "backlog across all users that triggers a drain",
                                        check=positive)
    SWEEP_INTERVAL: float = setting(5.0, "seconds between two sweeps of the engine",
                                    check=positive)
    MAX_BATCH_AGE: float = setting(10.0, "seconds an entry may wait before it is drained even "
                                   "below the threshold", check=non_negative)
    BATCH_MAX: int = setting(5000, "most rows in one database transaction", check=positive)
    CLAIM_IDLE_MS: int = setting(60_000, "milliseconds an entry must sit unacknowledged with "
                                 "another engine before it is claimed", check=positive)
    MAX_DELIVERIES: int = setting(5, "failed writes of one entry before it moves to "
                                  "dead_letters", check=positive)
    LEASE_TTL: float = setting(30.0, "seconds an engine's hold on a user's stream lasts "
                               "without renewal", check=positive)
    RETRY_MAX_DELAY: float = setting(60.0, "longest pause between two attempts to reach Redis "
                                     "or the database during an outage", check=positive)
    STOP_TIMEOUT: float = setting(30.0, "seconds a warm stop may take before the engine exits "
                                  "anyway", check=positive)

    # --- observability ---------------------------------------------------------------------------
    LOG_LEVEL: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR",
                             check=one_of("DEBUG", "INFO", "WARNING", "ERROR"))
    LOG_FORMAT: str = setting("auto", "json for log collectors, text for people (coloured in a "
                              "terminal); auto: text in a terminal, json otherwise",
                              check=one_of("auto", "json", "text"))
    METRICS_ENABLED: bool = setting(True, "count and export Prometheus metrics (web: /metrics "
                                    "on PORT; engine: METRICS_PORT)")
    METRICS_PORT: int = setting(9400, "port of an engine's /metrics; one per engine process "
                                "(several engines on one host need one each); 0: none",
                                check=port_or_zero)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, env_file: str | None = ".env",
             **overrides: Any) -> Settings:
        """Read every setting from `environ` (default: the process environment) and `env_file`."""
        source: dict[str, str] = {}
        if env_file and Path(env_file).is_file():
            source.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        source.update(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                values[f.name] = overrides[f.name]
            elif f.name in source and source[f.name].strip() != "":
                values[f.name] = _parse(f, source[f.name].strip())
        settings = cls(**values)
        settings._check()
        return settings

    def replace(self, **changes: Any) -> Settings:
        settings = dataclasses.replace(self, **changes)
        settings._check()
        return settings

    def _check(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            problem = check(getattr(self, f.name)) if check else None
            if problem:
                raise ConfigError(f"{f.name}: {problem} (got {getattr(self, f.name)!r})")
        if "*" in self.CORS_ORIGINS and len(self.CORS_ORIGINS) > 1:
            raise ConfigError("CORS_ORIGINS: * cannot be combined with other origins")
        if self.ACK_REPLICAS and self.ACK_REPLICAS_TIMEOUT >= self.REDIS_TIMEOUT:
            raise ConfigError("ACK_REPLICAS_TIMEOUT: must be shorter than REDIS_TIMEOUT "
                              f"({self.REDIS_TIMEOUT}), or the wait is cut off as a Redis failure "
                              f"(got {self.ACK_REPLICAS_TIMEOUT!r})")

    @property
    def development(self) -> bool:
        return self.TRIBUTARY_ENV == DEVELOPMENT

    @property
    def var_dir(self) -> Path:
        return Path(self.VAR_DIR)

    def jwt_secret(self) -> str:
        """The JWT signing key; in development a missing one is generated once under VAR_DIR."""
        key = self.JWT_SECRET_KEY
        if not key and self.development:
            path = self.var_dir / "jwt-secret"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as out:
                    out.write(secrets.token_urlsafe(48))
            key = path.read_text().strip()
        if not key:
            raise ConfigError(
                "JWT_SECRET_KEY: not set. Set it to at least 32 random bytes, for example the "
                "output of: python -c 'import secrets; print(secrets.token_urlsafe(48))'")
        if len(key.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET_KEY: too short ({len(key.encode())} bytes); use at least "
                f"{MIN_JWT_SECRET_BYTES} random bytes, for example the output of: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'")
        return key

    @property
    def heartbeat_ttl(self) -> float:
        """Seconds a liveness key outlives its last refresh: three sweeps, never under 15 s."""
        return max(15.0, 3 * self.SWEEP_INTERVAL)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, type) else str(f.type)
    try:
        if kind in (int, "int"):
            return int(raw.replace("_", ""))
        if kind in (float, "float"):
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
        if kind in (bool, "bool"):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "tuple" in str(kind):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        expected = {"int": "an integer", "float": "a number", "bool": "true or false"}
        name = getattr(kind, "__name__", kind)
        raise ConfigError(f"{f.name}: expected {expected.get(str(name), name)}, got {raw!r}") \
            from None
    return raw


def env_example() -> str:
    """The text of `.env.example`, generated from the declarations above."""
    lines = ["# Tributary settings. Copy to .env and adjust; the environment overrides this file.",
             "# Generated by `python -m engine settings`; defaults shown commented out.",
             ""]
    for f in dataclasses.fields(Settings):
        default = f.default
        if f.metadata["example"] is not None:
            value = f.metadata["example"]
        elif isinstance(default, bool):
            value = "true" if default else "false"
        elif isinstance(default, tuple):
            value = ",".join(default)
        else:
            value = str(default)
        lines.append(f"# {f.metadata['doc']}")
        lines.append(f"# {f.name}={value}")
        lines.append("")
    return "\n".join(lines).rstrip("\n")
