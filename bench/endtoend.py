"""End to end (issue: engine, performance): a web process and an engine, both with their
default settings, and N clients sending one message a second each. For each N in turn:

- rows keep pace: the rows committed per second over the window match the messages accepted
  per second, and once the clients stop, the backlog is gone within MAX_BATCH_AGE +
  SWEEP_INTERVAL;
- the lag from ack to commit (a row's `committed_at` minus the time of its stream entry id,
  which Redis stamps when the message is appended, just before the ack goes out) stays within
  MAX_BATCH_AGE + SWEEP_INTERVAL for every row;
- every client stays connected and every message is acknowledged ok.

The largest N that passes all three is the result; the steps stop at the first that fails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from bench.gateway import summarize
from bench.harness import Run, backlog, ensure_users, log, run_loadgen, write_tokens
from engine.settings import Settings

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Settings)}
#: The ack-to-commit bound the engine promises with its default settings.
LAG_LIMIT = _DEFAULTS["MAX_BATCH_AGE"] + _DEFAULTS["SWEEP_INTERVAL"]


@dataclass
class EndToEndOptions:
    steps: list[int] = field(default_factory=lambda: [1000, 2000, 3000, 4000, 5000])
    duration: int = 60
    warmup: int = 5
    connect_rate: int = 250
    procs: int = 2


def endtoend(run: Run, options: EndToEndOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"options": vars(options), "lag_limit_s": LAG_LIMIT, "steps": [],
                           "largest_n": 0}
    names = ensure_users(run, max(options.steps), prefix="e2e")
    for clients in options.steps:
        step = one_step(run, options, clients, names[:clients])
        out["steps"].append(step)
        log(f"end to end {clients} clients: {'PASS' if step['passed'] else 'FAIL'}: "
            f"{step['accepted_per_s']} msg/s accepted, {step['rows_per_s_in_window']} rows/s "
            f"committed, lag p99 {step['lag_s']['p99']} s max {step['lag_s']['max']} s, "
            f"drained {step['drained_after_s']} s after the clients stopped")
        if not step["passed"]:
            break
        out["largest_n"] = clients
    return out


def one_step(run: Run, options: EndToEndOptions, clients: int,
             names: list[str]) -> dict[str, Any]:
    assert run.db is not None and run.redis is not None
    run.reset()
    tokens = write_tokens(run, names, run.directory / f"e2e-{clients}.tokens")
    web, url = run.start_web(f"e2e-web-{clients}")
    engine = run.start_engine(f"e2e-engine-{clients}")
    result = run_loadgen(run, f"e2e-{clients}", url, watch=run.watched(web, engine),
                         mode="rate", rate=1, clients=clients, warmup=options.warmup,
                         duration=options.duration, procs=options.procs,
                         connect_rate=options.connect_rate, token_file=tokens,
                         connect_timeout=60)
    stopped = time.monotonic()
    drained_after = None
    while time.monotonic() - stopped < LAG_LIMIT + 5:
        if backlog(run) == 0:
            drained_after = round(time.monotonic() - stopped, 1)
            break
        time.sleep(0.2)
    engine.stop()
    web.stop()
    report = result.report
    window_start = time.time() - (time.monotonic() - stopped) - report["window_seconds"]
    lags, in_window = _lags(run, window_start, report["window_seconds"])
    step = summarize(result, report["ok"])
    step.update({
        "clients": clients,
        "connected_at_window_end": report["connected_at_window_end"],
        "rows_per_s_in_window": round(in_window / report["window_seconds"], 1),
        "lag_s": lags,
        "drained_after_s": drained_after,
    })
    keeps_pace = (drained_after is not None
                  and step["rows_per_s_in_window"] >= 0.95 * step["accepted_per_s"])
    step["passed"] = bool(
        keeps_pace and lags["max"] is not None and lags["max"] <= LAG_LIMIT
        and report["connected_at_window_end"] == clients and not report["not_ok"]
        and not report["timeouts"] and report["ok"] >= 0.99 * report["sent"])
    return step


def _lags(run: Run, window_start: float, window: float) -> tuple[dict[str, Any], int]:
    """Ack-to-commit lag percentiles over every row, in seconds, and how many rows were
    appended during the window."""
    assert run.db is not None
    with run.db.connect() as conn:
        rows = conn.exec_driver_sql("SELECT stream_id, committed_at FROM messages").all()
    lags = []
    in_window = 0
    epoch = dt.datetime(1970, 1, 1)
    for stream_id, committed_at in rows:
        appended = int(stream_id.split("-")[0]) / 1000
        lags.append((committed_at - epoch).total_seconds() - appended)
        in_window += window_start <= appended < window_start + window
    lags.sort()

    def pct(p: float) -> float | None:
        return round(lags[min(len(lags) - 1, int(p / 100 * len(lags)))], 2) if lags else None

    return {"p50": pct(50), "p99": pct(99), "max": round(lags[-1], 2) if lags else None,
            "rows": len(lags)}, in_window
