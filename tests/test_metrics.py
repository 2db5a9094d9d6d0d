"""Prometheus metrics, read from the processes' real /metrics endpoints: what an engine counts
(rows by outcome, batches, lag, dead letters, refused rows, claims), what a web process counts,
and the switches (METRICS_ENABLED, METRICS_PORT)."""

from __future__ import annotations

import signal
import socket
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from engine import keys
from tests.conftest import free_port, wait_until
from tests.engine_support import append, append_many, payload
from tests.gateway_support import connected
from tests.test_dead_letters import POISON_TRIGGER, drop_trigger
from tests.test_recovery import engine_name


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an endpoint: (name, sorted labels) -> value."""
    text = requests.get(url, timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def engine_metrics(port: int) -> dict:
    return scrape(f"http://127.0.0.1:{port}/metrics")


def test_an_engine_counts_its_rows_batches_lag_and_last_commit(mysql_backend, start_engine):
    port = free_port()
    start_engine(mysql_backend, METRICS_PORT=port)
    before = time.time()
    append_many(mysql_backend.redis, {"alice": [payload(f"a{i}") for i in range(5)],
                                      "bob": [payload(f"b{i}") for i in range(3)]})

    def counted() -> dict | None:
        samples = engine_metrics(port)
        done = value(samples, "tributary_engine_rows_total", outcome="inserted") == 8
        return samples if done else None

    samples = wait_until(counted, 15, what="eight inserted rows counted")
    assert value(samples, "tributary_engine_rows_total", outcome="duplicate") == 0
    batches = value(samples, "tributary_engine_batches_total")
    assert batches >= 1
    assert value(samples, "tributary_engine_batch_rows_count") == batches
    assert value(samples, "tributary_engine_batch_rows_sum") == 8
    assert value(samples, "tributary_engine_commit_seconds_count") == batches
    assert value(samples, "tributary_engine_ingest_lag_seconds_count") == 8
    assert 0 < value(samples, "tributary_engine_ingest_lag_seconds_sum") < 8 * 15
    assert value(samples, "tributary_engine_ingest_lag_seconds_bucket", le="+Inf") == 8
    assert before <= value(samples, "tributary_engine_last_commit_timestamp_seconds") \
        <= time.time()
    assert value(samples, "tributary_engine_sweeps_total") >= 1
    assert value(samples, "tributary_engine_live_engines") == 1
    assert value(samples, "tributary_dependency_up", dependency="redis") == 1
    assert value(samples, "tributary_dependency_up", dependency="database") == 1
    assert ("process_resident_memory_bytes", ()) in samples
    wait_until(lambda: value(engine_metrics(port), "tributary_engine_backlog_entries") == 0, 10,
               what="the backlog measured empty")
    assert not any("alice" in str(labels) or "bob" in str(labels) for _, labels in samples)


def test_refused_rows_and_dead_letters_are_counted(mysql_backend, start_engine):
    with mysql_backend.db.begin() as conn:
        conn.exec_driver_sql(POISON_TRIGGER["mysql"])
    try:
        port = free_port()
        start_engine(mysql_backend, METRICS_PORT=port, MAX_DELIVERIES=2)
        append(mysql_backend.redis, "alice", [payload("ok-1"), payload("bad", "POISON"),
                                              payload("ok-2")])

        def dead() -> dict | None:
            samples = engine_metrics(port)
            return samples if value(samples, "tributary_engine_dead_letters_total") == 1 \
                else None

        samples = wait_until(dead, 20, what="the dead letter counted")
        assert value(samples, "tributary_engine_rows_total", outcome="dead_lettered") == 1
        assert value(samples, "tributary_engine_errors_total", kind="row_rejected") == 2
        # The refused entry came back from the engine's own pending list for its second try.
        assert value(samples, "tributary_engine_redelivered_entries_total") >= 1
        wait_until(lambda: value(engine_metrics(port), "tributary_engine_rows_total",
                                 outcome="inserted") == 2, 10, what="both good rows")
    finally:
        drop_trigger(mysql_backend.db)


def test_entries_claimed_from_a_dead_engine_are_counted_by_the_one_that_claims_them(
        mysql_backend, start_engine):
    first = start_engine(mysql_backend, pause_after_commit=30)
    append(mysql_backend.redis, "alice", [payload(f"m{i}") for i in range(4)])
    wait_until(lambda: "paused after commit" in first.log(), 15, what="the first commit")
    first.signal(signal.SIGKILL)  # committed, never acknowledged: the entries stay pending
    first.popen.wait(10)
    # Its heartbeat would lapse within 15 s; say it is gone now (what the lapse would say).
    mysql_backend.redis.delete(keys.engine_heartbeat(engine_name(first)))
    port = free_port()
    start_engine(mysql_backend, METRICS_PORT=port, CLAIM_IDLE_MS=60_000)

    def claimed() -> dict | None:
        samples = engine_metrics(port)
        return samples if value(samples, "tributary_engine_claimed_entries_total") == 4 \
            else None

    samples = wait_until(claimed, 20, interval=0.5, what="the claim counted")
    wait_until(lambda: value(engine_metrics(port), "tributary_engine_rows_total",
                             outcome="duplicate") == 4, 10,
               what="the claimed entries written again as duplicates")
    assert value(samples, "tributary_engine_rows_total", outcome="inserted") == 0


def test_a_web_process_counts_messages_connections_and_refusals(mysql_backend, start_web):
    web = start_web(mysql_backend, RATE_LIMIT=1, RATE_BURST=3)
    with connected(web.url, web.token("alice")) as client:
        assert client.call({"message": 5})["ok"] is False  # invalid: it uses an item's turn
        answers = [client.call({"message": f"m{i}"})["ok"] for i in range(4)]
        assert answers == [True, True, False, False]  # the burst's 2 left, then rate limited
        samples = scrape(f"{web.url}/metrics")
        assert value(samples, "tributary_socketio_connections") == 1
    assert value(samples, "tributary_socketio_connects_total") == 1
    assert value(samples, "tributary_messages_received_total", transport="socketio") == 5
    assert value(samples, "tributary_messages_accepted_total", transport="socketio") == 2
    assert value(samples, "tributary_messages_refused_total", transport="socketio",
                 reason="rate_limited") == 2
    assert value(samples, "tributary_messages_refused_total", transport="socketio",
                 reason="invalid") == 1
    # Only what went to Redis is timed and flushed; the rate limit answered the rest at once.
    assert value(samples, "tributary_ack_latency_seconds_count", transport="socketio") == 2
    assert value(samples, "tributary_append_round_trip_seconds_count") >= 1
    assert value(samples, "tributary_flush_batch_messages_sum") == 2
    assert value(samples, "tributary_http_request_duration_seconds_count", method="GET",
                 status="200", url_rule="/readyz") >= 1
    assert value(samples, "tributary_dependency_up", dependency="redis") == 1
    assert not any("alice" in str(labels) for _, labels in samples)


def test_metrics_can_be_switched_off_and_an_engine_refuses_a_taken_port(mysql_backend,
                                                                         start_web,
                                                                         start_engine):
    web = start_web(mysql_backend, METRICS_ENABLED="false")
    assert requests.get(f"{web.url}/metrics", timeout=10).status_code == 404
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = start_engine(mysql_backend, wait=False, METRICS_PORT=port)
        status = engine.popen.wait(30)
    assert status == 2, engine.log()
    assert f"METRICS_PORT: cannot listen on 127.0.0.1:{port}" in engine.log()
    assert "Traceback" not in engine.log()
