"""Tributary's own websocket frame code against wsproto in its place (`python -m bench wsproto`).

The web process reads and writes websocket frames with its own code
(webapp/realtime/transport.py). wsproto, a maintained pure-Python implementation, could do the
same; this benchmark says which is faster, on the full path, in one invocation:

capacity  Closed loop (as `python -m bench capacity`), rounds alternating the web process as
          shipped and the same process with wsproto doing the frames
          (bench/wsproto_transport.py); the ratio is taken between the medians.
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

KINDS = {"own": "webapp", "wsproto": "bench.wsproto_transport"}


@dataclass
class WsprotoOptions:
    capacity_clients: int = 200
    capacity_rounds: int = 3
    capacity_duration: int = 20
    #: Below the web process's saturation on a slow 2-core machine, so that the latencies
    #: compare the frame code rather than a queue.
    hold_clients: int = 2000
    hold_duration: int = 40


def wsproto(run: Run, options: WsprotoOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"options": vars(options), "capacity": _capacity(run, options),
                           "hold": _hold(run, options)}
    cap, hold = out["capacity"], out["hold"]
    out["capacity_wsproto_to_own"] = _ratio(cap["wsproto"]["msgs_per_s"],
                                            cap["own"]["msgs_per_s"])
    out["capacity_cpu_per_msg_wsproto_to_own"] = _ratio(
        cap["wsproto"]["server_cpu_us_per_msg"], cap["own"]["server_cpu_us_per_msg"])
    out["hold_cpu_per_msg_wsproto_to_own"] = _ratio(
        hold["wsproto"]["server_cpu_us_per_msg"], hold["own"]["server_cpu_us_per_msg"])
    out["hold_p99_wsproto_to_own"] = _ratio(hold["wsproto"]["latency_ms"]["p99"],
                                            hold["own"]["latency_ms"]["p99"])
    return out


def _capacity(run: Run, options: WsprotoOptions) -> dict[str, Any]:
    tokens = write_tokens(run, ensure_users(run, options.capacity_clients),
                          run.directory / "wsproto-capacity.tokens")
    load = {"mode": "closed", "clients": options.capacity_clients, "window": 4,
            "duration": options.capacity_duration, "warmup": 5, "procs": 1,
            "connect-rate": 1000}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for number in range(1, options.capacity_rounds + 1):
        for kind, module in KINDS.items():
            run.reset()
            server, url = run.start_web(f"wsproto-{kind}-{number}", module=module, **UNLIMITED)
            result = run_loadgen(run, f"wsproto-capacity-{kind}-{number}", url,
                                 watch=run.watched(server), token_file=tokens, **load)
            server.stop()
            rounds[kind].append(summarize(result, result.report["ok"]))
            log(f"wsproto capacity round {number} {kind}: "
                f"{rounds[kind][-1]['accepted_per_s']} msg/s, server CPU "
                f"{rounds[kind][-1]['server_cpu_pct']}%")
    return {kind: {"msgs_per_s": statistics.median(r["accepted_per_s"] for r in results),
                   "server_cpu_us_per_msg": statistics.median(
                       r["server_cpu_us_per_msg"] or 0 for r in results),
                   "rounds": results}
            for kind, results in rounds.items()}


def _hold(run: Run, options: WsprotoOptions) -> dict[str, Any]:
    tokens = write_tokens(run, ensure_users(run, options.hold_clients),
                          run.directory / "wsproto-hold.tokens")
    out: dict[str, Any] = {}
    for kind, module in KINDS.items():
        run.reset()
        server, url = run.start_web(f"wsproto-hold-{kind}", module=module)
        time.sleep(2)  # start-up settles before the load
        result = run_loadgen(run, f"wsproto-hold-{kind}", url, watch=run.watched(server),
                             mode="rate", rate=1.0, warmup=10, duration=options.hold_duration,
                             clients=options.hold_clients, procs=2, connect_rate=250,
                             token_file=tokens, connect_timeout=60)
        server.stop()
        out[kind] = summarize(result, result.report["ok"])
        out[kind]["connected_at_window_end"] = result.report["connected_at_window_end"]
        log(f"wsproto hold {kind}: {options.hold_clients} clients x 1/s: ack p99 "
            f"{result.report['latency_ms']['p99']} ms, "
            f"{out[kind]['server_cpu_us_per_msg']} µs of web CPU per message")
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None
