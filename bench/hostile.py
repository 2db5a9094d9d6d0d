"""Good clients while hostile ones attack (issue: hardening, the web transport).

GOOD clients send one message a second each through the load generator (socket.io-client,
websocket, an ack callback on every message) while one attack at a time (bench/attacks.py) runs
beside them: a login flood, unauthenticated engine.io sessions, slowloris, long-polling clients
that never fetch, a malformed-packet flood. Each phase has a web process of its own, with
default settings. For each, against the same good load with no attack (the mean of a run
before the attacks and one after them; how far apart they are shows the noise):

- the good clients' ack p99 and its ratio to the no-attack p99 (target: at most 2);
- the web process's resident memory, its peak over the phase and at the end;
- that nothing they sent was lost: every msg_id acknowledged `ok` is in its user's stream;
- what the attack did, and how many lines the web process logged meanwhile.

No engine runs: the web process's work ends at Redis, which is where the check looks. The
attackers connect from 127.0.0.2, the good clients from 127.1.0.1 (100 per address), as they
would from machines of their own: the web process limits new connections per address.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.harness import Process, Run, ensure_users, log, rss_bytes, run_loadgen, write_tokens
from engine import keys

ATTACKS = ("login", "unauthenticated", "slowloris", "polling", "malformed")
TARGET_RATIO = 2.0


@dataclass
class HostileOptions:
    clients: int = 100
    duration: int = 20
    warmup: int = 5
    attacks: tuple[str, ...] = ATTACKS
    #: Workers per attack, where not bench/attacks.py's default.
    concurrency: dict[str, int] = field(default_factory=dict)
    #: Seconds an attack runs before the good clients start connecting.
    head_start: float = 3.0


@contextlib.contextmanager
def rss_sampler(process: Process, every: float = 0.25) -> Iterator[dict[str, int]]:
    """The peak resident memory of `process` over the block (key "peak")."""
    reading = {"peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                reading["peak"] = max(reading["peak"], rss_bytes(process.pid))
            done.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield reading
    finally:
        done.set()
        sampler.join()


def start_attack(run: Run, attack: str, url: str, tokens: Any,
                 concurrency: int | None) -> Process:
    argv = [sys.executable, "-m", "bench.attacks", attack, "--url", url]
    if attack == "polling":
        argv += ["--token-file", str(tokens)]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return run.start(f"attack-{attack}", argv)


def stop_attack(process: Process) -> dict[str, Any]:
    process.popen.send_signal(signal.SIGTERM)
    try:
        process.popen.wait(30)
    except Exception:
        process.popen.kill()
        process.popen.wait()
    lines = [line for line in process.log().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": process.log()[-500:]}


def lost(run: Run, names: list[str], acked_file: Any) -> tuple[int, int]:
    """(acknowledged ok, of which missing from their user's stream)."""
    assert run.redis is not None
    acked = acked_file.read_text().split() if acked_file.exists() else []
    stored: dict[str, set[str]] = {}
    missing = 0
    for msg_id in acked:
        user = names[int(msg_id.split("-")[0]) % len(names)]
        if user not in stored:
            stored[user] = {orjson.loads(fields["d"])["msg_id"]
                            for _, fields in run.redis.xrange(keys.stream(user))}
        missing += msg_id not in stored[user]
    return len(acked), missing


def phase(run: Run, name: str, options: HostileOptions, names: list[str], tokens: Any,
          attacker_tokens: Any) -> dict[str, Any]:
    run.reset()
    web, url = run.start_web(f"hostile-web-{name}")
    start_lines = len(web.log().splitlines())
    acked_file = run.directory / f"hostile-{name}.acked"
    attack = None if name.startswith("none") else name
    with rss_sampler(web) as rss:
        attacker = (start_attack(run, attack, url, attacker_tokens,
                                 options.concurrency.get(attack)) if attack else None)
        if attacker is not None:
            time.sleep(options.head_start)
        try:
            # The attacker shares the machine's cores: its CPU is read too.
            watch = run.watched(web, *([attacker] if attacker is not None else []))
            load = run_loadgen(run, f"hostile-{name}", url, watch=watch, mode="rate",
                               rate=1, clients=options.clients, warmup=options.warmup,
                               duration=options.duration, token_file=tokens,
                               connect_rate=200, acked_file=acked_file)
        finally:
            did = stop_attack(attacker) if attacker is not None else None
    acked, missing = lost(run, names, acked_file)
    rss_end = rss_bytes(web.pid) if web.alive() else None
    logged = len(web.log().splitlines()) - start_lines
    web.stop()
    report = load.report
    result = {
        "attack": attack,
        "ack_ms": report["latency_ms"],
        "sent": report["sent"],
        "acked_ok": report["ok"],
        "not_ok": report["not_ok"],
        "timeouts": report["timeouts"],
        "connect_errors": report["connect_errors"],
        "disconnects": report["disconnects"],
        "acknowledged_ok_in_all": acked,
        "lost": missing,
        "rss_peak_mib": round(rss["peak"] / 2**20, 1),
        "rss_end_mib": round(rss_end / 2**20, 1) if rss_end else None,
        "cpu_pct": load.cpu_pct(),
        "web_log_lines": logged,
        "attack_did": did,
        "loadgen_lag_p99_ms": report["loadgen"]["event_loop_delay_p99_ms"],
    }
    log(f"hostile {name}: ack p99 {report['latency_ms']['p99']} ms, rss peak "
        f"{result['rss_peak_mib']} MiB, lost {missing}/{acked}, web logged {logged} lines; "
        f"attack: {did}")
    return result


def hostile(run: Run, options: HostileOptions) -> dict[str, Any]:
    names = ensure_users(run, options.clients)
    tokens = write_tokens(run, names, run.directory / "hostile.tokens")
    attackers = ensure_users(run, 10, prefix="mallory")
    attacker_tokens = write_tokens(run, attackers, run.directory / "hostile-mallory.tokens")
    phases: dict[str, dict[str, Any]] = {}
    for name in ("none", *options.attacks, "none-again"):
        phases[name] = phase(run, name, options, names, tokens, attacker_tokens)
    # The baseline is the mean of the two runs without an attack, one before the attacks and
    # one after them: how far apart they are shows how noisy the machine was.
    quiet = [phases[name]["ack_ms"]["p99"] for name in ("none", "none-again")]
    baseline = round(sum(quiet) / 2, 2) if all(quiet) else None
    for result in phases.values():
        p99 = result["ack_ms"]["p99"]
        result["p99_ratio"] = round(p99 / baseline, 2) if p99 and baseline else None
        result["met"] = (result["p99_ratio"] is not None and result["p99_ratio"] <= TARGET_RATIO
                         and result["lost"] == 0)
    return {"options": {**vars(options), "attacks": list(options.attacks)},
            "baseline_p99_ms": baseline, "target_ratio": TARGET_RATIO, "phases": phases}
