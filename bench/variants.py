"""The web process against a variant of itself, in one invocation (`python -m bench wsproto`,
`python -m bench packing`).

Each benchmark starts the web process as shipped (`python -m webapp`) and a variant that
differs in one thing, by a module of bench/ that changes that thing and then serves exactly
what `python -m webapp` serves:

wsproto   bench/wsproto_transport.py: wsproto reads and writes the websocket frames in place
          of Tributary's own frame code (webapp/realtime/transport.py).
packing   bench/per_user_appends.py: every user of a flush gets an ingest.lua call of its own,
          as before a call carried up to streams.USERS_PER_APPEND users.

Both are measured two ways:

capacity  Closed loop (as `python -m bench capacity`), rounds alternating the two; the ratio is
          taken between the medians, of accepted messages and of web CPU per message.
hold      CLIENTS clients at one message a second (as `python -m bench hold`, without the idle
          phase) against each: ack percentiles and the web process's CPU per message.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.gateway import UNLIMITED, summarize
from bench.harness import Run, ensure_users, log, run_loadgen, write_tokens

#: Benchmark -> (the shipped process's name, its module), (the variant's name, its module).
COMPARISONS = {
    "wsproto": (("own", "webapp"), ("wsproto", "bench.wsproto_transport")),
    "packing": (("packed", "webapp"), ("per-user", "bench.per_user_appends")),
}


@dataclass
class VariantOptions:
    capacity_clients: int = 200
    capacity_rounds: int = 3
    capacity_duration: int = 20
    #: Below the web process's saturation on a slow 2-core machine, so that the latencies
    #: compare the two rather than a queue.
    hold_clients: int = 2000
    hold_duration: int = 40


def compare(run: Run, benchmark: str, options: VariantOptions) -> dict[str, Any]:
    (shipped, _), (variant, _) = kinds = COMPARISONS[benchmark]
    cap = _capacity(run, benchmark, dict(kinds), options)
    hold = _hold(run, benchmark, dict(kinds), options)
    return {
        "options": vars(options), "shipped": shipped, "variant": variant,
        "capacity": cap, "hold": hold,
        "capacity_ratio": _ratio(cap[variant]["msgs_per_s"], cap[shipped]["msgs_per_s"]),
        "capacity_cpu_per_msg_ratio": _ratio(cap[variant]["server_cpu_us_per_msg"],
                                             cap[shipped]["server_cpu_us_per_msg"]),
        "hold_cpu_per_msg_ratio": _ratio(hold[variant]["server_cpu_us_per_msg"],
                                         hold[shipped]["server_cpu_us_per_msg"]),
        "hold_p99_ratio": _ratio(hold[variant]["latency_ms"]["p99"],
                                 hold[shipped]["latency_ms"]["p99"]),
    }


def _capacity(run: Run, benchmark: str, kinds: dict[str, str],
              options: VariantOptions) -> dict[str, Any]:
    tokens = write_tokens(run, ensure_users(run, options.capacity_clients),
                          run.directory / f"{benchmark}-capacity.tokens")
    load = {"mode": "closed", "clients": options.capacity_clients, "window": 4,
            "duration": options.capacity_duration, "warmup": 5, "procs": 1,
            "connect-rate": 1000}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for number in range(1, options.capacity_rounds + 1):
        for kind, module in kinds.items():
            run.reset()
            server, url = run.start_web(f"{benchmark}-{kind}-{number}", module=module,
                                        **UNLIMITED)
            result = run_loadgen(run, f"{benchmark}-capacity-{kind}-{number}", url,
                                 watch=run.watched(server), token_file=tokens, **load)
            server.stop()
            rounds[kind].append(summarize(result, result.report["ok"]))
            log(f"{benchmark} capacity round {number} {kind}: "
                f"{rounds[kind][-1]['accepted_per_s']} msg/s, server CPU "
                f"{rounds[kind][-1]['server_cpu_pct']}%, "
                f"{rounds[kind][-1]['server_cpu_us_per_msg']} µs per message")
    return {kind: {"msgs_per_s": statistics.median(r["accepted_per_s"] for r in results),
                   "server_cpu_us_per_msg": statistics.median(
                       r["server_cpu_us_per_msg"] or 0 for r in results),
                   "rounds": results}
            for kind, results in rounds.items()}


def _hold(run: Run, benchmark: str, kinds: dict[str, str],
          options: VariantOptions) -> dict[str, Any]:
    tokens = write_tokens(run, ensure_users(run, options.hold_clients),
                          run.directory / f"{benchmark}-hold.tokens")
    out: dict[str, Any] = {}
    for kind, module in kinds.items():
        run.reset()
        server, url = run.start_web(f"{benchmark}-hold-{kind}", module=module)
        time.sleep(2)  # start-up settles before the load
        result = run_loadgen(run, f"{benchmark}-hold-{kind}", url, watch=run.watched(server),
                             mode="rate", rate=1.0, warmup=10, duration=options.hold_duration,
                             clients=options.hold_clients, procs=2, connect_rate=250,
                             token_file=tokens, connect_timeout=60)
        server.stop()
        out[kind] = summarize(result, result.report["ok"])
        out[kind]["connected_at_window_end"] = result.report["connected_at_window_end"]
        log(f"{benchmark} hold {kind}: {options.hold_clients} clients x 1/s: ack p99 "
            f"{result.report['latency_ms']['p99']} ms, "
            f"{out[kind]['server_cpu_us_per_msg']} µs of web CPU per message")
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None
