"""Dashboards and alerts against the real tools: promtool checks the Prometheus configuration and
the alert rules and runs their unit tests; a real Prometheus scrapes running web processes and
engines while messages flow, and every query of the dashboard and of the rules is evaluated
through its HTTP API and returns data. The Grafana dashboard and its provisioning are checked
for structure (Grafana itself is not packaged for Debian)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import yaml

from engine.schema import messages
from tests.conftest import ROOT, free_port, unavailable, wait_until
from tests.gateway_support import connect, refused

DASHBOARDS = ROOT / "dashboards"
DASHBOARD = DASHBOARDS / "tributary.json"
DATASOURCES = DASHBOARDS / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DASHBOARDS / "provisioning" / "dashboards" / "tributary.yml"
#: A metric selector in a PromQL expression: every Tributary metric, and `up`.
SELECTOR = re.compile(r"\b(?:tributary_\w+|up)(?:\{[^}]*\})?")


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (Debian's prometheus package; `make test` "
                    "installs it)")
    return str(found)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=DASHBOARDS, capture_output=True,
                          text=True, timeout=60)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# --- promtool -------------------------------------------------------------------------------------

def test_promtool_accepts_the_prometheus_configuration_and_its_rules():
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_unit_tests_and_they_pass():
    tests = yaml.safe_load((DASHBOARDS / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no quiet case"
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alert_rules_are_complete_and_documented():
    names = {rule["alert"] for rule in alert_rules()}
    assert {"TributaryEngineDown", "TributaryNoCommit", "TributaryIngestLagHigh",
            "TributaryDeadLetters", "TributaryRedisUnreachable",
            "TributaryDatabaseUnreachable"} <= names
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for rule in alert_rules():
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["labels"]["severity"] in ("page", "warn")
        assert f"`{rule['alert']}`" in operations, f"{rule['alert']}: not in OPERATIONS.md"


# --- Grafana, by structure ------------------------------------------------------------------------

def test_the_dashboard_uses_the_provisioned_datasource_in_every_panel():
    text = DASHBOARD.read_text()
    assert "${DS_" not in text  # an exported dashboard's placeholder: provisioning can't fill it
    dashboard = json.loads(text)
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    assert dashboard["uid"] == "tributary-overview" and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        where = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, where
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}, where
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, where
        assert panel["targets"], f"{where}: no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == datasource["uid"], where


def test_grafana_provisioning_loads_the_dashboard_from_where_compose_mounts_it():
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    assert provider["type"] == "file"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    assert f"./dashboards:{provider['options']['path']}:ro" in volumes
    assert "./dashboards/provisioning:/etc/grafana/provisioning:ro" in volumes


# --- a real Prometheus ----------------------------------------------------------------------------

class Prometheus:
    """A prometheus server of the test's own on a spare port, scraping `targets` (job ->
    host:port list) with the repository's scrape jobs and rules, every second."""

    def __init__(self, directory: Path, targets: dict[str, list[str]]) -> None:
        config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(DASHBOARDS / "alerts.yml")]
        for job in config["scrape_configs"]:
            del job["dns_sd_configs"]
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "prometheus.log"
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [tool("prometheus"), f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr},
                              timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def prometheus_on(tmp_path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: dict[str, list[str]]) -> Prometheus:
        server = Prometheus(tmp_path, targets)
        started.append(server)
        wait_until(server.ready, 30, what="prometheus to be ready")
        return server

    yield start
    for server in started:
        server.stop()


def test_a_real_prometheus_scrapes_every_process_and_every_query_returns_data(
        mysql_backend, start_web, start_engine, prometheus_on):
    webs = [start_web(mysql_backend), start_web(mysql_backend)]
    engine_ports = [free_port(), free_port()]
    for port in engine_ports:
        start_engine(mysql_backend, METRICS_PORT=port)
    prometheus = prometheus_on({"web": [f"127.0.0.1:{web.port}" for web in webs],
                                "engine": [f"127.0.0.1:{port}" for port in engine_ports]})

    # Messages flow through both web processes; some are refused, one connect is refused.
    clients = [connect(web.url, web.token(f"user{i}")) for i, web in enumerate(webs)]
    try:
        sent = 0
        for round_ in range(3):
            for client in clients:
                assert client.call({"msg_id": f"m{round_}", "message": "x"})["ok"] is True
                sent += 1
            assert clients[0].call({"message": 5})["ok"] is False
            wait_until(lambda: prometheus.query("tributary_messages_accepted_total"), 10,
                       what="a first scrape")
        answer = requests.post(f"{webs[1].url}/api/messages", json=[{"message": "y"}] * 2,
                               timeout=10, headers={"Authorization": f"Bearer "
                                                    f"{webs[1].token('user1')}"})
        assert answer.status_code == 202
        sent += 2
        assert refused(webs[0].url, "not-a-token") == "invalid token"

        def rows() -> int:
            with mysql_backend.db.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(messages))
                           .scalar_one())

        wait_until(lambda: rows() == sent, 20, what="every message in the database")

        # Each process is its own target, and a total is counted once.
        expected = {
            'count(up{job="web"} == 1)': 2,
            'count(up{job="engine"} == 1)': 2,
            "sum(tributary_messages_accepted_total)": sent,
            'sum(tributary_engine_rows_total{outcome="inserted"})': sent,
            'sum(tributary_messages_refused_total{reason="invalid"})': 3,
            'sum(tributary_socketio_connects_refused_total{reason="invalid_token"})': 1,
            "sum(tributary_socketio_connections)": 2,
            "max(tributary_engine_live_engines)": 2,
        }

        def figures() -> dict[str, float | None]:
            results = {expr: prometheus.query(expr) for expr in expected}
            return {expr: float(result[0]["value"][1]) if len(result) == 1 else None
                    for expr, result in results.items()}

        with contextlib.suppress(AssertionError):
            wait_until(lambda: figures() == expected, 20, interval=0.5,
                       what="both web processes and both engines scraped")
        assert figures() == expected

        # Every dashboard query returns data (rates need two samples of the changed counters).
        for expr in dashboard_queries():
            wait_until(lambda e=expr: prometheus.query(e), 15, interval=0.5,
                       what=f"data for the dashboard query {expr}")

        # Every rule expression is valid, evaluated by Prometheus without error, and every
        # series it names exists (the conditions themselves are false: nothing is wrong).
        for rule in alert_rules():
            prometheus.query(rule["expr"])
            for selector in SELECTOR.findall(rule["expr"]):
                assert prometheus.query(selector), f"{rule['alert']}: no series {selector}"

        def rules_evaluated() -> list[dict[str, Any]]:
            groups = requests.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()
            evaluated = [rule for group in groups["data"]["groups"] for rule in group["rules"]
                         if rule.get("lastEvaluation", "").startswith("2") and
                         not rule["lastEvaluation"].startswith("0001")]
            return evaluated if len(evaluated) == len(alert_rules()) else []

        for rule in wait_until(rules_evaluated, 15, what="every rule evaluated"):
            assert rule["health"] == "ok", rule
            assert rule["state"] == "inactive", rule  # a healthy deployment pages nobody
    finally:
        for client in clients:
            client.close()
