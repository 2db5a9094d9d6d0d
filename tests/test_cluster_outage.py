"""A whole Redis Cluster going away under a running web process: clients hear "unavailable" in
bounded time and the process stays up, as on a single Redis (tests/test_redis_outage.py)."""

from __future__ import annotations

import time

import requests

from tests.cluster_support import TestCluster
from tests.gateway_support import connected
from tests.test_redis_outage import sqlite_backend

REDIS_TIMEOUT = 0.5
INGEST_TIMEOUT = 1.0
#: Generous: a correctness bound on how long a client waits, not a benchmark.
BOUND = INGEST_TIMEOUT + REDIS_TIMEOUT + 5.0


def test_every_master_gone_is_answered_unavailable_and_the_process_stays_up(tmp_path,
                                                                            start_web):
    cluster = TestCluster(tmp_path / "cluster")
    try:
        cluster.start()
        backend = sqlite_backend("cluster", cluster.url, cluster.client(), tmp_path)
        web = start_web(backend, REDIS_TIMEOUT=REDIS_TIMEOUT, INGEST_TIMEOUT=INGEST_TIMEOUT)
        with connected(web.url, web.token("alice")) as client:
            assert client.call({"msg_id": "before", "message": "x"})["ok"] is True
            cluster.stop()
            for n in range(3):
                started = time.monotonic()
                ack = client.call({"msg_id": f"gone-{n}", "message": "x"}, timeout=BOUND + 5)
                assert time.monotonic() - started < BOUND
                assert ack == {"ok": False, "error": "unavailable", "msg_id": f"gone-{n}"}
        assert web.process.alive()
        # The flusher lived on: no traceback of it, nor of any other greenlet.
        assert "Traceback" not in web.process.log(), web.process.log()[-4000:]
        assert requests.get(f"{web.url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{web.url}/readyz", timeout=10).status_code == 503
    finally:
        cluster.stop()
