"""Settings: declared once with defaults and descriptions, read from the environment and a
`.env` file, refused at start-up with a message naming the bad one."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from engine.errors import ConfigError
from engine.settings import MIN_JWT_SECRET_BYTES, Settings
from tests.conftest import (
    ROOT,
    TEST_JWT_SECRET,
    free_port,
    issue_token,
    service_env,
    wait_until,
)


def clean_env(**values: str) -> dict[str, str]:
    """The process environment without any Tributary setting, plus `values`."""
    names = {f.name for f in dataclasses.fields(Settings)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(PYTHONPATH=str(ROOT), **values)
    return env


#: Where processes expected to refuse to start would find Redis: nowhere (the discard port).
NO_REDIS = "redis://127.0.0.1:9/0"


def start_up(env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run `python -m webapp` expecting it to refuse to start."""
    return subprocess.run([sys.executable, "-m", "webapp"], env={"REDIS_URL": NO_REDIS, **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


# --- declarations -------------------------------------------------------------------------------

def test_every_setting_has_a_default_and_a_one_line_description():
    for f in dataclasses.fields(Settings):
        assert f.default is not dataclasses.MISSING, f.name
        doc = f.metadata.get("doc", "")
        assert doc.strip() and "\n" not in doc, f.name
    defaults = Settings.load(environ={}, env_file=None)
    assert defaults.TRIBUTARY_ENV == "production"


def test_the_default_cors_origins_never_allow_every_origin():
    assert "*" not in Settings.load(environ={}, env_file=None).CORS_ORIGINS
    assert "*" not in Path(ROOT / ".env.example").read_text().split("CORS_ORIGINS=")[1]


def test_env_example_is_what_the_settings_command_prints():
    printed = subprocess.run([sys.executable, "-m", "engine", "settings"], cwd=ROOT,
                             env=clean_env(), capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert (ROOT / ".env.example").read_text() == printed.stdout, (
        "regenerate it: python -m engine settings > .env.example")
    for f in dataclasses.fields(Settings):
        assert f"\n# {f.name}=" in printed.stdout, f.name


# --- reading ------------------------------------------------------------------------------------

def test_values_come_from_a_dotenv_file_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# a comment\nRATE_LIMIT=2.5\nRATE_BURST=7\nPORT=4000\n"
                        "REGISTRATION_OPEN=no\nCORS_ORIGINS=https://a.example, https://b.example\n"
                        "MAX_BATCH_ITEMS=1_000\n")
    settings = Settings.load(environ={"PORT": "5000"}, env_file=str(env_file))
    assert (settings.RATE_LIMIT, settings.RATE_BURST, settings.PORT) == (2.5, 7, 5000)
    assert settings.REGISTRATION_OPEN is False and settings.MAX_BATCH_ITEMS == 1000
    assert settings.CORS_ORIGINS == ("https://a.example", "https://b.example")


def test_the_web_process_reads_its_settings_from_a_dotenv_file(mysql_backend, tmp_path):
    port = free_port()
    names = {f.name for f in dataclasses.fields(Settings)}
    settings = service_env(mysql_backend, PORT=port, HOST="127.0.0.1", HTTP_RATE_BURST=2,
                           HTTP_RATE_LIMIT=1)
    (tmp_path / ".env").write_text("".join(f"{name}={value}\n"
                                           for name, value in settings.items() if name in names))
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        web = subprocess.Popen([sys.executable, "-m", "webapp"], cwd=tmp_path,
                               env=clean_env(PYTHONUNBUFFERED="1"), stdout=out,
                               stderr=subprocess.STDOUT)
    try:
        def healthy() -> bool:
            assert web.poll() is None, log.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(healthy, 30, what="the web process on the port its .env names")
        token = issue_token(mysql_backend, "alice")
        answer = requests.post(f"http://127.0.0.1:{port}/api/messages", timeout=10,
                               json=[{"message": "x"}] * 3,
                               headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202
        assert answer.json()["accepted"] == 2  # HTTP_RATE_BURST from the file
    finally:
        web.terminate()
        web.wait(30)


# --- refusing to start --------------------------------------------------------------------------

BAD_VALUES = [
    ({"PORT": "abc"}, "PORT: expected an integer"),
    ({"PORT": "70000"}, "PORT: must be a TCP port"),
    ({"RATE_LIMIT": "-1"}, "RATE_LIMIT: must not be negative"),
    ({"RATE_LIMIT": "nan"}, "RATE_LIMIT: expected a number"),
    ({"REGISTRATION_OPEN": "maybe"}, "REGISTRATION_OPEN: expected true or false"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: must be one of"),
    ({"TRIBUTARY_ENV": "staging"}, "TRIBUTARY_ENV: must be one of"),
    ({"MAX_MESSAGE_BYTES": "70000"}, "MAX_MESSAGE_BYTES: must be between"),
    ({"CORS_ORIGINS": "*,https://a.example"}, "CORS_ORIGINS: "),
    ({"REDIS_URL": "nope://somewhere"}, "REDIS_URL: "),
    ({"DATABASE_URL": "oracle://somewhere/db"}, "DATABASE_URL: "),
    ({"HOST": "no-such-host.invalid"}, "HOST"),
]


def test_a_bad_setting_stops_the_web_process_with_status_2_and_names_it(tmp_path):
    base = {"TRIBUTARY_ENV": "production", "JWT_SECRET_KEY": TEST_JWT_SECRET,
            "REDIS_URL": NO_REDIS,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "PORT": str(free_port())}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cases = [*BAD_VALUES, ({"PORT": str(taken.getsockname()[1])}, "PORT")]
        running = [(values, expected, subprocess.Popen(  # all at once: they are independent
            [sys.executable, "-m", "webapp"], env=clean_env(**{**base, **values}), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            for values, expected in cases]
        for values, expected, process in running:
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 2, (values, stderr)
            assert expected in stderr, (values, stderr)
            assert "Traceback" not in stderr, (values, stderr)


def test_a_bad_value_in_the_dotenv_file_is_named_too(tmp_path):
    (tmp_path / ".env").write_text("RATE_BURST=lots\n")
    done = start_up(clean_env(JWT_SECRET_KEY=TEST_JWT_SECRET), cwd=tmp_path)
    assert done.returncode == 2
    assert "RATE_BURST: expected an integer, got 'lots'" in done.stderr


@pytest.mark.parametrize(("key", "expected"), [
    (None, "JWT_SECRET_KEY: not set. Set it to at least 32 random bytes"),
    ("too-short-secret", "JWT_SECRET_KEY: too short (16 bytes); use at least 32"),
    ("x" * (MIN_JWT_SECRET_BYTES - 1), "JWT_SECRET_KEY: too short (31 bytes)"),
])
def test_production_refuses_a_missing_or_short_jwt_secret_and_says_what_to_set(tmp_path, key,
                                                                                expected):
    env = clean_env(TRIBUTARY_ENV="production", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    if key is not None:
        env["JWT_SECRET_KEY"] = key
    done = start_up(env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "secrets.token_urlsafe" in done.stderr
    assert "Traceback" not in done.stderr


def test_development_generates_a_jwt_secret_once_and_keeps_it_private(tmp_path):
    settings = Settings.load(environ={"TRIBUTARY_ENV": "development",
                                      "VAR_DIR": str(tmp_path / "var")}, env_file=None)
    key = settings.jwt_secret()
    assert len(key.encode()) >= MIN_JWT_SECRET_BYTES and settings.jwt_secret() == key
    assert (tmp_path / "var" / "jwt-secret").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY: not set"):
        Settings.load(environ={"VAR_DIR": str(tmp_path / "var")}, env_file=None).jwt_secret()


# --- per-address admission --------------------------------------------------------------------

def test_the_per_address_limits_have_defaults_an_office_behind_one_address_fits_in():
    settings = Settings.load(environ={}, env_file=None)
    # A few hundred users reconnecting at once after a deploy, a websocket each.
    assert settings.CONNECTION_BURST_PER_ADDRESS >= 300
    assert settings.CONNECTION_RATE_PER_ADDRESS >= 20
    # 200 long-polling users behind one address make about 2 requests a second each.
    assert settings.REQUEST_RATE_PER_ADDRESS >= 400
    assert settings.REQUEST_BURST_PER_ADDRESS >= settings.CONNECTION_BURST_PER_ADDRESS


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("CONNECTION_RATE_PER_ADDRESS", "-1", "CONNECTION_RATE_PER_ADDRESS: must not be negative"),
    ("CONNECTION_RATE_PER_ADDRESS", "many", "CONNECTION_RATE_PER_ADDRESS: expected a number"),
    ("CONNECTION_BURST_PER_ADDRESS", "0", "CONNECTION_BURST_PER_ADDRESS: must be greater than 0"),
    ("CONNECTION_BURST_PER_ADDRESS", "2.5",
     "CONNECTION_BURST_PER_ADDRESS: expected an integer"),
    ("REQUEST_RATE_PER_ADDRESS", "-0.5", "REQUEST_RATE_PER_ADDRESS: must not be negative"),
    ("REQUEST_BURST_PER_ADDRESS", "0", "REQUEST_BURST_PER_ADDRESS: must be greater than 0"),
])
def test_a_bad_per_address_limit_is_refused_and_named(name, value, expected):
    with pytest.raises(ConfigError, match=expected):
        Settings.load(environ={name: value}, env_file=None)


def test_a_per_address_rate_of_zero_disables_that_limit():
    from webapp.admission import Admission

    settings = Settings.load(environ={"CONNECTION_RATE_PER_ADDRESS": "0",
                                      "REQUEST_RATE_PER_ADDRESS": "0"}, env_file=None)
    admission = Admission.from_settings(settings)
    assert not admission.at_accept
    assert all(admission.take("192.0.2.1", what) == 0
               for what in ("connections", "requests") for _ in range(10_000))


def test_ack_replicas_is_read_for_one_redis_and_for_a_cluster_alike():
    for url in ("redis://127.0.0.1:6379/0", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"):
        settings = Settings.load({"ACK_REPLICAS": "1", "ACK_REPLICAS_TIMEOUT": "0.25",
                                  "REDIS_URL": url}, env_file=None)
        assert (settings.ACK_REPLICAS, settings.ACK_REPLICAS_TIMEOUT) == (1, 0.25)
    assert Settings.load({}, env_file=None).ACK_REPLICAS == 0
    with pytest.raises(ConfigError, match="ACK_REPLICAS: must not be negative"):
        Settings.load({"ACK_REPLICAS": "-1"}, env_file=None)
    with pytest.raises(ConfigError, match="ACK_REPLICAS_TIMEOUT: must be shorter than "
                                          "REDIS_TIMEOUT"):
        Settings.load({"ACK_REPLICAS": "1", "ACK_REPLICAS_TIMEOUT": "2",
                       "REDIS_URL": "redis+cluster://127.0.0.1:7000/"}, env_file=None)
