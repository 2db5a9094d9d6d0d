"""Deployment: the docker-compose stack validated by docker-compose itself and held to the
settings module; the Procfile run as a PaaS runs it (release, then web and engines) by honcho;
the URLs a PaaS hands out; liveness and readiness checks."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml
from redis.connection import SSLConnection

from engine.connections import connect_redis
from engine.db import normalize_url
from engine.schema import messages
from engine.settings import Settings
from tests.conftest import (
    ROOT,
    TEST_DATABASE_URL,
    TEST_JWT_SECRET,
    Backend,
    free_port,
    issue_token,
    service_env,
    unavailable,
    wait_until,
)
from tests.gateway_support import connect

SECRETS = {"MYSQL_ROOT_PASSWORD": "compose-root-password",
           "JWT_SECRET_KEY": "compose-jwt-secret-0123456789-abcdefghijkl",
           "GRAFANA_ADMIN_PASSWORD": "compose-grafana-password"}
TRIBUTARY_SERVICES = ("init-db", "web", "engine")


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        unavailable("docker-compose is not installed (Debian's docker-compose package; "
                    "`make test` installs it)")
    empty = tmp_path / "empty.env"  # never a developer's .env
    empty.write_text("")
    base = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([str(binary), "-f", str(ROOT / "docker-compose.yml"), "--env-file",
                           str(empty), "config"], env={**base, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def compose(tmp_path) -> dict[str, Any]:
    done = compose_config(tmp_path, **SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)  # type: ignore[no-any-return]


# --- docker-compose -------------------------------------------------------------------------------

def test_compose_config_passes_with_the_three_secrets_and_names_each_one_missing(tmp_path):
    for missing in SECRETS:
        done = compose_config(tmp_path, **{k: v for k, v in SECRETS.items() if k != missing})
        assert done.returncode != 0, missing
        assert f"set {missing}" in done.stderr, (missing, done.stderr)


def test_compose_runs_the_whole_stack_in_order(compose):
    services = compose["services"]
    assert set(services) == {"redis", "mysql", "init-db", "web", "engine", "prometheus",
                             "grafana"}
    for name in ("web", "engine"):
        needs = services[name]["depends_on"]
        assert needs["redis"]["condition"] == "service_healthy"
        assert needs["mysql"]["condition"] == "service_healthy"
        assert needs["init-db"]["condition"] == "service_completed_successfully"
        assert services[name]["healthcheck"]["test"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["engine"]["healthcheck"]["test"][1:] == ["python", "-m", "engine", "health"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    redis_command = services["redis"]["command"]
    assert "noeviction" in redis_command and "appendonly" in " ".join(redis_command)
    # An engine stops warmly within STOP_TIMEOUT; compose must wait longer before killing it.
    grace = services["engine"]["stop_grace_period"]
    assert float(grace.rstrip("s")) > Settings.load(environ={}, env_file=None).STOP_TIMEOUT


def test_engines_scale_out_no_fixed_name_or_host_port(compose):
    engine = compose["services"]["engine"]
    assert "container_name" not in engine and "ports" not in engine
    for name, service in compose["services"].items():
        assert "container_name" not in service, name


def test_the_environment_of_every_tributary_service_is_made_of_settings(compose):
    names = {f.name for f in dataclasses.fields(Settings)}
    for name in TRIBUTARY_SERVICES:
        environment = compose["services"][name]["environment"]
        assert set(environment) <= names, (name, set(environment) - names)
        settings = Settings.load(environ=environment, env_file=None)  # every value parses
        assert settings.HOST == "0.0.0.0" and not settings.development
        assert settings.jwt_secret() == SECRETS["JWT_SECRET_KEY"]
        assert normalize_url(settings.DATABASE_URL).drivername == "mysql+pymysql"


def test_ports_and_scrape_targets_agree_with_the_settings(compose):
    services = compose["services"]
    web = Settings.load(environ=services["web"]["environment"], env_file=None)
    engine = Settings.load(environ=services["engine"]["environment"], env_file=None)
    published = services["web"]["ports"][0]
    target = published.split(":")[-1] if isinstance(published, str) else published["target"]
    assert int(target) == web.PORT
    assert engine.METRICS_ENABLED and engine.METRICS_PORT
    scrape = yaml.safe_load((ROOT / "dashboards" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in scrape["scrape_configs"]}
    assert jobs["web"] == {**jobs["web"], "names": ["web"], "port": web.PORT}
    assert jobs["engine"] == {**jobs["engine"], "names": ["engine"], "port": engine.METRICS_PORT}
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    mounts = [volume.split(":")[1] if isinstance(volume, str) else volume["target"]
              for volume in services["prometheus"]["volumes"]]
    assert "/etc/prometheus/tributary" in mounts


# --- a PaaS: the URLs it hands out, the Procfile ------------------------------------------------

def test_a_paas_mysql_url_is_taken_with_the_driver_tributary_uses():
    url = normalize_url("mysql://user:secret@db.example:3306/app?reconnect=true")
    assert url.drivername == "mysql+pymysql" and url.database == "app"
    assert "reconnect" not in url.query  # ClearDB's, which PyMySQL does not know
    assert normalize_url("mysql+pymysql://u:p@h/db").drivername == "mysql+pymysql"


def test_a_rediss_url_connects_over_tls():
    settings = Settings.load(environ={"REDIS_URL": "rediss://:pw@redis.example:6380/0"},
                             env_file=None)
    client = connect_redis(settings)
    assert client.connection_pool.connection_class is SSLConnection
    assert client.connection_pool.connection_kwargs["port"] == 6380


def test_the_python_version_file_names_the_python_tributary_runs_on():
    version = (ROOT / ".python-version").read_text().strip()
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"FROM python:{version}-slim" in (ROOT / "Dockerfile").read_text()


def ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def honcho_base_port() -> int:
    """A port P with P (web), P+100 and P+101 (two engines' metrics) free: honcho's numbering."""
    return wait_until(lambda: (lambda p: p if p < 65000 and ports_free(p, p + 100, p + 101)
                               else None)(free_port()), 10, what="three free ports")


def test_the_procfile_runs_as_a_paas_runs_it_release_then_web_and_engines(
        mysql_backend, tmp_path):
    honcho = [sys.executable, "-m", "honcho", "--no-colour", "-e", str(tmp_path / "none.env"),
              "-d", str(ROOT), "-f", str(ROOT / "Procfile")]
    (tmp_path / "none.env").write_text("")
    url = normalize_url(TEST_DATABASE_URL)
    names = {f.name for f in dataclasses.fields(Settings)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "REDIS_URL": mysql_backend.redis_url,
        # As a PaaS hands it out: plain mysql://, no driver.
        "DATABASE_URL": url.set(drivername="mysql").render_as_string(hide_password=False),
        "JWT_SECRET_KEY": TEST_JWT_SECRET,
        "SOCKETIO_CHANNEL": f"tributary-procfile-{os.getpid()}",
        "SWEEP_INTERVAL": "0.2", "MAX_BATCH_AGE": "0.5", "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    })
    release = subprocess.run([*honcho, "start", "release"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert release.returncode == 0, release.stdout + release.stderr
    assert "schema version" in release.stdout

    port = honcho_base_port()
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as out:
        runner = subprocess.Popen([*honcho, "start", "-p", str(port), "-c", "web=1,engine=2",
                                   "web", "engine"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def ready() -> bool:
            assert runner.poll() is None, log_path.read_text()
            try:
                return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_until(ready, 60, what="the web process of the Procfile")
        for metrics_port in (port + 100, port + 101):  # one metrics endpoint per engine
            wait_until(lambda p=metrics_port: ports_free(p) is False, 30,
                       what=f"an engine's metrics on {metrics_port}")
            body = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            assert "tributary_engine_sweeps_total" in body
        client = connect(f"http://127.0.0.1:{port}", issue_token(mysql_backend, "paas-user"))
        try:
            for i in range(5):
                assert client.call({"msg_id": f"p-{i}", "message": "via the Procfile"})["ok"]
        finally:
            client.close()

        def stored() -> list[str]:
            with mysql_backend.db.connect() as conn:
                return sorted(conn.execute(sa.select(messages.c.msg_id).where(
                    messages.c.user_id == "paas-user")).scalars())

        wait_until(lambda: stored() == [f"p-{i}" for i in range(5)], 20,
                   what="the messages in MySQL")
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    output = log_path.read_text()
    assert output.count("stopped (warm)") == 2, output  # both engines finished cleanly
    assert "web process" in output and "stopped" in output
    assert "Traceback" not in output


# --- liveness and readiness -----------------------------------------------------------------------

def test_healthz_says_the_process_is_up_and_readyz_names_what_it_cannot_reach(
        private_redis, tmp_path, start_web):
    from tests.test_redis_outage import private_backend

    backend = private_backend(private_redis, tmp_path)
    web = start_web(backend, REDIS_TIMEOUT=0.5)
    ready = requests.get(f"{web.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "redis": "ok", "database": "ok"}

    private_redis.stop()
    assert requests.get(f"{web.url}/healthz", timeout=10).json() == {"status": "ok"}
    down = requests.get(f"{web.url}/readyz", timeout=10)
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "redis": "unreachable", "database": "ok",
                           "error": "redis unreachable"}


def test_readyz_names_the_database_when_that_is_what_is_missing(redis_db, processes):
    port = free_port()
    backend = Backend("no-database", redis_db.url,
                      f"mysql+pymysql://root@127.0.0.1:{free_port()}/nowhere", redis_db.client,
                      None, ())  # type: ignore[arg-type]
    web = processes.start("web", ["-m", "webapp"], service_env(backend, PORT=port))

    def alive() -> bool:
        assert web.alive(), web.log()
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
        except requests.RequestException:
            return False

    wait_until(alive, 30, what="the web process to answer /healthz")
    down = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=15)
    assert down.status_code == 503
    assert down.json() == {"status": "unavailable", "redis": "ok", "database": "unreachable",
                           "error": "database unreachable"}
