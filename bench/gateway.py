"""The web process under load (issue: ingest gateway, performance).

capacity  The highest sustained accepted rate through the full path (authenticated
          connections, validation, rate limiting, group-committed XADD), against a bare
          python-socketio server whose `data` handler does nothing, driven by the same load
          generator in the same invocation. Closed loop: every client keeps WINDOW messages
          awaiting their ack. Rounds alternate bare and full, so that a noisy neighbour hurts
          both; the ratio is taken between the medians. The full path also runs with
          METRICS_ENABLED=false in the same rounds: what counting every message for
          Prometheus costs (metrics on / off, target >= 0.95).
hold      One web process holding CLIENTS websocket clients that each send one message a
          second: ack latency percentiles, and the memory an idle connection costs (resident
          memory with every client connected and idle, minus before, per connection). With
          --hold-dashboard, the loaded window is run again with the operator dashboard open (its
          page loaded by a signed-in viewer and its live connection held, bench/dashboard.py),
          and the web process's CPU per message is compared with the window without it.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import dashboard
from bench.harness import (
    LoadResult,
    Run,
    ensure_users,
    free_port,
    log,
    rss_bytes,
    run_loadgen,
    wait_for_http,
    write_tokens,
)

#: The rate limiter runs on the full path during capacity runs, with a budget no client
#: reaches: the point is the ceiling of the process, not the limit.
UNLIMITED: dict[str, Any] = {"RATE_LIMIT": 1_000_000, "RATE_BURST": 1_000_000}


@dataclass
class CapacityOptions:
    clients: int = 200
    window: int = 4
    duration: int = 20
    warmup: int = 5
    rounds: int = 2
    procs: int = 1
    #: Also run the full path without metrics, for the metrics on / off ratio.
    metrics_baseline: bool = True


@dataclass
class HoldOptions:
    clients: int = 5000
    rate: float = 1.0
    duration: int = 60
    warmup: int = 10
    connect_rate: int = 250
    idle_seconds: int = 10
    procs: int = 2
    dashboard: bool = False


def start_bare(run: Run, name: str, *extra: str) -> tuple[Any, str]:
    port = free_port()
    process = run.start(name, [sys.executable, "-m", "bench.bare_server", "--port", str(port),
                               *extra])
    url = f"http://127.0.0.1:{port}"
    wait_for_http(process, f"{url}/socket.io/?EIO=4&transport=polling")
    return process, url


def summarize(result: LoadResult, accepted: int) -> dict[str, Any]:
    report = result.report
    seconds = report["window_seconds"]
    return {
        "accepted_per_s": round(accepted / seconds, 1),
        "acked_per_s": report["acked_per_s"],
        "sent_per_s": report["sent_per_s"],
        "latency_ms": report["latency_ms"],
        "not_ok": report["not_ok"],
        "timeouts": report["timeouts"],
        "connect_errors": report["connect_errors"],
        "disconnects": report["disconnects"],
        "server_cpu_pct": _round(result.server_cpu_pct),
        "cpu_pct": result.cpu_pct(),
        "server_cpu_us_per_msg": _round(1e6 * result.server_cpu / accepted
                                        if result.server_cpu and accepted else None),
        "loadgen_cpu_pct": report["loadgen"]["cpu_pct"],
        "loadgen_lag_p99_ms": report["loadgen"]["event_loop_delay_p99_ms"],
    }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def capacity(run: Run, options: CapacityOptions) -> dict[str, Any]:
    names = ensure_users(run, options.clients)
    tokens = write_tokens(run, names, run.directory / "capacity.tokens")
    load = {"mode": "closed", "clients": options.clients, "window": options.window,
            "duration": options.duration, "warmup": options.warmup, "procs": options.procs,
            "connect-rate": 1000}
    rounds: dict[str, list[dict[str, Any]]] = {"bare": [], "full": [], "nometrics": [],
                                               "stock": []}
    kinds = ("bare", "full", "nometrics") if options.metrics_baseline else ("bare", "full")
    for number in range(1, options.rounds + 1):
        for kind in kinds:
            run.reset()
            if kind == "bare":
                server, url = start_bare(run, f"bare-{number}")
            elif kind == "full":
                server, url = run.start_web(f"web-{number}", **UNLIMITED)
            else:
                server, url = run.start_web(f"web-nometrics-{number}", METRICS_ENABLED="false",
                                            **UNLIMITED)
            result = run_loadgen(run, f"capacity-{kind}-{number}", url, watch=run.watched(server),
                                 token_file=tokens, **load)
            server.stop()
            accepted = (result.report["ok"] if kind != "bare"
                        else result.report["other_acks"])
            rounds[kind].append(summarize(result, accepted))
            log(f"capacity round {number} {kind}: {rounds[kind][-1]['accepted_per_s']} msg/s "
                f"accepted, p99 {result.report['latency_ms']['p99']} ms, server CPU "
                f"{rounds[kind][-1]['server_cpu_pct']}%")
    # python-socketio as shipped (gevent-websocket's own handler, one greenlet per event),
    # for reference: what the transport and handler changes bought.
    server, url = start_bare(run, "stock", "--ws", "gevent-websocket", "--async-handlers")
    result = run_loadgen(run, "capacity-stock", url, watch=run.watched(server),
                         token_file=tokens, **load)
    server.stop()
    rounds["stock"].append(summarize(result, result.report["other_acks"]))
    log(f"capacity stock python-socketio: {rounds['stock'][-1]['accepted_per_s']} msg/s")
    bare = statistics.median(r["accepted_per_s"] for r in rounds["bare"])
    full = statistics.median(r["accepted_per_s"] for r in rounds["full"])
    stock = rounds["stock"][0]["accepted_per_s"]
    nometrics = (statistics.median(r["accepted_per_s"] for r in rounds["nometrics"])
                 if rounds["nometrics"] else None)
    return {
        "options": vars(options),
        "bare_msgs_per_s": bare,
        "full_msgs_per_s": full,
        "stock_msgs_per_s": stock,
        "nometrics_msgs_per_s": nometrics,
        "ratio_full_to_bare": round(full / bare, 3) if bare else None,
        "ratio_full_to_stock": round(full / stock, 3) if stock else None,
        "ratio_metrics_on_to_off": round(full / nometrics, 3) if nometrics else None,
        "target_ratio": 0.8,
        "target_metrics_ratio": 0.95,
        "rounds": rounds,
    }


def hold(run: Run, options: HoldOptions) -> dict[str, Any]:
    names = ensure_users(run, options.clients)
    tokens = write_tokens(run, names, run.directory / "hold.tokens")
    common = {"clients": options.clients, "connect-rate": options.connect_rate,
              "procs": options.procs, "token-file": tokens, "connect-timeout": 60}
    out: dict[str, Any] = {"options": vars(options)}
    for kind in ("bare", "full"):
        run.reset()
        if kind == "bare":
            server, url = start_bare(run, "hold-bare")
        else:
            server, url = run.start_web("hold-web")
        # The process settles after start-up (imports, pools) before the baseline is read.
        time.sleep(2)
        before = rss_bytes(server.pid)
        idle = run_loadgen(run, f"hold-idle-{kind}", url, watch=run.watched(server),
                           mode="rate", rate=0, warmup=2, duration=options.idle_seconds,
                           **common)
        connected = idle.report["connected_at_window_end"]
        per_connection = ((idle.rss_at_end or 0) - before) / connected if connected else None
        entry: dict[str, Any] = {
            "rss_before_mib": round(before / 2**20, 1),
            "rss_idle_connected_mib": _round((idle.rss_at_end or 0) / 2**20),
            "idle_connected": connected,
            "all_connected": connected == options.clients,
            "kib_per_idle_connection": _round(per_connection / 1024 if per_connection else None),
            "connect_ms": idle.report["connect_ms"],
            "connect_errors": idle.report["connect_errors"],
        }
        log(f"hold {kind}: {connected} idle connections, "
            f"{entry['kib_per_idle_connection']} KiB each")
        # The bare server under the same load, for reference: what the framework alone costs.
        loaded = run_loadgen(run, f"hold-load-{kind}", url, watch=run.watched(server),
                             mode="rate", rate=options.rate, warmup=options.warmup,
                             duration=options.duration, **common)
        entry["load"] = summarize(loaded, loaded.report["ok" if kind == "full" else "other_acks"])
        entry["load"]["connected_at_window_end"] = loaded.report["connected_at_window_end"]
        log(f"hold {kind}: {options.clients} clients x {options.rate}/s: "
            f"{entry['load']['accepted_per_s']} msg/s, ack p99 "
            f"{loaded.report['latency_ms']['p99']} ms, CPU {entry['load']['cpu_pct']}")
        entry["load"]["all_connected"] = (loaded.report["connected_at_window_end"]
                                          == options.clients)
        entry["load"]["rss_mib"] = _round((loaded.rss_at_end or 0) / 2**20)
        if kind == "full":
            out["ack_p99_ms"] = loaded.report["latency_ms"]["p99"]
            out["target_p99_ms"] = 100
            if options.dashboard:
                out["dashboard"] = with_dashboard(run, server, url, options, common,
                                                  entry["load"])
        server.stop()
        out[kind] = entry
    return out


def with_dashboard(run: Run, server: Any, url: str, options: HoldOptions,
                   common: dict[str, Any], without: dict[str, Any]) -> dict[str, Any]:
    """The same loaded window with the operator dashboard open; the CPU it adds per message."""
    with dashboard.dashboard_open(run, url) as heard:
        loaded = run_loadgen(run, "hold-load-dashboard", url, watch=run.watched(server),
                             mode="rate", rate=options.rate, warmup=options.warmup,
                             duration=options.duration, **common)
        events = dict(heard)
    load = summarize(loaded, loaded.report["ok"])
    before, after = without["server_cpu_us_per_msg"], load["server_cpu_us_per_msg"]
    added = round(100 * (after / before - 1), 1) if before and after else None
    log(f"hold with the dashboard open: {after} us of CPU per message (without: {before}) "
        f"-> {added:+} %; the dashboard heard {events}")
    return {"cpu_us_per_msg_without": before, "cpu_us_per_msg_with": after,
            "added_pct": added, "target_pct": 5, "events_heard": events, "load": load}
