"""Capacity with one and with two web processes (issue: Redis Cluster / scale-out, §5).

For each step of the load (clients, each keeping WINDOW messages awaiting their ack: a closed
loop), one web process and then two on different ports take the same load from the same load
generator, its clients split evenly over the processes (`--url a,b`). Each run reports the
accepted rate and the CPU used, over the measurement window, by every web process, Redis and
the load generator, so that the curve says where it flattens and which of them is the limit.
On a machine with few cores they all share them: the sum of the CPU columns shows that.

Steps alternate one and two processes, so that a noisy neighbour hurts both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.gateway import UNLIMITED, summarize
from bench.harness import Process, Run, ensure_users, log, run_loadgen, write_tokens


@dataclass
class ScaleOutOptions:
    steps: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 400])
    window: int = 4
    duration: int = 10
    warmup: int = 3
    webs: tuple[int, ...] = (1, 2)
    #: Load generator processes (node workers).
    procs: int = 1


def start_webs(run: Run, count: int, name: str, **overrides: Any) -> tuple[list[Process], str]:
    """`count` web processes on their own ports; the load generator's comma-separated URL."""
    started = [run.start_web(f"{name}-{n}", **UNLIMITED, **overrides) for n in range(count)]
    return [process for process, _ in started], ",".join(url for _, url in started)


def measure(run: Run, name: str, webs: int, load: dict[str, Any],
            **overrides: Any) -> dict[str, Any]:
    """One closed-loop run against `webs` web processes: accepted msg/s and CPU per process."""
    run.reset()
    processes, urls = start_webs(run, webs, name, **overrides)
    try:
        result = run_loadgen(run, name, urls, watch=run.watched(*processes), **load)
    finally:
        for process in processes:
            process.stop()
    entry = summarize(result, result.report["ok"])
    cpu = result.cpu_pct()
    entry["web_cpu_pct"] = [cpu.get(process.name) for process in processes]
    entry["redis_cpu_pct"] = cpu.get("redis")
    entry["total_cpu_pct"] = round(sum(entry["web_cpu_pct"]) + (entry["redis_cpu_pct"] or 0)
                                   + (entry["loadgen_cpu_pct"] or 0), 1)
    return entry


def scaleout(run: Run, options: ScaleOutOptions) -> dict[str, Any]:
    names = ensure_users(run, max(options.steps))
    tokens = write_tokens(run, names, run.directory / "scaleout.tokens")
    curve: dict[str, dict[str, dict[str, Any]]] = {str(webs): {} for webs in options.webs}
    for clients in options.steps:
        load = {"mode": "closed", "clients": clients, "window": options.window,
                "duration": options.duration, "warmup": options.warmup,
                "procs": options.procs, "connect-rate": 1000, "token-file": tokens}
        for webs in options.webs:
            entry = measure(run, f"scaleout-{webs}web-{clients}", webs, load)
            curve[str(webs)][str(clients)] = entry
            log(f"scaleout {clients} clients x {options.window}, {webs} web: "
                f"{entry['accepted_per_s']} msg/s, ack p99 {entry['latency_ms']['p99']} ms; "
                f"CPU web {entry['web_cpu_pct']} redis {entry['redis_cpu_pct']} loadgen "
                f"{entry['loadgen_cpu_pct']} = {entry['total_cpu_pct']} %")
    best = {webs: max(steps.values(), key=lambda e: e["accepted_per_s"])
            for webs, steps in curve.items()}
    one, two = (best.get(str(n), {}).get("accepted_per_s") for n in (1, 2))
    return {
        "options": vars(options),
        "best_msgs_per_s": {webs: entry["accepted_per_s"] for webs, entry in best.items()},
        "ratio_2_to_1": round(two / one, 3) if one and two else None,
        "curve": curve,
    }
