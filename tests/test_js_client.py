"""The real JavaScript client (socket.io-client 4.8.4, tests/js/) against a web process: both
transport modes a browser uses, acks and fire-and-forget sends, and a refused token."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_jwt, unavailable
from tests.gateway_support import msg_ids

JS_DIR = ROOT / "tests" / "js"
CLIENT = JS_DIR / "client.mjs"


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None:
        unavailable("node is not installed (make test installs it)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        unavailable("tests/js/node_modules is missing: run `make test` or `npm ci` in tests/js")
    return str(found)


def run_client(node: str, **job: object) -> dict:
    done = subprocess.run([node, str(CLIENT), json.dumps(job)], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_the_installed_client_is_the_pinned_version():
    installed = JS_DIR / "node_modules" / "socket.io-client" / "package.json"
    if not installed.is_file():
        unavailable("tests/js/node_modules is missing")
    assert json.loads(Path(installed).read_text())["version"] == "4.8.4"
    assert json.loads((JS_DIR / "package.json").read_text())["dependencies"] == {
        "socket.io-client": "4.8.4"}


def test_the_javascript_client_sends_over_polling_then_websocket_and_over_websocket_only(
        node, mysql_backend, start_web):
    web = start_web(mysql_backend)
    token = web.token("alice")
    for mode, transports in (("upgrade", ["polling", "websocket"]), ("ws", ["websocket"])):
        result = run_client(
            node, url=web.url, token=token, transports=transports, errors=1,
            before=[{"payload": {"msg_id": f"{mode}-first", "message": "hello"}, "ack": True}],
            messages=[
                {"payload": {"msg_id": f"{mode}-acked", "message": "é ✓", "value": 1.5,
                             "timestamp": "2026-11-26T12:00:00+02:00"}, "ack": True},
                {"payload": [{"msg_id": f"{mode}-a1", "message": "x"},
                             {"msg_id": f"{mode}-bad", "message": 5}], "ack": True},
                {"payload": {"msg_id": f"{mode}-quiet", "message": "no ack"}, "ack": False},
                {"payload": {"msg_id": f"{mode}-quiet-bad", "value": "x"}, "ack": False},
            ])
        assert result["connected"] is True and result["transport"] == "websocket", result
        assert result["first_transport"] == transports[0]
        assert result["upgraded"] is (mode == "upgrade")
        first, acked, batch = result["acks"]
        assert first["ok"] is True and first["msg_id"] == f"{mode}-first"
        assert acked["ok"] is True and acked["msg_id"] == f"{mode}-acked"
        assert [item["ok"] for item in batch] == [True, False]
        assert batch[1]["error"] == "message: must be a string"
        assert result["errors"] == [{"ok": False, "error": "message: is required",
                                     "msg_id": f"{mode}-quiet-bad"}]
    written = msg_ids(mysql_backend.redis, "alice")
    for mode in ("upgrade", "ws"):
        assert [m for m in written if m.startswith(f"{mode}-")] == [
            f"{mode}-first", f"{mode}-acked", f"{mode}-a1", f"{mode}-quiet"]


def test_the_javascript_client_hears_why_its_token_was_refused(node, mysql_backend, start_web):
    web = start_web(mysql_backend)
    web.token("alice")
    for transports in (["polling", "websocket"], ["websocket"]):
        for token, error in ((make_jwt("alice", lifetime=-30), "token expired"),
                             (make_jwt("alice", key="k" * 40), "invalid token"),
                             ("", "missing token")):
            result = run_client(node, url=web.url, token=token, transports=transports)
            assert result["connected"] is False
            assert result["connect_error"] == error, (transports, result)
