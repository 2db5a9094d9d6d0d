"""Prometheus metrics of a web process, served at `/metrics` on its own port.

HTTP routes are measured by prometheus-flask-exporter (`tributary_http_request_*`, grouped by
URL rule, so `/api/users/<name>` is one series, not one per user). What it cannot see, the
socket.io connections and the ingest path, is counted here in plain integers and lock-free
histograms (engine/metrics.py) and turned into metric families only when Prometheus scrapes:
counting costs a few attribute updates per message, never a lock.

With METRICS_ENABLED false nothing is counted (the gateway's `metrics` is None) and there is
no `/metrics`: that is the baseline the capacity benchmark compares against.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from flask import Flask
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics

from engine import metrics as m

if TYPE_CHECKING:
    from webapp.admission import Admission
    from webapp.gateway import Gateway

#: Ingest paths (streams.Limits.path) and the `transport` label each is exported under.
TRANSPORTS = {"socket": "socketio", "http": "http"}
#: Why a message was refused, as a label: validation, or a refusal code of ingest.lua.
REFUSALS = ("invalid", "rate_limited", "backlog_full", "unavailable")
#: Why a socket.io connect was refused (AuthError texts and "unavailable"), as a label.
CONNECT_REFUSALS = {"missing token": "missing_token", "token expired": "expired_token",
                    "invalid token": "invalid_token", "token revoked": "revoked_token",
                    "account disabled": "account_disabled", "unavailable": "unavailable"}


class WebMetrics:
    """What one web process counts; updated from its greenlets, read when scraped."""

    __slots__ = ("accepted", "ack_seconds", "append_seconds", "connects", "connects_refused",
                 "flush_messages", "received", "refused")

    def __init__(self) -> None:
        self.connects = 0
        self.connects_refused = dict.fromkeys((*CONNECT_REFUSALS.values(), "other"), 0)
        self.received = dict.fromkeys(TRANSPORTS, 0)
        self.accepted = dict.fromkeys(TRANSPORTS, 0)
        self.refused = {(path, reason): 0 for path in TRANSPORTS for reason in REFUSALS}
        self.append_seconds = m.Histogram(m.FAST_SECONDS)
        self.ack_seconds = {path: m.Histogram(m.FAST_SECONDS) for path in TRANSPORTS}
        self.flush_messages = m.Histogram(m.BATCH_SIZES)

    def connect_refused(self, reason: str) -> None:
        label = CONNECT_REFUSALS.get(reason, "other")
        self.connects_refused[label] += 1


class WebCollector(Collector):
    """Turns a gateway's figures into metric families at scrape time."""

    def __init__(self, gateway: Gateway, admission: Admission | None = None) -> None:
        self.gateway = gateway
        self.admission = admission

    def collect(self) -> Iterator[Metric]:
        gateway = self.gateway
        figures = gateway.metrics
        assert figures is not None
        yield m.gauge("tributary_socketio_connections", "socket.io connections open on this "
                      "process", len(gateway.users))
        yield m.counter("tributary_socketio_connects_total", "socket.io connections accepted",
                        figures.connects)
        yield m.counter("tributary_socketio_connects_refused_total", "socket.io connections "
                        "refused, by reason", figures.connects_refused, ["reason"])
        yield m.counter("tributary_messages_received_total", "Messages received for ingest "
                        "(valid or not), by transport", _by_transport(figures.received),
                        ["transport"])
        yield m.counter("tributary_messages_accepted_total", "Messages appended to their "
                        "user's stream and acknowledged ok, by transport",
                        _by_transport(figures.accepted), ["transport"])
        yield m.counter("tributary_messages_refused_total", "Messages refused, by transport "
                        "and reason", {(TRANSPORTS[path], reason): count
                                       for (path, reason), count in figures.refused.items()},
                        ["transport", "reason"])
        yield m.histogram("tributary_append_round_trip_seconds", "Time of one group-committed "
                          "round trip of appends to Redis", figures.append_seconds)
        yield m.histogram("tributary_ack_latency_seconds", "Time from an event's (or an HTTP "
                          "batch's) arrival at the gateway to Redis's answer, by transport",
                          _by_transport(figures.ack_seconds), "transport")
        yield m.histogram("tributary_flush_batch_messages", "Messages sent to Redis in one "
                          "round trip of the gateway's flusher", figures.flush_messages)
        if self.admission is not None:
            yield m.counter("tributary_admission_refused_total", "New connections and HTTP "
                            "requests refused because their client address was over its rate, "
                            "by what was refused", self.admission.refused, ["what"])
        up = GaugeMetricFamily("tributary_dependency_up", "Whether the process reaches a "
                               "dependency (1) or is in an outage (0)", labels=["dependency"])
        up.add_metric(["redis"], 0 if gateway.outage.down else 1)
        yield up


def connect_refused(gateway: Gateway, reason: str) -> None:
    """Count a refused socket.io connect (`reason`: what the client was told)."""
    if gateway.metrics is not None:
        gateway.metrics.connect_refused(reason)


def _by_transport(values: dict) -> dict:
    return {TRANSPORTS[path]: value for path, value in values.items()}


def init_app(app: Flask, gateway: Gateway, admission: Admission | None = None) -> None:
    """Serve `/metrics` with the HTTP route metrics, the gateway's figures, what `admission`
    refused and the process's own (CPU, memory, garbage collector), from a registry of this
    app's own."""
    gateway.metrics = WebMetrics()
    registry = m.process_registry(WebCollector(gateway, admission))
    PrometheusMetrics(app, registry=registry, group_by="url_rule", defaults_prefix="tributary",
                      default_latency_as_histogram=True)
