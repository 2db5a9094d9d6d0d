"""Prometheus metrics: the cheap counting both processes use, and the engine's exporter.

Counting sits on hot paths (a web process counts every message), so nothing here takes a lock
or creates an object per observation: figures are plain integers and lists of bucket counts,
updated in place by the one thread (or gevent hub) that owns them, and turned into Prometheus
metric families only when Prometheus scrapes, by a custom collector. A prometheus_client
`Counter.inc()` would take a lock per message.

Naming follows Prometheus conventions: `tributary_` prefix, base units (seconds, entries),
`_total` on counters, and never a per-user or per-connection label.

The engine serves its metrics on `METRICS_PORT` (a thread of prometheus_client's HTTP server),
with the process's own CPU, memory and garbage-collector figures. Figures an engine measures
for the whole deployment (backlog, oldest entry, active streams, live engines) are the same on
every engine: aggregate them with `max`, never `sum`.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from engine.errors import ConfigError

log = logging.getLogger(__name__)

#: Bucket bounds (seconds) of latencies measured in milliseconds: acks, Redis round trips.
FAST_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0)
#: Bucket bounds (seconds) of database commits.
COMMIT_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Bucket bounds (seconds) of the time from a message's append to its commit; the promised
#: bound with the default settings (MAX_BATCH_AGE + SWEEP_INTERVAL) is 15 s.
LAG_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
               600.0)
#: Bucket bounds of batch sizes (messages or rows).
BATCH_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Histogram:
    """A histogram without locks: bucket counts and a sum, for one thread to update."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: Iterable[float]) -> None:
        counts, bounds, total = self.counts, self.bounds, 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1
            total += value
        self.sum += total

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, as Prometheus exposes them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts)):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


def histogram(name: str, doc: str, source: Histogram | dict[str, Histogram],
              label: str | None = None) -> HistogramMetricFamily:
    """A metric family from one histogram, or from several under one label."""
    family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
    items = source.items() if isinstance(source, dict) else [("", source)]
    for value, hist in items:
        family.add_metric([value] if label else [], hist.buckets(), sum_value=hist.sum)
    return family


def counter(name: str, doc: str, source: int | dict[Any, int],
            labels: Sequence[str] = ()) -> CounterMetricFamily:
    """A counter family from an integer, or from a dict of label value(s) -> integer."""
    family = CounterMetricFamily(name, doc, labels=list(labels) or None)
    if isinstance(source, dict):
        for key, value in list(source.items()):
            family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    else:
        family.add_metric([], source)
    return family


def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None
          ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels) if labels else None)
    family.add_metric(list(labels.values()) if labels else [], value)
    return family


def process_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry of its own with the process's CPU, memory and GC figures and `collectors`."""
    registry = CollectorRegistry(auto_describe=True)
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)
    for collector in collectors:
        registry.register(collector)
    return registry


# --- the engine -----------------------------------------------------------------------------------

class EngineCollector(Collector):
    """The figures of one engine (its `Stats` and its outages), read at scrape time."""

    def __init__(self, sweeper: Any) -> None:
        self.sweeper = sweeper

    def collect(self) -> Iterator[Metric]:
        stats = self.sweeper.stats
        yield counter("tributary_engine_rows_total", "Stream entries the engine finished with, "
                      "by outcome: inserted (a new row), duplicate (the row was already there), "
                      "dead_lettered, deleted (gone from Redis while pending)",
                      dict(stats.rows_by_outcome), ["outcome"])
        yield counter("tributary_engine_batches_total", "Database transactions committed",
                      stats.batches_total)
        yield histogram("tributary_engine_batch_rows", "Rows per committed transaction",
                        stats.batch_rows)
        yield histogram("tributary_engine_commit_seconds", "Time to write and commit one "
                        "transaction", stats.commit_seconds)
        yield histogram("tributary_engine_ingest_lag_seconds", "Time from a message's append to "
                        "Redis (its entry id) to the commit of its row", stats.ingest_lag)
        yield gauge("tributary_engine_backlog_entries", "Entries in every user stream, not yet "
                    "written (deployment-wide: aggregate with max)", stats.backlog)
        yield gauge("tributary_engine_pending_entries", "Entries delivered to an engine and not "
                    "yet acknowledged, in the streams this engine held at its last drain",
                    stats.pending)
        yield gauge("tributary_engine_oldest_entry_age_seconds", "Age of the oldest unwritten "
                    "entry at the last sweep (deployment-wide: aggregate with max)",
                    stats.oldest_age_seconds)
        yield gauge("tributary_engine_active_streams", "User streams with unwritten entries "
                    "(deployment-wide: aggregate with max)", stats.active_streams)
        yield gauge("tributary_engine_live_engines", "Engines with a current heartbeat, as this "
                    "engine sees them (aggregate with max)", stats.live_engines)
        yield counter("tributary_engine_claimed_entries_total", "Entries claimed from other "
                      "(dead or stuck) engines", stats.claimed_total)
        yield counter("tributary_engine_redelivered_entries_total", "Entries read again from "
                      "this engine's own pending list (after a failed write or a restart)",
                      stats.redelivered_total)
        yield counter("tributary_engine_dead_letters_total", "Entries moved to dead_letters",
                      stats.dead_letters_total)
        yield counter("tributary_engine_sweeps_total", "Sweeps of the registered streams",
                      stats.sweeps_total)
        yield counter("tributary_engine_errors_total", "Failures, by kind: redis and database "
                      "(an attempt failed: outage, timeout), row_rejected (the database refused "
                      "a row)", dict(stats.errors), ["kind"])
        yield gauge("tributary_engine_last_commit_timestamp_seconds", "Unix time of this "
                    "engine's last successful commit (0: none yet)", stats.last_commit_at)
        up = GaugeMetricFamily("tributary_dependency_up", "Whether the process reaches a "
                               "dependency (1) or is in an outage (0)", labels=["dependency"])
        up.add_metric(["redis"], 0 if self.sweeper.redis_outage.down else 1)
        up.add_metric(["database"], 0 if self.sweeper.db_outage.down else 1)
        yield up


class MetricsServer:
    """The engine's /metrics endpoint, served from a thread of its own."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigError(f"METRICS_PORT: cannot listen on {host}:{port} "
                              f"({exc.strerror or exc}); give each engine on a host a port "
                              "of its own, or 0 for none") from None
        self.port = int(self.server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
