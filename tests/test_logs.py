"""Logs: one structlog set-up for both processes, JSON lines or a readable format, the context
of each line (process, request id, user), one access line per HTTP request, and never a token,
password or Authorization header, whatever a client sends and wherever it puts it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
import requests
import websocket

from engine.logs import formatter, wants_json
from tests.conftest import ROOT, TEST_JWT_SECRET, make_jwt, service_env, wait_until
from tests.gateway_support import connected, refused

PASSWORD = "correct-horse-battery-staple-42"


def raw_session(url: str, token: str) -> websocket.WebSocket:
    """A websocket speaking engine.io and socket.io by hand, joined to the namespace."""
    raw = websocket.create_connection(
        url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=10)
    assert raw.recv().startswith("0{")
    raw.send("40" + json.dumps({"token": token}))
    assert raw.recv().startswith("40{")
    return raw


def json_lines(text: str) -> list[dict]:
    """Every line of a process's output, each of which must be a JSON object."""
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_json_for_collectors_and_coloured_text_in_a_terminal():
    assert wants_json("auto", io.StringIO()) and not wants_json("auto", Terminal())
    assert wants_json("json", Terminal()) and not wants_json("text", io.StringIO())
    import logging

    record = logging.LogRecord("engine.sweeper", logging.WARNING, __file__, 1,
                               "batch of %d for %s", (3, "alice"), None)
    coloured = formatter("text", Terminal()).format(record)
    assert "\x1b[" in coloured and "batch of 3 for alice" in coloured
    plain = formatter("text", io.StringIO()).format(record)
    assert "\x1b[" not in plain and "batch of 3 for alice" in plain and "engine.sweeper" in plain
    line = json.loads(formatter("json", io.StringIO()).format(record))
    assert line["message"] == "batch of 3 for alice"
    assert (line["level"], line["logger"]) == ("warning", "engine.sweeper") and line["time"]


