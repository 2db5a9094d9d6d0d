"""The engine draining a backlog into MariaDB, against a raw PyMySQL multi-row INSERT of the
same rows (issue: engine, performance).

Each round fills the user streams through the gateway's own append path (ingest.lua, the
stream entries a web process writes), then:

raw     the rows those entries become, prepared beforehand, inserted with PyMySQL
        `executemany` (which sends one multi-row INSERT per call) BATCH rows per transaction,
        into the same `messages` table; timed from the first INSERT to the last COMMIT.
engine  `python -m engine` with BATCH_MAX=BATCH started on the full streams; timed from the
        moment it reports itself started (its first sweep follows at once) until the last row
        is in the table (`MAX(id)` of the freshly truncated table, polled every 20 ms). Its
        time includes everything the engine does: XREADGROUP, decoding, leases, the
        idempotent INSERT, the aggregates, XACK and XDEL, and the receipts.

Rounds alternate raw and engine for each batch size; the ratio is taken between medians. With
`--drain-compare PATH` each round also times the engine of another checkout (the code before a
change, say) on the same entries, so a before/after comparison shares the machine's load.

`drain-cluster` runs the engine on the same entries twice per round, once from this run's
single Redis and once from a Redis Cluster of 3 masters and 3 replicas made for the run on
spare loopback ports (tests/cluster_support.py); the ratio is cluster rows/s over single-Redis
rows/s, between medians.

`drain-scale` drains the same backlog with 1, 2, 3… engine processes (`--engines`) sharing the
consumer group. All the users' queues are paused while the engines start; once every engine
has started and listens for sweep requests, the queues are resumed and a sweep asked for
(`control.request_sweep`, the dashboard's "write now"), so every engine starts at once; timed
from there to the last row. The CPU time of the engines, MariaDB and Redis over that window is
read from /proc.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from bench.harness import ROOT, Run, backlog, cpu_seconds, database_server_pid, log, wait_until
from engine import control, keys, streams
from engine.db import normalize_url
from engine.messages import decode, validate
from engine.scripts import load_all
from engine.storage import MySQLStorage, utc_now
from engine.streams import Entry
from engine.sweeper import PER_STREAM_COUNT, STREAMS_PER_READ
from engine.writer import row_of

RAW_INSERT = ("INSERT INTO messages (user_id, msg_id, message, value, `key`, `timestamp`, "
              "received_at, stream_id, committed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")
#: Messages per ingest.lua call while filling.
FILL_CHUNK = 200


@dataclass
class DrainOptions:
    entries: int = 200_000
    users: int = 1000
    batch: int = 0  # 0: both 1000 and the engine's default BATCH_MAX
    rounds: int = 2
    #: Another checkout whose engine is timed too, round for round (before/after a change).
    compare: Path | None = None
    #: Engine counts for drain-scale.
    engines: list[int] = field(default_factory=lambda: [1, 2, 3])

    def sizes(self) -> list[int]:
        return [self.batch] if self.batch else [1000, 5000]


def fill(run: Run, options: DrainOptions) -> None:
    """`entries` messages over `users` streams, as the gateway appends them."""
    assert run.redis is not None
    load_all(run.redis)
    limits = streams.Limits("bench", 0, 1, 10**9)
    per_user = options.entries // options.users
    body = "x" * 64
    users = [f"drain{u}" for u in range(options.users)]
    for start in range(0, per_user, FILL_CHUNK):
        count = min(FILL_CHUNK, per_user - start)
        streams.append_all(run.redis, [
            (user, limits, [validate({"msg_id": f"m{start + i}", "message": body,
                                      "timestamp": "2026-11-26T12:00:00.000Z", "value": start + i},
                                     user, 4096).data for i in range(count)])
            for user in users])
    total = sum(run.redis.xlen(keys.stream(user)) for user in users)
    if total != per_user * options.users:
        raise RuntimeError(f"filled {total} entries, expected {per_user * options.users}")


def prepared_rows(run: Run, storage: MySQLStorage, users: int) -> list[tuple[Any, ...]]:
    """The INSERT parameters of every entry, made by the engine's own conversion, in the order
    the engine reads them (streams in groups of STREAMS_PER_READ, PER_STREAM_COUNT entries of
    each per read)."""
    assert run.redis is not None
    by_user = {f"drain{u}": run.redis.xrange(keys.stream(f"drain{u}")) for u in range(users)}
    names = list(by_user)
    longest = max(len(entries) for entries in by_user.values())
    rows = []
    for offset in range(0, longest, PER_STREAM_COUNT):
        for first in range(0, len(names), STREAMS_PER_READ):
            for user in names[first:first + STREAMS_PER_READ]:
                for entry_id, fields in by_user[user][offset:offset + PER_STREAM_COUNT]:
                    rows.append(row_of(Entry(user, entry_id, fields["d"]), decode(fields["d"])))
    return storage.message_params(rows, utc_now())


def raw_insert(storage: MySQLStorage, params: list[tuple[Any, ...]], batch: int) -> float:
    """Seconds to insert `params` with PyMySQL, `batch` rows per multi-row INSERT and COMMIT."""
    conn = pymysql.connect(**storage._params)
    try:
        cursor = conn.cursor()
        started = time.perf_counter()
        for first in range(0, len(params), batch):
            cursor.executemany(RAW_INSERT, params[first:first + batch])
            conn.commit()
        return time.perf_counter() - started
    finally:
        conn.close()


def engine_drain(run: Run, name: str, expected: int, batch: int, tree: Path = ROOT) -> float:
    """Seconds from the engine's start to the last of `expected` rows in the table; the engine
    is the one of the checkout at `tree`."""
    assert run.db is not None
    process = run.start(name, [sys.executable, "-m", "engine"],
                        run.service_env(LOG_LEVEL="INFO", BATCH_MAX=batch), cwd=tree)
    started = wait_until(lambda: "started:" in process.log() and time.perf_counter(), 60,
                         "the engine to start", interval=0.01)
    try:
        with run.db.connect() as conn:
            def done() -> bool:
                if not process.alive():
                    raise RuntimeError(f"the engine exited:\n{process.log()}")
                rows = conn.exec_driver_sql("SELECT MAX(id) FROM messages").scalar()
                conn.commit()
                return bool(rows and rows >= expected)

            wait_until(done, 600, f"{expected} rows", interval=0.02)
        return time.perf_counter() - started
    finally:
        process.stop()


def truncate(run: Run) -> None:
    assert run.db is not None
    with run.db.begin() as conn:
        for table in ("messages", "user_stats", "dead_letters"):
            conn.exec_driver_sql(f"TRUNCATE TABLE {table}")


def drain(run: Run, options: DrainOptions) -> dict[str, Any]:
    assert run.db is not None
    storage = MySQLStorage(normalize_url(run.db.url.render_as_string(hide_password=False)))
    expected = (options.entries // options.users) * options.users
    run.reset()
    fill(run, options)
    params = prepared_rows(run, storage, options.users)
    out: dict[str, Any] = {"options": {"entries": expected, "users": options.users,
                                       "rounds": options.rounds}, "by_batch": {}}
    for batch in options.sizes():
        raw_times: list[float] = []
        engine_times: list[float] = []
        compared_times: list[float] = []
        for number in range(1, options.rounds + 1):
            truncate(run)
            raw_times.append(raw_insert(storage, params, batch))
            log(f"drain batch {batch} round {number}: raw {expected / raw_times[-1]:,.0f} rows/s")
            truncate(run)
            if number > 1 or batch != options.sizes()[0]:
                run.reset()
                fill(run, options)
            engine_times.append(engine_drain(run, f"drain-engine-{batch}-{number}", expected,
                                             batch))
            log(f"drain batch {batch} round {number}: engine "
                f"{expected / engine_times[-1]:,.0f} rows/s")
            check_drained(run, expected)
            if options.compare is not None:
                truncate(run)
                run.reset()
                fill(run, options)
                compared_times.append(engine_drain(run, f"drain-compared-{batch}-{number}",
                                                   expected, batch, options.compare))
                log(f"drain batch {batch} round {number}: engine of {options.compare} "
                    f"{expected / compared_times[-1]:,.0f} rows/s")
                check_drained(run, expected)
        raw = expected / statistics.median(raw_times)
        engine = expected / statistics.median(engine_times)
        out["by_batch"][str(batch)] = {
            "raw_rows_per_s": round(raw), "engine_rows_per_s": round(engine),
            "ratio": round(engine / raw, 3),
            "raw_seconds": [round(t, 3) for t in raw_times],
            "engine_seconds": [round(t, 3) for t in engine_times]}
        if compared_times:
            compared = expected / statistics.median(compared_times)
            out["by_batch"][str(batch)].update({
                "compared_rows_per_s": round(compared),
                "compared_ratio": round(compared / raw, 3),
                "compared_seconds": [round(t, 3) for t in compared_times]})
    headline = out["by_batch"][str(options.sizes()[-1])]
    out.update({"batch": options.sizes()[-1], "raw_rows_per_s": headline["raw_rows_per_s"],
                "engine_rows_per_s": headline["engine_rows_per_s"],
                "ratio_engine_to_raw": headline["ratio"], "target_ratio": 0.8})
    if options.compare is not None:
        out["options"]["compare"] = str(options.compare)
    return out


def check_drained(run: Run, expected: int) -> None:
    """Every row once, every entry acknowledged and deleted: a fast drain that lost or doubled
    something would not count."""
    assert run.db is not None and run.redis is not None
    with run.db.connect() as conn:
        rows, distinct = conn.exec_driver_sql(
            "SELECT COUNT(*), COUNT(DISTINCT user_id, msg_id) FROM messages").one()
        counted = conn.exec_driver_sql("SELECT SUM(message_count) FROM user_stats").scalar()
    wait_until(lambda: backlog(run) == 0, 30, "the streams to empty")
    if rows != expected or distinct != expected or int(counted or 0) != expected:
        raise RuntimeError(f"drain check failed: {rows} rows, {distinct} distinct, "
                           f"{counted} counted in user_stats, expected {expected}")


def drain_cluster(run: Run, options: DrainOptions) -> dict[str, Any]:
    """The engine draining the same backlog from one Redis and from a 3-master cluster."""
    from tests.cluster_support import TestCluster

    expected = (options.entries // options.users) * options.users
    batch = options.batch or 5000
    cluster = TestCluster(run.directory / "cluster")
    cluster.start()
    cluster_client = cluster.client()
    single = (run.redis_url, run.redis)
    targets = {"single": single, "cluster": (cluster.url, cluster_client)}
    times: dict[str, list[float]] = {name: [] for name in targets}
    try:
        for number in range(1, options.rounds + 1):
            for name, (url, client) in targets.items():
                run.redis_url, run.redis = url, client
                run.reset()
                fill(run, options)
                times[name].append(engine_drain(run, f"drain-{name}-{number}", expected, batch))
                log(f"drain-cluster round {number}: {name} "
                    f"{expected / times[name][-1]:,.0f} rows/s")
                check_drained(run, expected)
    finally:
        run.redis_url, run.redis = single
        cluster_client.close()
        cluster.stop()
    rates = {name: expected / statistics.median(seconds) for name, seconds in times.items()}
    return {"options": {"entries": expected, "users": options.users, "rounds": options.rounds,
                        "batch": batch},
            "single_rows_per_s": round(rates["single"]),
            "cluster_rows_per_s": round(rates["cluster"]),
            "ratio_cluster_to_single": round(rates["cluster"] / rates["single"], 3),
            "seconds": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
            "target_ratio": 0.8}


def drain_scale(run: Run, options: DrainOptions) -> dict[str, Any]:
    """The same backlog drained by 1, 2, 3… engines started together; rows/s and CPU."""
    expected = (options.entries // options.users) * options.users
    batch = options.batch or 5000
    database_pid = database_server_pid()
    times: dict[int, list[float]] = {count: [] for count in options.engines}
    cpu: dict[int, list[dict[str, float]]] = {count: [] for count in options.engines}
    for number in range(1, options.rounds + 1):
        for count in options.engines:
            run.reset()
            fill(run, options)
            seconds, used = engines_drain(run, f"drain-scale-{count}-{number}", count, expected,
                                          batch, database_pid)
            times[count].append(seconds)
            cpu[count].append({name: round(100 * value / seconds, 1)
                               for name, value in used.items()})
            log(f"drain-scale round {number}: {count} engine(s) {expected / seconds:,.0f} "
                f"rows/s, CPU % {cpu[count][-1]}")
            check_drained(run, expected)
    rates = {count: expected / statistics.median(seconds) for count, seconds in times.items()}
    first = rates[options.engines[0]]
    return {"options": {"entries": expected, "users": options.users, "rounds": options.rounds,
                        "batch": batch, "engines": options.engines},
            "by_engines": {str(count): {
                "rows_per_s": round(rate), "ratio_to_first": round(rate / first, 3),
                "seconds": [round(t, 3) for t in times[count]],
                "cpu_pct": _median_cpu(cpu[count])} for count, rate in rates.items()}}


def engines_drain(run: Run, name: str, count: int, expected: int, batch: int,
                  database_pid: int | None) -> tuple[float, dict[str, float]]:
    """Seconds for `count` engines, started together on paused queues and then let go, to
    write `expected` rows; and the CPU seconds the engines (together), the database server
    and Redis used meanwhile."""
    assert run.db is not None and run.redis is not None and run.redis_process is not None
    users = streams.registered_users(run.redis)
    pipe = run.redis.pipeline(transaction=False)
    for user in users:
        control.pause(pipe, user, "bench")
    pipe.execute()
    engines = [run.start(f"{name}-{n}", [sys.executable, "-m", "engine"],
                         run.service_env(LOG_LEVEL="INFO", BATCH_MAX=batch))
               for n in range(count)]
    try:
        def listening() -> bool:
            for process in engines:
                if not process.alive():
                    raise RuntimeError(f"an engine exited:\n{process.log()}")
            started = all("started:" in process.log() for process in engines)
            numsub = dict(run.redis.pubsub_numsub(keys.SWEEP_NOW)).get(keys.SWEEP_NOW, 0)
            return started and int(numsub) >= count

        wait_until(listening, 60, f"{count} engine(s) to start", interval=0.05)
        watched = {"engines": [p.pid for p in engines], "redis": [run.redis_process.pid],
                   **({"database": [database_pid]} if database_pid else {})}

        def reading() -> dict[str, float]:
            return {key: sum(cpu_seconds(pid) for pid in pids) for key, pids in watched.items()}

        before = reading()
        started = time.perf_counter()
        pipe = run.redis.pipeline(transaction=False)
        for user in users:
            control.resume(pipe, user)
        pipe.execute()
        control.request_sweep(run.redis)
        with run.db.connect() as conn:
            def done() -> bool:
                # MAX(id) is cheap to poll; engines inserting side by side may leave gaps in
                # the ids, so the count confirms it.
                last = conn.exec_driver_sql("SELECT MAX(id) FROM messages").scalar()
                rows = (conn.exec_driver_sql("SELECT COUNT(*) FROM messages").scalar()
                        if last and last >= expected else 0)
                conn.commit()
                return bool(rows and rows >= expected)

            wait_until(done, 900, f"{expected} rows", interval=0.02)
        seconds = time.perf_counter() - started
        after = reading()
        return seconds, {key: after[key] - before[key] for key in watched}
    finally:
        for process in engines:
            process.stop()


def _median_cpu(readings: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(reading[key] for reading in readings)
            for key in readings[0]} if readings else {}
