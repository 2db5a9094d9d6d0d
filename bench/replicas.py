"""What ACK_REPLICAS=1 costs the gateway (issue: scale-out, durability on request).

A replica of the run's redis-server is started (`--replicaof`, nothing on disk). Rounds
alternate a web process with ACK_REPLICAS=0 and one with ACK_REPLICAS=1 on the same master,
under two loads from the same load generator:

capacity  closed loop (every client keeps WINDOW messages awaiting their ack): the highest
          sustained accepted rate; the ratio is 1 / 0 between the medians.
hold      CLIENTS websocket clients at one message a second each: ack latency percentiles.

`replicas-cluster` runs the same rounds on a Redis Cluster of 3 masters and 3 replicas made
for the run (tests/cluster_support.py), where each flush waits on every master it touched.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import redis

from bench.gateway import UNLIMITED, summarize
from bench.harness import Run, ensure_users, free_port, log, run_loadgen, wait_until, write_tokens


@dataclass
class ReplicaOptions:
    clients: int = 200
    window: int = 4
    duration: int = 20
    warmup: int = 5
    rounds: int = 2
    hold_clients: int = 1000


def start_replica(run: Run) -> redis.Redis:
    """A replica of the run's redis-server, in sync."""
    assert run.redis_process is not None and run.redis is not None
    master_port = run.redis.connection_pool.connection_kwargs["port"]
    port = free_port()
    binary = run.redis_process.popen.args[0]
    process = run.start("redis-replica", [binary, "--port", str(port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no",
                                          "--dir", str(run.directory), "--replicaof",
                                          "127.0.0.1", str(master_port)])
    replica = redis.Redis(port=port, decode_responses=True, protocol=2)

    def in_sync() -> bool:
        if not process.alive():
            raise RuntimeError(f"the replica exited:\n{process.log()}")
        try:
            return replica.info("replication").get("master_link_status") == "up"
        except redis.ConnectionError:
            return False

    wait_until(in_sync, 30, "the replica to be in sync")
    return replica


def replicas_cluster(run: Run, options: ReplicaOptions) -> dict[str, Any]:
    """`replicas` on a 3-master cluster with one replica each, made for the run."""
    from tests.cluster_support import TestCluster

    cluster = TestCluster(run.directory / "cluster")
    cluster.start()
    client = cluster.client()
    single = (run.redis_url, run.redis, run.redis_process)
    run.redis_url, run.redis, run.redis_process = cluster.url, client, None
    try:
        wait_until(lambda: all(cluster.node(port).info("replication").get("connected_slaves")
                               == 1 for port in cluster.master_ports()), 30,
                   "every master to have its replica")
        return replicas(run, options, replica=False)
    finally:
        run.redis_url, run.redis, run.redis_process = single
        client.close()
        cluster.stop()


def replicas(run: Run, options: ReplicaOptions, replica: bool = True) -> dict[str, Any]:
    if replica:
        start_replica(run)
    names = ensure_users(run, max(options.clients, options.hold_clients))
    tokens = write_tokens(run, names, run.directory / "replicas.tokens")
    closed = {"mode": "closed", "clients": options.clients, "window": options.window,
              "duration": options.duration, "warmup": options.warmup, "connect-rate": 1000,
              "token-file": tokens}
    paced = {"mode": "rate", "rate": 1, "clients": options.hold_clients, "warmup": options.warmup,
             "duration": options.duration, "connect-rate": 250, "connect-timeout": 60,
             "token-file": tokens}
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {
        "0": {"capacity": [], "hold": []}, "1": {"capacity": [], "hold": []}}
    for number in range(1, options.rounds + 1):
        for acks in ("0", "1"):
            for load_name, load in (("capacity", closed), ("hold", paced)):
                run.reset()
                server, url = run.start_web(f"web-acks{acks}-{load_name}-{number}",
                                            ACK_REPLICAS=acks, **UNLIMITED)
                result = run_loadgen(run, f"replicas-{acks}-{load_name}-{number}", url,
                                     watch=run.watched(server), **load)
                server.stop()
                entry = summarize(result, result.report["ok"])
                rounds[acks][load_name].append(entry)
                log(f"replicas round {number}, ACK_REPLICAS={acks}, {load_name}: "
                    f"{entry['accepted_per_s']} msg/s, ack p50 {entry['latency_ms']['p50']} ms, "
                    f"p99 {entry['latency_ms']['p99']} ms, not ok {entry['not_ok']}")

    def median(acks: str, load_name: str, pick: Any) -> float:
        return statistics.median(pick(entry) for entry in rounds[acks][load_name])

    capacity = {acks: median(acks, "capacity", lambda e: e["accepted_per_s"]) for acks in rounds}
    p99 = {acks: median(acks, "hold", lambda e: e["latency_ms"]["p99"]) for acks in rounds}
    p50 = {acks: median(acks, "hold", lambda e: e["latency_ms"]["p50"]) for acks in rounds}
    return {
        "options": vars(options),
        "capacity_msgs_per_s": capacity,
        "ratio_capacity_1_to_0": round(capacity["1"] / capacity["0"], 3) if capacity["0"] else None,
        "hold_ack_p50_ms": p50,
        "hold_ack_p99_ms": p99,
        "ratio_hold_p99_1_to_0": round(p99["1"] / p99["0"], 3) if p99["0"] else None,
        "rounds": rounds,
    }