PROBE = textwrap.dedent("""
    import logging, sys, threading, warnings
    from engine.logs import bind_process, setup_logging
    setup_logging("DEBUG", sys.argv[1])
    bind_process(consumer="probe-1")
    token = sys.argv[2]
    logging.getLogger("engine.writer").error("refused %s", "alice",
                                             extra={"user": "alice", "entry_id": "1-0"})
    logging.getLogger("geventwebsocket.handler").warning("GET /socket.io/?token=%s", token)
    logging.getLogger("engineio.server").error("Authorization: Bearer %s", token)
    warnings.warn(f"careless warning {token}")
    try:
        raise ValueError(f"bad token {token} at redis://user:{sys.argv[3]}@h:6379/0")
    except ValueError:
        logging.getLogger("webapp.errors").exception("unhandled error")
    thread = threading.Thread(target=lambda: 1 / 0 if token else None, name="worker")
    thread.start(); thread.join()
    raise RuntimeError(f"uncaught with {token[:40]}")
""")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_library_lines_warnings_and_every_traceback_come_out_formatted_and_scrubbed(fmt):
    token = make_jwt("alice")
    done = subprocess.run([sys.executable, "-c", PROBE, fmt, token, PASSWORD], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1  # the uncaught exception
    assert done.stderr == ""  # everything went through the one handler, on stdout
    out = done.stdout
    for secret in (token, *token.split("."), PASSWORD, token[:40]):
        assert secret not in out
    assert out.count("[token]") >= 5 and "redis://user:***@h:6379/0" in out
    assert "ZeroDivisionError" in out and "RuntimeError: uncaught with [token]" in out
    if fmt == "json":
        lines = json_lines(out)
        loggers = [line["logger"] for line in lines]
        assert loggers[:4] == ["engine.writer", "geventwebsocket.handler", "engineio.server",
                               "py.warnings"]
        assert all(line["consumer"] == "probe-1" for line in lines)
        assert lines[0]["user"] == "alice" and lines[0]["entry_id"] == "1-0"
        assert "Traceback" in lines[4]["exception"]


def test_every_line_is_json_with_its_context_and_each_request_has_an_access_line(
        mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend, LOG_FORMAT="json")
    engine = start_engine(mysql_backend, LOG_FORMAT="json")
    token = web.token("alice")
    answer = requests.post(f"{web.url}/api/messages", json={"msg_id": "m-1", "message": "x"},
                           headers={"Authorization": f"Bearer {token}",
                                    "X-Request-ID": "req-42"}, timeout=10)
    assert answer.status_code == 202 and answer.headers["X-Request-ID"] == "req-42"
    generated = requests.get(f"{web.url}/healthz", headers={"X-Request-ID": "not a request id"},
                             timeout=10).headers["X-Request-ID"]
    assert generated != "not a request id" and len(generated) == 32
    with connected(web.url, token) as client:
        assert client.call({"msg_id": "m-2", "message": "y"})["ok"] is True
    wait_until(lambda: '"path":"/socket.io/"' in web.process.log(), 10,
               what="the websocket's access line, written when it closed")

    web_lines = json_lines(web.process.log())
    instance = web_lines[-1]["instance"]
    assert instance and all(line["instance"] == instance for line in web_lines)
    access = [line for line in web_lines if line["logger"] == "webapp.access"]
    posted = next(line for line in access if line["request_id"] == "req-42")
    assert posted["method"] == "POST" and posted["path"] == "/api/messages"
    assert posted["status"] == 202 and posted["duration_ms"] >= 0
    assert posted["user"] == "alice" and posted["message"].startswith("POST /api/messages 202")
    assert any(line["request_id"] == generated and line["path"] == "/healthz" for line in access)
    upgraded = [line for line in access if line["path"] == "/socket.io/"]
    assert upgraded and upgraded[-1]["status"] == 101  # written when the websocket closed
    for line in web_lines:
        assert {"time", "level", "logger", "message"} <= set(line), line

    engine_lines = json_lines(engine.log())
    name = engine_lines[0]["consumer"]
    assert name and all(line["consumer"] == name for line in engine_lines)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_no_token_password_or_authorization_header_reaches_any_log(mysql_backend, start_web,
                                                                   start_engine, fmt):
    web = start_web(mysql_backend, LOG_FORMAT=fmt, LOG_LEVEL="DEBUG")
    engine = start_engine(mysql_backend, LOG_FORMAT=fmt, LOG_LEVEL="DEBUG")
    url = web.url
    registered = requests.post(f"{url}/api/auth/register", timeout=10,
                               json={"username": "carol", "password": PASSWORD})
    assert registered.status_code == 201
    tokens = requests.post(f"{url}/api/auth/login", timeout=10,
                           json={"username": "carol", "password": PASSWORD}).json()
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    forged = make_jwt("carol", key="another-key-of-sufficient-length-0123456789")
    expired = make_jwt("carol", lifetime=-30)
    secrets = [access, refresh, forged, expired, PASSWORD, TEST_JWT_SECRET]

    # HTTP: every header, the path, the query string, the body, good and bad.
    requests.post(f"{url}/api/auth/login", json={"username": "carol", "password": PASSWORD[::-1]},
                  timeout=10)
    requests.post(f"{url}/api/auth/login", data=f"username=carol&password={PASSWORD}",
                  timeout=10)
    for token in (access, forged, expired):
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": token,
                   "Cookie": f"session={token}", "X-Token": token}
        requests.post(f"{url}/api/messages?token={token}&password={PASSWORD}", timeout=10,
                      headers=headers, json=[{"msg_id": token[:60], "message": token}])
        requests.get(f"{url}/api/{token}?access_token={token}&password={PASSWORD}",
                     headers=headers, timeout=10)
        requests.post(f"{url}/api/messages", data=b"{not json " + token.encode(),
                      headers=headers, timeout=10)
    # socket.io: the token in auth, in the query string, in a header; good and bad.
    with connected(f"{url}?token={access}", access,
                   headers={"Authorization": f"Bearer {access}"}) as client:
        assert client.call({"msg_id": "s-1", "message": f"my token is {access}"})["ok"]
        assert client.call({"msg_id": access[:64], "message": 1})["ok"] is False
    for token in (forged, expired):
        refused(f"{url}?token={token}", token, headers={"Authorization": f"Bearer {token}"})
    requests.get(f"{url}/socket.io/?EIO=4&transport=polling&token={forged}", timeout=10)
    # A malformed packet carrying a token (its start is quoted in a warning line).
    raw = raw_session(url, access)
    try:
        raw.send(f'42["data", "{access}')
        try:
            while raw.recv() != "":
                pass
        except websocket.WebSocketConnectionClosedException:
            pass
    finally:
        raw.close()
    requests.post(f"{url}/api/auth/logout", json={"refresh_token": refresh}, timeout=10,
                  headers={"Authorization": f"Bearer {access}"})
    wait_until(lambda: "malformed" in web.process.log(), 10, what="the malformed packet logged")

    for name, log in (("web", web.process.log()), ("engine", engine.log())):
        assert log.strip(), name
        for secret in secrets:
            for part in secret.split("."):
                assert part not in log, f"{name} log holds part of a secret"
        assert "Bearer ey" not in log and "Authorization: Bearer" not in log
    web_log = web.process.log()
    assert "[token]" in web_log  # the malformed packet and the request ids were scrubbed
    assert "connection refused (invalid token)" in web_log  # the events are still logged


def test_the_operator_commands_log_through_the_same_scrubbing_handler(mysql_backend):
    """`flask --app wsgi …` is an entry point too: its log lines are Tributary's lines (JSON
    here), on stderr, scrubbed, and its own output stays alone on stdout."""
    env = service_env(mysql_backend, LOG_FORMAT="json", LOG_LEVEL="INFO")
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init-db"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("schema version")
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(line["logger"] == "engine.schema" for line in lines), done.stderr
