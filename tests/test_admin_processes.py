"""The Processes view: live engines and web processes with what they report (host, pid,
heartbeat, rates, last batch, leases, connections), and one that stopped beating marked as not
alive until an admin forgets it."""

from __future__ import annotations

import re

import orjson

from engine import keys
from tests.admin_support import ensure_account, signed_in
from tests.conftest import wait_until


def row(page: str, table: str, name: str) -> str:
    body = re.search(rf'<table[^>]*id="{table}".*?</table>', page, re.S)
    assert body
    found = re.search(rf'<tr data-name="{re.escape(name)}".*?</tr>', body.group(0), re.S)
    assert found, f"no {name} in {table}"
    return found.group(0)


def test_live_and_dead_processes_are_shown_as_they_are(mysql_backend, start_web, start_engine):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend)
    engine = start_engine(mysql_backend)
    mysql_backend.redis.hset(keys.ENGINE_STATS, "gone-1", orjson.dumps(
        {"pid": 4242, "host": "elsewhere", "at": 1.0, "rows_per_second": 0}))
    admin = signed_in(web.url, "boss")
    names = wait_until(lambda: mysql_backend.redis.smembers(keys.ENGINES) and
                       mysql_backend.redis.smembers(keys.WEB_INSTANCES), 10,
                       what="both heartbeats")
    [engine_name] = mysql_backend.redis.smembers(keys.ENGINES)
    [web_name] = names
    page = admin.get("/admin/processes/").text
    live_engine = row(page, "engines", engine_name)
    assert f"<td>{engine.pid}</td>" in live_engine and "not alive" not in live_engine
    assert "Forget" not in live_engine
    live_web = row(page, "web-processes", web_name)
    assert f"<td>{web.process.pid}</td>" in live_web and "not alive" not in live_web
    dead = row(page, "engines", "gone-1")
    assert "not alive" in dead and "elsewhere" in dead and "Forget" in dead
    # A live process cannot be forgotten; a dead one can.
    admin.post("/admin/processes/forget", {"kind": "engine", "name": engine_name})
    assert mysql_backend.redis.hexists(keys.ENGINE_STATS, engine_name)
    admin.post("/admin/processes/forget", {"kind": "engine", "name": "gone-1"})
    assert 'data-name="gone-1"' not in admin.get("/admin/processes/").text
