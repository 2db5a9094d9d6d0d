"""Reconnect storms: every client of a web process connecting at the same moment, as after a
restart (issue 13, section 5).

storm  For each size (3,000 and 5,000 clients; `--storm-clients` for a smaller smoke run),
       standard socket.io-client 4 websocket clients with reconnection on, carrying the tokens
       of USERS users, all connect at once (bench/loadgen/storm.js) to three servers in turn:
       a Node socket.io 4 server whose connection handler does nothing (the baseline,
       bench/loadgen/noop_server.js), Tributary's bare python-socketio server
       (bench/bare_server.py) and Tributary's web process. Reported per server: the time until
       all were connected, connect p50/p99 from the start of the storm, refusals (a
       connect_error the standard client does not retry) and transport-level retries; and the
       ratios of Tributary's and the bare server's time to Node's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from bench.gateway import start_bare
from bench.harness import (
    ROOT,
    Process,
    Run,
    ensure_users,
    free_port,
    log,
    spread_over_addresses,
    wait_for_http,
    write_tokens,
)

STORM = ROOT / "bench" / "loadgen" / "storm.js"
NOOP_SERVER = ROOT / "bench" / "loadgen" / "noop_server.js"
SERVERS = ("node", "bare", "tributary")


@dataclass
class StormOptions:
    sizes: list[int] = field(default_factory=lambda: [3000, 5000])
    users: int = 500
    procs: int = 2
    #: Seconds after the start before the clients still retrying are given up.
    timeout: int = 60


def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        raise RuntimeError("node is not installed: run `make bench`, which installs it")
    if not (ROOT / "bench" / "loadgen" / "node_modules" / "socket.io").is_dir():
        raise RuntimeError("bench/loadgen has no node_modules: run `npm ci` there (make bench)")
    return binary


def start_node(run: Run, name: str) -> tuple[Process, str]:
    port = free_port()
    process = run.start(name, [node(), str(NOOP_SERVER), str(port)])
    url = f"http://127.0.0.1:{port}"
    wait_for_http(process, f"{url}/socket.io/?EIO=4&transport=polling")
    return process, url


def run_storm(run: Run, name: str, url: str, clients: int, tokens: str,
              options: StormOptions) -> dict[str, Any]:
    argv = [node(), str(STORM), "--url", url, "--clients", str(clients), "--token-file", tokens,
            "--procs", str(options.procs), "--timeout", str(options.timeout)]
    for key, value in spread_over_addresses(url).items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    log_path = run.directory / f"{name}.storm.log"
    with log_path.open("w") as err_log:
        done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err_log, text=True,
                              timeout=options.timeout + 120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"storm {name} failed ({done.returncode}); see {log_path}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def storm(run: Run, options: StormOptions) -> dict[str, Any]:
    names = ensure_users(run, options.users)
    tokens = str(write_tokens(run, names, run.directory / "storm.tokens"))
    out: dict[str, Any] = {"options": vars(options)}
    for size in options.sizes:
        results: dict[str, dict[str, Any]] = {}
        for kind in SERVERS:
            run.reset()
            name = f"storm-{size}-{kind}"
            if kind == "node":
                server, url = start_node(run, name)
            elif kind == "bare":
                server, url = start_bare(run, name)
            else:
                server, url = run.start_web(name)
            results[kind] = run_storm(run, name, url, size, tokens, options)
            server.stop()
            report = results[kind]
            log(f"storm {size} {kind}: {report['connected']}/{size} connected, all in "
                f"{report['all_connected_s']} s, p50 {report['connect_ms']['p50']} ms, p99 "
                f"{report['connect_ms']['p99']} ms, {report['refused']} refused")
        out[str(size)] = {**results, "ratios": ratios(results)}
    return out


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Time until all were connected, and connect p99, of each server over Node's (None when
    a server did not get every client connected)."""

    def over_node(kind: str, value: Any) -> float | None:
        mine, base = value(results[kind]), value(results["node"])
        return round(mine / base, 2) if mine is not None and base else None

    return {
        "tributary_all_connected_vs_node": over_node("tributary", _all_connected),
        "bare_all_connected_vs_node": over_node("bare", _all_connected),
        "tributary_p99_vs_node": over_node("tributary", _p99),
        "bare_p99_vs_node": over_node("bare", _p99),
    }


def _all_connected(report: dict[str, Any]) -> float | None:
    value = report["all_connected_s"]
    return None if value is None else float(value)


def _p99(report: dict[str, Any]) -> float | None:
    value = report["connect_ms"]["p99"]
    return None if value is None else float(value)
