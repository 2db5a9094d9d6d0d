"""History reads at scale: `GET /api/messages` and the operator dashboard's Messages view (both
readers of `webapp.history`) on a `messages` table of 10,000 rows and of 5,000,000, first
pages against pages deep in the history.

The table is filled fast, by doubling: a seed of `USERS` users' rows is inserted, then
`INSERT … SELECT` copies every row with new msg_ids and later timestamps until the size is
reached (nothing goes through Redis or the engine: this measures reads). Each reading is the
median of `repeat` requests of one page of 100 rows:

- first: the newest page of one user's history;
- deep: the page reached after following 1,000 cursors (100,000 rows into that user's history;
  with 5,000,000 rows over 20 users each has 250,000).

Targets: deep <= 2 x first at 5,000,000 rows, and deep at 5,000,000 <= 2 x first at 10,000;
for each reader. The Messages view is read as a signed-in viewer (bench/dashboard.py), filtered
to the same user, following the page's own "older" links; its time includes rendering the
page's HTML.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import sqlalchemy as sa

from bench import dashboard
from bench.harness import Run, ensure_users, log, write_tokens

#: Users the rows are spread over (each has rows / USERS of them).
USERS = 20
PAGE = 100


#: Rows copied by one statement while filling the table.
FILL_CHUNK = 50_000


@dataclass
class HistoryOptions:
    sizes: list[int] = field(default_factory=lambda: [10_000, 5_000_000])
    cursors: int = 1000
    repeat: int = 7


def fill(run: Run, rows: int) -> float:
    """Make `messages` hold exactly `rows` rows over USERS users; returns the seconds it took."""
    assert run.db is not None
    started = time.monotonic()
    run.reset()
    users = ensure_users(run, USERS, prefix="history")
    seed = max(USERS, min(rows, 10_000))
    with run.db.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO messages (user_id, msg_id, message, value, `key`, `timestamp`, "
            "received_at, stream_id, committed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(users[n % USERS], f"m{n}", f"message number {n} " + "x" * 40, n % 97,
              ("temperature", "humidity", None)[n % 3],
              _moment(n), _moment(n), f"{1_790_000_000_000 + n}-0", _moment(n))
             for n in range(seed)])
    have, doubling = seed, 0
    while have < rows:
        take, doubling = min(have, rows - have), doubling + 1
        # Copies the first `take` rows, each msg_id suffixed
        # with this doubling's number (unique: no earlier msg_id ends with it), `have` seconds
        # later; in chunks, so that no statement runs into the driver's read timeout.
        with run.db.connect() as conn:  # ids have gaps: bulk inserts reserve them in blocks
            last = conn.exec_driver_sql("SELECT id FROM messages ORDER BY id LIMIT 1 OFFSET %s",
                                        (take - 1,)).scalar_one()
        for low in range(0, last, FILL_CHUNK):
            with run.db.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO messages (user_id, msg_id, message, value, `key`, `timestamp`, "
                    "received_at, stream_id, committed_at) "
                    "SELECT user_id, CONCAT(msg_id, '.', %s), message, value, `key`, "
                    "`timestamp` + INTERVAL %s SECOND, received_at + INTERVAL %s SECOND, "
                    "stream_id, committed_at FROM messages WHERE id > %s AND id <= %s "
                    "ORDER BY id",
                    (doubling, have, have, low, min(low + FILL_CHUNK, last)))
        have += take
        log(f"history: {have:,} rows")
    with run.db.begin() as conn:
        conn.exec_driver_sql("ANALYZE TABLE messages")
    return time.monotonic() - started


def _moment(n: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(1_790_000_000 + n))


def timed(fetch: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of `repeat` calls (after one to warm caches)."""
    fetch()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fetch()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def api_pages(url: str, token: str, cursors: int, repeat: int) -> dict[str, Any]:
    """First and deep page times of GET /api/messages for the token's user."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"

    def page(cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
        answer = session.get(f"{url}/api/messages", params=params, timeout=60)
        answer.raise_for_status()
        return answer.json()  # type: ignore[no-any-return]

    deep_cursor, followed = None, 0
    for _ in range(cursors):
        cursor = page(deep_cursor)["next_cursor"]
        if cursor is None:
            break
        deep_cursor, followed = cursor, followed + 1
    return {"first_ms": timed(page, repeat),
            "deep_ms": timed(lambda: page(deep_cursor), repeat) if deep_cursor else None,
            "cursors_followed": followed}


_OLDER = re.compile(r'id="older" href="[^"]*[?&]cursor=([^&"]+)')


def view_pages(url: str, cookie: str, user: str, cursors: int, repeat: int) -> dict[str, Any]:
    """First and deep page times of the dashboard's Messages view of one user's history."""
    session = requests.Session()
    session.headers["Cookie"] = f"{dashboard.COOKIE}={cookie}"

    def page(cursor: str | None = None) -> str | None:
        """Fetch a page; returns the cursor of its "older" link."""
        params = {"user": user, **({"cursor": cursor} if cursor else {})}
        answer = session.get(f"{url}/admin/messages/", params=params, timeout=60,
                             allow_redirects=False)
        answer.raise_for_status()
        if answer.status_code != 200:
            raise RuntimeError(f"the Messages view answered {answer.status_code}")
        found = _OLDER.search(answer.text)
        return requests.utils.unquote(found.group(1)) if found else None

    deep_cursor, followed = None, 0
    for _ in range(cursors):
        cursor = page(deep_cursor)
        if cursor is None:
            break
        deep_cursor, followed = cursor, followed + 1
    return {"first_ms": timed(page, repeat),
            "deep_ms": timed(lambda: page(deep_cursor), repeat) if deep_cursor else None,
            "cursors_followed": followed}


def history(run: Run, options: HistoryOptions) -> dict[str, Any]:
    results: dict[str, Any] = {"options": vars(options), "sizes": {}}
    for size in options.sizes:
        log(f"history: filling {size:,} rows")
        seconds = fill(run, size)
        process, url = run.start_web(f"web-history-{size}")
        token_file = write_tokens(run, ["history0"], run.directory / f"history-{size}.tokens")
        token = token_file.read_text().split()[0]
        reading = api_pages(url, token, options.cursors, options.repeat)
        view = view_pages(url, dashboard.sign_in(run, url), "history0", options.cursors,
                          options.repeat)
        process.stop()
        assert run.db is not None
        with run.db.connect() as conn:
            count = conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one()
        results["sizes"][str(size)] = {"rows": count, "fill_seconds": round(seconds, 1),
                                       "api": reading, "view": view}
        log(f"history: {size:,} rows: API {reading}; Messages view {view}")
    small, large = (results["sizes"][str(s)]["api"] for s in (min(options.sizes),
                                                              max(options.sizes)))
    if large["deep_ms"]:
        results["api_deep_to_first"] = round(large["deep_ms"] / large["first_ms"], 2)
        results["api_deep_to_small_first"] = round(large["deep_ms"] / small["first_ms"], 2)
    small_view, large_view = (results["sizes"][str(s)]["view"] for s in (min(options.sizes),
                                                                        max(options.sizes)))
    if large_view["deep_ms"]:
        results["view_deep_to_first"] = round(large_view["deep_ms"] / large_view["first_ms"], 2)
        results["view_deep_to_small_first"] = round(
            large_view["deep_ms"] / small_view["first_ms"], 2)
    results["target_ratio"] = 2.0
    return results
