"""`python -m bench` (or `make bench`): Tributary's benchmarks, each a ratio against a baseline
measured in the same invocation, as docs/PERFORMANCE.md reports them.

    python -m bench                      # everything (about 25 minutes)
    python -m bench capacity hold        # some of them
    python -m bench drain --entries 20000 --users 100     # smaller, for a quick look
    python -m bench drain-cluster --batch 5000            # a 3-master cluster vs one Redis
    python -m bench drain-scale --engines 1,2,3           # the drain with 1, 2, 3 engines
    python -m bench hostile --hostile-duration 10        # good clients under attack
    python -m bench storm --storm-clients 1000           # a reconnect storm, smaller
    python -m bench scaleout --scaleout-steps 50,200     # capacity with 1 and 2 web processes

Results go to bench/results/<time>/results.json, with every process's log beside it; a
summary is printed at the end. Nothing here touches the test suite's data or a running
service: a private redis-server and the `tributary_bench` database (BENCH_DATABASE_URL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    dashboard,
    drain,
    endtoend,
    gateway,
    history,
    hostile,
    library,
    replicas,
    scaleout,
    storm,
    variants,
)
from bench.harness import ROOT, bench_run, log

BENCHMARKS = ("capacity", "hold", "drain", "drain-cluster", "drain-scale", "endtoend", "overhead",
              "faults", "history", "queues", "hostile", "replicas", "replicas-cluster", "scaleout",
              "storm", "wsproto", "packing")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="*", metavar="BENCHMARK",
                        help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    cap = parser.add_argument_group("capacity")
    cap.add_argument("--capacity-clients", type=int, default=gateway.CapacityOptions.clients)
    cap.add_argument("--capacity-window", type=int, default=gateway.CapacityOptions.window)
    cap.add_argument("--capacity-duration", type=int, default=gateway.CapacityOptions.duration)
    cap.add_argument("--capacity-rounds", type=int, default=gateway.CapacityOptions.rounds)
    cap.add_argument("--no-metrics-baseline", dest="metrics_baseline", action="store_false",
                     help="skip the full path with METRICS_ENABLED=false (metrics on / off)")
    hold = parser.add_argument_group("hold")
    hold.add_argument("--hold-clients", type=int, default=gateway.HoldOptions.clients)
    hold.add_argument("--hold-duration", type=int, default=gateway.HoldOptions.duration)
    hold.add_argument("--hold-dashboard", action="store_true",
                      help="measure the loaded window a second time with the operator "
                           "dashboard open, and compare the web process's CPU per message")
    dra = parser.add_argument_group("drain")
    dra.add_argument("--entries", type=int, default=drain.DrainOptions.entries)
    dra.add_argument("--users", type=int, default=drain.DrainOptions.users)
    dra.add_argument("--batch", type=int, default=drain.DrainOptions.batch)
    dra.add_argument("--drain-rounds", type=int, default=drain.DrainOptions.rounds)
    dra.add_argument("--drain-compare", type=Path, metavar="PATH",
                     help="also time the engine of the checkout at PATH, round for round "
                          "(before/after a change)")
    dra.add_argument("--engines", type=lambda text: [int(n) for n in text.split(",")],
                     default=drain.DrainOptions().engines,
                     help="drain-scale: engine counts, comma-separated (default 1,2,3)")
    e2e = parser.add_argument_group("endtoend")
    e2e.add_argument("--steps", type=lambda text: [int(n) for n in text.split(",")],
                     default=endtoend.EndToEndOptions().steps,
                     help="client counts to try, comma-separated, ascending")
    e2e.add_argument("--e2e-duration", type=int, default=endtoend.EndToEndOptions.duration)
    lib = parser.add_argument_group("overhead (tributary.js in Chromium)")
    lib.add_argument("--overhead-messages", type=int,
                     default=library.OverheadOptions.messages)
    lib.add_argument("--overhead-rounds", type=int, default=library.OverheadOptions.rounds)
    flt = parser.add_argument_group("faults (tributary.js clients in Node, web killed -9)")
    flt.add_argument("--fault-clients", type=int, default=library.FaultOptions.clients)
    flt.add_argument("--fault-duration", type=int, default=library.FaultOptions.duration)
    flt.add_argument("--fault-kills", type=int, default=library.FaultOptions.kills)
    his = parser.add_argument_group("history (GET /api/messages and the dashboard's Messages "
                                    "view at 10,000 and 5,000,000 rows)")
    his.add_argument("--history-sizes", type=lambda text: [int(n) for n in text.split(",")],
                     default=history.HistoryOptions().sizes,
                     help="table sizes to measure, comma-separated")
    his.add_argument("--history-cursors", type=int, default=history.HistoryOptions.cursors)
    hos = parser.add_argument_group("hostile (good clients while one attack at a time runs)")
    hos.add_argument("--hostile-clients", type=int, default=hostile.HostileOptions.clients)
    hos.add_argument("--hostile-duration", type=int, default=hostile.HostileOptions.duration)
    hos.add_argument("--attacks", type=lambda text: tuple(text.split(",")),
                     default=hostile.ATTACKS, help=f"any of {', '.join(hostile.ATTACKS)}, "
                     "comma-separated")
    hos.add_argument("--attack-concurrency", metavar="ATTACK=N,...", default={},
                     type=lambda text: {k: int(v) for k, v in
                                        (pair.split("=") for pair in text.split(","))},
                     help="workers per attack (default: bench/attacks.py's)")
    rep = parser.add_argument_group("replicas (what ACK_REPLICAS=1 costs: capacity and ack "
                                    "latency against ACK_REPLICAS=0)")
    rep.add_argument("--replicas-rounds", type=int, default=replicas.ReplicaOptions.rounds)
    rep.add_argument("--replicas-duration", type=int,
                     default=replicas.ReplicaOptions.duration)
    rep.add_argument("--replicas-hold-clients", type=int,
                     default=replicas.ReplicaOptions.hold_clients)
    sca = parser.add_argument_group("scaleout (capacity with 1 and 2 web processes, the load "
                                    "generator's clients split over them)")
    sca.add_argument("--scaleout-steps", type=lambda text: [int(n) for n in text.split(",")],
                     default=scaleout.ScaleOutOptions().steps,
                     help="client counts, comma-separated, each keeping --capacity-window "
                          "messages awaiting their ack")
    sca.add_argument("--scaleout-duration", type=int,
                     default=scaleout.ScaleOutOptions.duration)
    sca.add_argument("--scaleout-procs", type=int, default=scaleout.ScaleOutOptions.procs,
                     help="load generator processes")
    que = parser.add_argument_group("queues (the dashboard's Queues view)")
    que.add_argument("--queues-large", type=int, default=dashboard.QueuesOptions.large,
                     help="registered streams, measured against 100")
    sto = parser.add_argument_group("storm (every client connecting at once)")
    sto.add_argument("--storm-clients", type=lambda text: [int(n) for n in text.split(",")],
                     default=storm.StormOptions().sizes,
                     help="storm sizes, comma-separated")
    sto.add_argument("--storm-users", type=int, default=storm.StormOptions.users,
                     help="users whose tokens the clients carry")
    sto.add_argument("--storm-procs", type=int, default=storm.StormOptions.procs,
                     help="load generator processes")
    var = parser.add_argument_group("wsproto, packing (the web process against a variant of "
                                    "itself: wsproto doing its frames; a call per user)")
    var.add_argument("--variant-rounds", type=int, default=variants.VariantOptions.capacity_rounds)
    var.add_argument("--variant-hold-clients", type=int,
                     default=variants.VariantOptions.hold_clients)
    args = parser.parse_args(argv)
    unknown = [name for name in args.which if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from "
                     f"{', '.join(BENCHMARKS)}")
    unknown = [name for name in (*args.attacks, *args.attack_concurrency)
               if name not in hostile.ATTACKS]
    if unknown:
        parser.error(f"unknown attack {', '.join(unknown)}; choose from "
                     f"{', '.join(hostile.ATTACKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    which = args.which or list(BENCHMARKS)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    directory = ROOT / "bench" / "results" / stamp
    results: dict[str, Any] = {
        "started": stamp, "command": " ".join(["python -m bench", *(argv or sys.argv[1:])]),
        "machine": {"cpus": _cpus(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    log(f"results and logs in {directory.relative_to(ROOT)}")
    with bench_run(directory) as run:
        results["redis_version"] = run.redis.info("server")["redis_version"] if run.redis else None
        for name in which:
            log(f"--- {name}")
            if name == "capacity":
                results[name] = gateway.capacity(run, gateway.CapacityOptions(
                    clients=args.capacity_clients, window=args.capacity_window,
                    duration=args.capacity_duration, rounds=args.capacity_rounds,
                    metrics_baseline=args.metrics_baseline))
            elif name == "hold":
                results[name] = gateway.hold(run, gateway.HoldOptions(
                    clients=args.hold_clients, duration=args.hold_duration,
                    dashboard=args.hold_dashboard))
            elif name == "drain":
                results[name] = drain.drain(run, drain.DrainOptions(
                    entries=args.entries, users=args.users, batch=args.batch,
                    rounds=args.drain_rounds, compare=args.drain_compare))
            elif name == "drain-cluster":
                results[name] = drain.drain_cluster(run, drain.DrainOptions(
                    entries=args.entries, users=args.users, batch=args.batch,
                    rounds=args.drain_rounds))
            elif name == "drain-scale":
                results[name] = drain.drain_scale(run, drain.DrainOptions(
                    entries=args.entries, users=args.users, batch=args.batch,
                    rounds=args.drain_rounds, engines=args.engines))
            elif name == "endtoend":
                results[name] = endtoend.endtoend(run, endtoend.EndToEndOptions(
                    steps=args.steps, duration=args.e2e_duration))
            elif name == "overhead":
                results[name] = library.overhead(run, library.OverheadOptions(
                    messages=args.overhead_messages, rounds=args.overhead_rounds))
            elif name == "faults":
                results[name] = library.faults(run, library.FaultOptions(
                    clients=args.fault_clients, duration=args.fault_duration,
                    kills=args.fault_kills))
            elif name == "history":
                results[name] = history.history(run, history.HistoryOptions(
                    sizes=args.history_sizes, cursors=args.history_cursors))
            elif name == "hostile":
                results[name] = hostile.hostile(run, hostile.HostileOptions(
                    clients=args.hostile_clients, duration=args.hostile_duration,
                    attacks=args.attacks, concurrency=args.attack_concurrency))
            elif name == "replicas":
                results[name] = replicas.replicas(run, replicas.ReplicaOptions(
                    rounds=args.replicas_rounds, duration=args.replicas_duration,
                    hold_clients=args.replicas_hold_clients))
            elif name == "replicas-cluster":
                results[name] = replicas.replicas_cluster(run, replicas.ReplicaOptions(
                    rounds=args.replicas_rounds, duration=args.replicas_duration,
                    hold_clients=args.replicas_hold_clients))
            elif name == "scaleout":
                results[name] = scaleout.scaleout(run, scaleout.ScaleOutOptions(
                    steps=args.scaleout_steps, window=args.capacity_window,
                    duration=args.scaleout_duration, procs=args.scaleout_procs))
            elif name == "queues":
                results[name] = dashboard.queues(run, dashboard.QueuesOptions(
                    large=args.queues_large))
            elif name == "storm":
                results[name] = storm.storm(run, storm.StormOptions(
                    sizes=args.storm_clients, users=args.storm_users, procs=args.storm_procs))
            elif name in variants.COMPARISONS:
                results[name] = variants.compare(run, name, variants.VariantOptions(
                    capacity_rounds=args.variant_rounds,
                    hold_clients=args.variant_hold_clients))
            (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    return 0


def summary(results: dict[str, Any]) -> str:
    lines = [f"Tributary bench {results['started']} ({results['machine']['cpus']} CPUs, "
             f"Redis {results['redis_version']})"]
    if "capacity" in results:
        c = results["capacity"]
        lines.append(f"capacity: full path {c['full_msgs_per_s']} msg/s; python-socketio as "
                     f"shipped {c['stock_msgs_per_s']} msg/s -> ratio "
                     f"{c['ratio_full_to_stock']} (target >= {c['target_ratio']}); bare "
                     f"python-socketio on Tributary's transport {c['bare_msgs_per_s']} msg/s "
                     f"-> ratio {c['ratio_full_to_bare']}")
        if c.get("ratio_metrics_on_to_off") is not None:
            lines.append(f"capacity, metrics on / off: {c['full_msgs_per_s']} / "
                         f"{c['nometrics_msgs_per_s']} msg/s -> ratio "
                         f"{c['ratio_metrics_on_to_off']} (target >= "
                         f"{c['target_metrics_ratio']})")
    if "hold" in results:
        h = results["hold"]
        load, bare = h["full"]["load"], h["bare"]["load"]
        lines.append(f"hold: {h['options']['clients']} clients x {h['options']['rate']}/s: "
                     f"{load['accepted_per_s']} msg/s accepted, ack p99 {h['ack_p99_ms']} "
                     f"ms (target <= {h['target_p99_ms']}; bare python-socketio "
                     f"{bare['latency_ms']['p99']} ms); idle connection "
                     f"{h['full']['kib_per_idle_connection']} KiB (bare python-socketio "
                     f"{h['bare']['kib_per_idle_connection']} KiB)")
    if "drain" in results:
        d = results["drain"]
        lines.append(f"drain: engine {d['engine_rows_per_s']} rows/s, raw PyMySQL "
                     f"{d['raw_rows_per_s']} rows/s -> ratio {d['ratio_engine_to_raw']} "
                     f"(target >= {d['target_ratio']})")
    if "drain" in results and "compare" in results["drain"]["options"]:
        for batch, b in results["drain"]["by_batch"].items():
            lines.append(f"drain batch {batch}: this engine {b['ratio']} of raw, the engine of "
                         f"{results['drain']['options']['compare']} {b['compared_ratio']}")
    if "drain-scale" in results:
        d = results["drain-scale"]
        lines.append("drain with N engines: " + "; ".join(
            f"{n}: {e['rows_per_s']} rows/s (x{e['ratio_to_first']}), CPU % {e['cpu_pct']}"
            for n, e in d["by_engines"].items()))
    if "drain-cluster" in results:
        d = results["drain-cluster"]
        lines.append(f"drain on Redis Cluster: {d['cluster_rows_per_s']} rows/s, single Redis "
                     f"{d['single_rows_per_s']} rows/s -> ratio {d['ratio_cluster_to_single']} "
                     f"(target >= {d['target_ratio']})")
    if "history" in results:
        r = results["history"]
        sizes = ", ".join(f"{int(size):,} rows: first {s['api']['first_ms']} ms, deep "
                          f"{s['api']['deep_ms']} ms" for size, s in r["sizes"].items())
        lines.append(f"history (GET /api/messages): {sizes}; deep/first "
                     f"{r.get('api_deep_to_first')}, deep/first at the smallest size "
                     f"{r.get('api_deep_to_small_first')} (target <= {r['target_ratio']})")
        views = ", ".join(f"{int(size):,} rows: first {s['view']['first_ms']} ms, deep "
                          f"{s['view']['deep_ms']} ms" for size, s in r["sizes"].items())
        lines.append(f"history (Messages view): {views}; deep/first "
                     f"{r.get('view_deep_to_first')}, deep/first at the smallest size "
                     f"{r.get('view_deep_to_small_first')} (target <= {r['target_ratio']})")
    if "queues" in results:
        q = results["queues"]
        large, small = q["options"]["large"], q["options"]["small"]
        lines.append(f"queues view: {large:,} streams against {small}: sorted by backlog "
                     f"{q[str(large)]['backlog']['median_ms']} vs "
                     f"{q[str(small)]['backlog']['median_ms']} ms -> {q['ratio_backlog']}; by "
                     f"name -> {q['ratio_name']} (target <= {q['target_ratio']})")
    if "hold" in results and "dashboard" in results["hold"]:
        d = results["hold"]["dashboard"]
        lines.append(f"hold with the dashboard open: {d['cpu_us_per_msg_with']} vs "
                     f"{d['cpu_us_per_msg_without']} us of web CPU per message -> "
                     f"{d['added_pct']:+} % (target <= +{d['target_pct']} %)")
    if "replicas" in results:
        r = results["replicas"]
        lines.append(f"replicas: capacity ACK_REPLICAS=1 / 0: {r['capacity_msgs_per_s']['1']} / "
                     f"{r['capacity_msgs_per_s']['0']} msg/s -> {r['ratio_capacity_1_to_0']}; "
                     f"hold ack p99 {r['hold_ack_p99_ms']['1']} vs {r['hold_ack_p99_ms']['0']} "
                     f"ms -> {r['ratio_hold_p99_1_to_0']}")
    if "replicas-cluster" in results:
        r = results["replicas-cluster"]
        lines.append(f"replicas on a 3-master cluster: capacity ACK_REPLICAS=1 / 0: "
                     f"{r['capacity_msgs_per_s']['1']} / {r['capacity_msgs_per_s']['0']} msg/s "
                     f"-> {r['ratio_capacity_1_to_0']}; hold ack p99 "
                     f"{r['hold_ack_p99_ms']['1']} vs {r['hold_ack_p99_ms']['0']} ms -> "
                     f"{r['ratio_hold_p99_1_to_0']}")
    if "scaleout" in results:
        r = results["scaleout"]
        for webs, steps in r["curve"].items():
            points = ", ".join(f"{clients}: {e['accepted_per_s']}" for clients, e in
                               steps.items())
            lines.append(f"scaleout, {webs} web process(es), msg/s by clients: {points}")
        lines.append(f"scaleout: best 2 / 1 web processes -> {r['ratio_2_to_1']}")
    if "endtoend" in results:
        e = results["endtoend"]
        lines.append(f"end to end: largest N that keeps pace: {e['largest_n']} clients "
                     f"(lag limit {e['lag_limit_s']} s)")
    if "overhead" in results:
        o = results["overhead"]
        lines.append(f"tributary.js overhead: {o['library_median']} msg/s through the library, "
                     f"{o['plain_median']} msg/s with plain emit + ack -> ratio "
                     f"{o['ratio_library_to_plain']} (target >= {o['target_ratio']})")
    if "faults" in results:
        f = results["faults"]
        lines.append(f"faults: {f['options']['clients']} library clients, web killed -9 "
                     f"{len(f['kills'])} times: {f['generated']} msg_ids, {f['rows']} rows, "
                     f"{f['missing']} missing, {f['duplicate_rows']} duplicates -> "
                     f"{'PASS' if f['passed'] else 'FAIL'}")
    if "hostile" in results:
        h = results["hostile"]
        lines.append(f"hostile: baseline ack p99 {h['baseline_p99_ms']} ms (no attack: "
                     f"{h['phases']['none']['ack_ms']['p99']} ms before the attacks, "
                     f"{h['phases']['none-again']['ack_ms']['p99']} ms after)")
        for name, p in h["phases"].items():
            lines.append(f"hostile {name}: ack p99 {p['ack_ms']['p99']} ms (x{p['p99_ratio']}, "
                         f"target <= {h['target_ratio']}), rss peak {p['rss_peak_mib']} MiB, "
                         f"lost {p['lost']} of {p['acknowledged_ok_in_all']}, "
                         f"{'met' if p['met'] else 'NOT met'}")
    if "storm" in results:
        for size in results["storm"]["options"]["sizes"]:
            s = results["storm"][str(size)]
            servers = "; ".join(
                f"{kind} {s[kind]['connected']} connected, all in {s[kind]['all_connected_s']} s, "
                f"p50/p99 {s[kind]['connect_ms']['p50']}/{s[kind]['connect_ms']['p99']} ms, "
                f"{s[kind]['refused']} refused" for kind in storm.SERVERS)
            lines.append(f"storm {size}: {servers} -> all connected, Tributary / Node "
                         f"{s['ratios']['tributary_all_connected_vs_node']} (target <= 1.5), "
                         f"bare / Node {s['ratios']['bare_all_connected_vs_node']}")
    for name in variants.COMPARISONS:
        if name in results:
            v = results[name]
            lines.append(f"{name}: {v['variant']} / {v['shipped']}: capacity "
                         f"{v['capacity_ratio']} x (web CPU per message "
                         f"{v['capacity_cpu_per_msg_ratio']} x); hold CPU per message "
                         f"{v['hold_cpu_per_msg_ratio']} x, ack p99 {v['hold_p99_ratio']} x")
    return "\n".join(lines)


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
