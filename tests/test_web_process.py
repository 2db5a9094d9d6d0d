"""The web process as a whole: a graceful stop counts every client out, promptly; its garbage
collector is tuned for many connections."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import requests

from engine import keys
from tests.conftest import wait_until
from tests.gateway_support import connect
from webapp.server import GC_MIDDLE_THRESHOLD, GC_YOUNG_THRESHOLD

#: STOP_GRACE in webapp/server.py plus generous slack.
STOP_BOUND = 12.0


def half_open_polling_session(url: str, token: str) -> str:
    """Connect over engine.io long-polling, join the namespace, then never poll again, like a
    browser tab whose network went away."""
    handshake = requests.get(f"{url}/socket.io/?EIO=4&transport=polling", timeout=10)
    sid = json.loads(handshake.text[1:])["sid"]
    joined = requests.post(f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}", timeout=10,
                           data="40" + json.dumps({"token": token}))
    assert joined.text == "OK"
    return sid


def test_stopping_the_web_process_counts_every_client_out_without_waiting_for_gone_ones(
        mysql_backend, start_web):
    web = start_web(mysql_backend)
    redis = mysql_backend.redis
    alice = connect(web.url, web.token("alice"))
    half_open_polling_session(web.url, web.token("bob"))
    wait_until(lambda: redis.hlen(keys.connections("bob")) == 1, 5,
               what="bob's half-open connection to be counted")
    assert redis.hlen(keys.connections("alice")) == 1

    started = time.monotonic()
    web.process.signal(signal.SIGTERM)
    wait_until(lambda: not web.process.alive(), STOP_BOUND, interval=0.1,
               what="the web process to stop")
    assert time.monotonic() - started < STOP_BOUND
    assert web.process.popen.returncode == 0
    wait_until(lambda: alice.disconnected, 5, what="alice to be told")
    alice.close()
    for user in ("alice", "bob"):
        assert redis.hlen(keys.connections(user)) == 0, user
        assert redis.zscore(keys.closing_of(user), user) is not None, user
    assert "stopped" in web.process.log()


def test_the_garbage_collector_is_tuned_for_many_long_lived_connections():
    # In a process of its own: the tuning is process-wide.
    probe = ("import gc; from webapp.server import tune_garbage_collector; "
             "default = gc.get_threshold(); tune_garbage_collector(); "
             "print(*default, *gc.get_threshold(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    default_young, default_middle, _, young, middle, oldest, frozen = map(int, out)
    assert (young, middle, oldest) == (GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, 10)
    assert young > 10 * default_young  # in-flight objects rarely caught alive
    # The middle generation (where what was caught in flight dies) every million allocations.
    assert young * middle == 1_000_000 > 100 * default_young * default_middle
    assert frozen > 10_000  # the modules and objects loaded so far are out of every collection
