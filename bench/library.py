"""The client library, `tributary.js` (issue: browser side), measured.

overhead  Messages a second one page pushes through the library (outbox, states, batching)
          against plain socket.io-client `emit` with an ack callback, in the same headless
          Chromium page, against the same web process, in the same run: each variant sends
          MESSAGES messages as fast as it can and the clock stops at the last ack (the
          library's last `accepted`). Rounds alternate the variants; medians are compared.
faults    Loss under faults: CLIENTS clients running the library in Node (the same module,
          given the socket.io client's `io`) send one message a second each while the web
          process is killed with SIGKILL KILLS times and restarted on the same port, with an
          engine writing to MySQL throughout. Every msg_id the clients generated must end up
          in MySQL exactly once.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bench.harness import (
    ROOT,
    Process,
    Run,
    ensure_users,
    free_port,
    log,
    wait_for_http,
    write_tokens,
)
from engine.schema import messages

CLIENTS_SCRIPT = ROOT / "bench" / "loadgen" / "library_clients.mjs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: No rate limit and room for every message: the point is the client's ceiling.
UNLIMITED: dict[str, Any] = {"RATE_LIMIT": 0, "MAX_BACKLOG_PER_USER": 10_000_000}


@dataclass
class OverheadOptions:
    messages: int = 20_000
    rounds: int = 3


@dataclass
class FaultOptions:
    clients: int = 1000
    rate: float = 1.0
    duration: int = 60
    kills: int = 3
    down_seconds: float = 2.0
    settle: int = 120


# --- overhead -------------------------------------------------------------------------------

#: One variant in the page: connect, send `count` messages, return the seconds from the first
#: send to the last ack (or accepted state), and how many were accepted.
PAGE_RUN = """async ({ variant, token, count }) => {
  const { io } = await import("/static/vendor/socket.io-client/socket.io.esm.min.js");
  const { connect } = await import("/static/tributary.js");
  if (variant === "plain") {
    const socket = io("", { auth: { token }, transports: ["websocket"], forceNew: true });
    await new Promise((resolve, reject) => {
      socket.on("connect", resolve);
      socket.on("connect_error", reject);
    });
    const tag = Math.random().toString(36).slice(2);
    let acked = 0;
    let ok = 0;
    const started = performance.now();
    await new Promise((resolve) => {
      for (let n = 0; n < count; n++) {
        socket.emit("data", { msg_id: `plain-${tag}-${n}`, message: `bench message ${n}`,
                              value: n, timestamp: new Date().toISOString() }, (answer) => {
          if (answer.ok) ok += 1;
          if (++acked === count) resolve();
        });
      }
    });
    const seconds = (performance.now() - started) / 1000;
    socket.close();
    return { seconds, accepted: ok };
  }
  const client = connect("", { token, transports: ["websocket"], maxOutbox: count });
  await new Promise((resolve) => client.on("connection",
    (status) => status === "connected" && resolve()));
  let accepted = 0;
  let refused = 0;
  const started = performance.now();
  await new Promise((resolve) => {
    client.on("state", (msgId, state) => {
      if (state === "accepted") accepted += 1;
      if (state === "refused") refused += 1;
      if (accepted + refused === count) resolve();
    });
    for (let n = 0; n < count; n++) client.send({ message: `bench message ${n}`, value: n });
  });
  const seconds = (performance.now() - started) / 1000;
  client.close();
  return { seconds, accepted };
}"""


def overhead(run: Run, options: OverheadOptions) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    (name,) = ensure_users(run, 1, prefix="page")
    token = write_tokens(run, [name], run.directory / "overhead.tokens").read_text().strip()
    web, url = run.start_web("overhead-web", **UNLIMITED)
    rates: dict[str, list[float]] = {"plain": [], "library": []}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/")
        for round_ in range(options.rounds):
            for variant in ("plain", "library"):
                result = page.evaluate(PAGE_RUN, {"variant": variant, "token": token,
                                                  "count": options.messages})
                if result["accepted"] != options.messages:
                    raise RuntimeError(f"{variant}: only {result['accepted']} of "
                                       f"{options.messages} messages accepted")
                rate = options.messages / result["seconds"]
                rates[variant].append(round(rate, 1))
                log(f"overhead round {round_ + 1}: {variant} {rate:,.0f} msg/s")
        browser.close()
    web.stop()
    plain, library = statistics.median(rates["plain"]), statistics.median(rates["library"])
    return {"options": vars(options), "plain_msgs_per_s": rates["plain"],
            "library_msgs_per_s": rates["library"], "plain_median": plain,
            "library_median": library, "ratio_library_to_plain": round(library / plain, 2),
            "target_ratio": 0.8}


# --- faults ---------------------------------------------------------------------------------

def faults(run: Run, options: FaultOptions) -> dict[str, Any]:
    assert run.db is not None
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: run `make bench`, which installs it")
    run.reset()
    names = ensure_users(run, options.clients, prefix="lib")
    tokens = write_tokens(run, names, run.directory / "faults.tokens")
    port = free_port()
    web = _start_web(run, port, "faults-web-0")
    engine = run.start_engine("faults-engine")
    generated_file = run.directory / "faults.generated"
    job = {"url": f"http://127.0.0.1:{port}", "tokenFile": str(tokens),
           "clients": options.clients, "rate": options.rate, "duration": options.duration,
           "settle": options.settle, "out": str(generated_file)}
    client_log = run.directory / "faults.clients.log"
    with client_log.open("w") as err:
        clients = subprocess.Popen([node, str(CLIENTS_SCRIPT), json.dumps(job)], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=err, text=True,
                                   start_new_session=True)
    started = time.monotonic()
    kills = []
    try:
        for kill in range(1, options.kills + 1):
            due = started + options.duration * kill / (options.kills + 1)
            time.sleep(max(0.0, due - time.monotonic()))
            web.popen.send_signal(signal.SIGKILL)
            web.popen.wait()
            killed_at = round(time.monotonic() - started, 1)
            log(f"faults: web process killed -9 at {killed_at} s")
            time.sleep(options.down_seconds)
            web = _start_web(run, port, f"faults-web-{kill}")
            kills.append({"killed_at_s": killed_at,
                          "back_at_s": round(time.monotonic() - started, 1)})
        out, _ = clients.communicate(timeout=options.duration + options.settle + 120)
    except BaseException:
        clients.kill()
        clients.wait()
        raise
    report = json.loads(out.strip().splitlines()[-1])
    engine.stop()
    web.stop()
    generated = [tuple(line.split(" ", 1)) for line in generated_file.read_text().splitlines()
                 if line]
    with run.db.connect() as conn:
        rows = [tuple(row) for row in conn.execute(
            sa.select(messages.c.user_id, messages.c.msg_id)
            .where(messages.c.user_id.like("lib%")))]
    wanted, stored = set(generated), set(rows)
    missing, unexpected = sorted(wanted - stored), sorted(stored - wanted)
    result = {
        "options": vars(options), "kills": kills, "clients_report": report,
        "generated": len(generated), "distinct_generated": len(wanted), "rows": len(rows),
        "duplicate_rows": len(rows) - len(stored), "missing": len(missing),
        "missing_examples": missing[:10], "unexpected": len(unexpected),
        "unexpected_examples": unexpected[:10],
    }
    result["passed"] = bool(
        generated and len(wanted) == len(generated) == len(rows) and not missing
        and not unexpected and report["unsettled"] == 0 and not report["refused"])
    log(f"faults: {len(generated)} msg_ids generated by {options.clients} clients, "
        f"{len(rows)} rows, {len(missing)} missing, {len(unexpected)} unexpected, "
        f"{result['duplicate_rows']} duplicates; every promise settled "
        f"{report['settled_after_s']} s after sending stopped: "
        f"{'PASS' if result['passed'] else 'FAIL'}")
    return result


def _start_web(run: Run, port: int, name: str) -> Process:
    process = run.start(name, [sys.executable, "-m", "webapp"],
                        run.service_env(HOST="127.0.0.1", PORT=port))
    wait_for_http(process, f"http://127.0.0.1:{port}/healthz")
    return process
