"""The operator dashboard under load (issue: operator dashboard, performance).

queues    The Queues view with 10,000 registered streams against 100: the median time of a
          page (100 queues; sorted by backlog, and by name) through a real web process, each
          stream holding a few entries, with an engine running (one that writes nothing: it
          measures the streams and records the backlog ranking the view pages through); the
          ratio is 10,000 over 100. For reference, sorted by backlog with no engine (the view
          then measures every stream itself).

Also here: signing a bench operator in, and a dashboard listener (a socket.io connection
authenticated by that session, in the `dashboard` room) for `python -m bench hold
--hold-dashboard`, which measures what an open dashboard costs the web process per message.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import requests

from bench.harness import Run, log, wait_until
from engine import keys, streams
from engine.scripts import load_all

OPERATOR, PASSWORD = "bench-operator", "bench-operator-password"
COOKIE = "tributary_session"
_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@dataclass
class QueuesOptions:
    small: int = 100
    large: int = 10_000
    entries: int = 3
    repeats: int = 20


def ensure_operator(run: Run) -> None:
    """The bench's viewer account (created once; its password is the bench's own)."""
    from engine.errors import UsernameTaken
    from webapp.users import create_user

    assert run.db is not None
    with contextlib.suppress(UsernameTaken):
        create_user(run.db, OPERATOR, PASSWORD, role="viewer")


def sign_in(run: Run, url: str) -> str:
    """Sign the bench operator in at /admin/login; returns the session cookie's value. (The
    cookie is Secure: it is sent by hand, as requests' jar would not over http.)"""
    ensure_operator(run)
    page = requests.get(f"{url}/admin/login", timeout=30)
    token = _TOKEN.search(page.text)
    assert token, "no CSRF token on the login page"
    answer = requests.post(f"{url}/admin/login", allow_redirects=False, timeout=30, data={
        "csrf_token": token.group(1), "username": OPERATOR, "password": PASSWORD},
        headers={"Cookie": f"{COOKIE}={page.cookies[COOKIE]}"})
    if answer.status_code != 302 or COOKIE not in answer.cookies:
        raise RuntimeError(f"the bench operator could not sign in ({answer.status_code})")
    return str(answer.cookies[COOKIE])


def timed_get(url: str, cookie: str, repeats: int) -> dict[str, float]:
    """Median and p90 milliseconds of `repeats` GETs of `url` (after one warm-up)."""
    headers = {"Cookie": f"{COOKIE}={cookie}"}
    with requests.Session() as http:
        first = http.get(url, headers=headers, timeout=60, allow_redirects=False)
        if first.status_code != 200:
            raise RuntimeError(f"{url} answered {first.status_code}")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            answer = http.get(url, headers=headers, timeout=60, allow_redirects=False)
            times.append(1000 * (time.perf_counter() - started))
            assert answer.status_code == 200
    times.sort()
    return {"median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2)}


def register_streams(run: Run, count: int, entries: int) -> None:
    """`count` user streams of `entries` messages each, appended as the gateway does."""
    assert run.redis is not None
    load_all(run.redis)
    limits = streams.Limits("bench", 0, 1, 10**9)
    body = b'{"msg_id":"m","message":"bench","timestamp":"2026-11-26T10:00:00.000Z"}'
    for start in range(0, count, 500):
        users = [f"q{n:05d}" for n in range(start, min(count, start + 500))]
        streams.append_all(run.redis, [(user, limits, [body] * entries) for user in users])


def queues(run: Run, options: QueuesOptions) -> dict[str, Any]:
    out: dict[str, Any] = {"options": vars(options)}
    redis = run.redis
    assert redis is not None

    def ranked(count: int) -> bool:
        return bool(redis.zcard(keys.BACKLOG_RANKING) == count)

    for count in (options.small, options.large):
        run.reset()
        register_streams(run, count, options.entries)
        server, url = run.start_web(f"queues-web-{count}")
        cookie = sign_in(run, url)
        engine = run.start_engine(f"queues-engine-{count}", BATCH_SIZE_THRESHOLD=10**9,
                                  MAX_BATCH_AGE=10**6)
        wait_until(partial(ranked, count), 60, "the engine's backlog ranking")
        out[str(count)] = {sort: timed_get(f"{url}/admin/queues/?sort={sort}", cookie,
                                           options.repeats) for sort in ("backlog", "name")}
        engine.stop()
        redis.delete(keys.BACKLOG_RANKING)
        out[str(count)]["backlog_without_engine"] = timed_get(
            f"{url}/admin/queues/?sort=backlog", cookie, options.repeats)
        log(f"queues with {count} streams: {out[str(count)]}")
        server.stop()
    for sort in ("backlog", "name", "backlog_without_engine"):
        small = out[str(options.small)][sort]["median_ms"]
        large = out[str(options.large)][sort]["median_ms"]
        out[f"ratio_{sort}"] = round(large / small, 2) if small else None
    out["target_ratio"] = 2.0
    return out


@contextlib.contextmanager
def dashboard_open(run: Run, url: str) -> Iterator[dict[str, int]]:
    """The overview page loaded once and its live connection held open for the block, as a
    browser showing the dashboard would; yields counts of the events it heard."""
    import socketio

    cookie = sign_in(run, url)
    timed_get(f"{url}/admin/", cookie, 1)
    heard = {"overview": 0, "stats": 0}
    client = socketio.Client(reconnection=False)
    for event in heard:
        client.on(event, lambda *_args, name=event: heard.__setitem__(name, heard[name] + 1))
    client.connect(url, transports=["websocket"], headers={"Cookie": f"{COOKIE}={cookie}"},
                   wait_timeout=30)
    try:
        yield heard
    finally:
        client.disconnect()
