"""Pages in a real browser (Chromium, tests/browser_support.py): the demo page and
`tributary.js` lose nothing when the web process is killed, when the page is reloaded, or when
the access token expires; the demo page follows its key's live aggregates, through a restart of
the web process too; a plain socket.io page gets its messages stored; a page from an origin the
server does not accept hears why it may not connect. Sessions the server ends are in
tests/test_browser_sessions.py."""

from __future__ import annotations

import signal
import time
import urllib.parse

import pytest
import sqlalchemy as sa

from engine import keys
from engine.schema import key_stats, messages
from tests.browser_support import (
    SOCKET_IO_UMD,
    STATIC,
    all_settled,
    count,
    open_demo_with_tokens,
    record_msg_ids,
    sign_in,
    stored_msg_ids,
    wait_for_connection,
    wait_for_generated,
)
from tests.conftest import make_jwt, unavailable, wait_until
from tests.gateway_support import connect


def assert_stored_exactly_once(db, user: str, generated: set[str]) -> None:
    stored = stored_msg_ids(db, user)
    assert len(stored) == len(set(stored))
    assert set(stored) == generated


def test_the_demo_page_loses_nothing_when_the_web_process_is_killed(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    generated: set[str] = set()
    sign_in(page, web.url, "alice")
    record_msg_ids(page, generated)
    page.fill("#rate", "10")
    page.click("#start")
    wait_until(lambda: count(page, "stored") >= 5, 20, what="the first messages stored")

    web.process.kill()  # SIGKILL: acks in flight are lost, so are receipts
    assert web.process.popen.returncode == -signal.SIGKILL
    page.wait_for_selector("#connection:not([data-status=connected])")
    sent_before_restart = count(page, "generated")
    wait_for_generated(page, sent_before_restart + 5)  # queued while the server is gone
    start_web(mysql_backend, port=web.port)
    wait_for_connection(page)
    wait_for_generated(page, count(page, "generated") + 5)
    page.click("#start")  # stop

    wait_until(lambda: all_settled(page), 30, what="every message stored")
    assert count(page, "stored") == count(page, "generated") == len(generated)
    assert count(page, "refused") == 0
    assert_stored_exactly_once(mysql_backend.db, "alice", generated)
    assert not page.problems, page.problems


#: What the demo page's tables show for a figure not known yet (an en dash).
NO_FIGURE = "\u2013"


def live_messages(page) -> int:
    """The messages count of the demo page's live aggregates table (0 while it shows none)."""
    text = page.text_content("#live-message_count")
    return 0 if text == NO_FIGURE else int(text)


def test_the_demo_page_shows_live_aggregates_of_its_key_through_a_restart_of_the_web_process(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    sign_in(page, web.url, "alice")
    page.fill("#key", "kitchen")
    page.press("#key", "Tab")  # a changed field says so when it loses the focus
    page.wait_for_selector("#live-status[data-status=subscribed]")
    assert page.text_content("#live-key") == "kitchen"
    assert page.text_content("#live-message_count") == NO_FIGURE  # nothing with this key yet
    page.fill("#rate", "10")
    page.click("#start")
    wait_until(lambda: live_messages(page) >= 3, 20, what="the key's first figures, live")
    shown = live_messages(page)
    wait_until(lambda: live_messages(page) > shown, 10, what="the figures to change again")

    web.process.kill()  # its subscriptions die with it
    page.wait_for_selector("#live-status[data-status='not connected']")
    start_web(mysql_backend, port=web.port)
    page.wait_for_selector("#live-status[data-status=subscribed]")
    # The answer to the new subscription brought the figures of the moment; from here on only
    # `stats` events after commits can change them.
    updates, shown = page.evaluate("demo.live.updates"), live_messages(page)
    wait_until(lambda: page.evaluate("demo.live.updates") >= updates + 2
               and live_messages(page) > shown, 20, what="live updates after the restart")
    page.click("#start")  # stop

    wait_until(lambda: all_settled(page), 30, what="every message stored")
    wait_until(lambda: live_messages(page) == count(page, "stored"), 10,
               what="the live figures to count every stored message")
    with mysql_backend.db.connect() as conn:
        row = conn.execute(sa.select(key_stats).where(key_stats.c.user_id == "alice",
                                                      key_stats.c.key == "kitchen")).one()
    live = page.evaluate("demo.live.stats")
    assert (live["user"], live["key"], live["messages"]) == ("alice", "kitchen",
                                                             row.message_count)
    assert live["values"]["sum"] == pytest.approx(row.value_sum)
    assert page.text_content("#live-value_count") == str(row.value_count)
    assert not page.problems, page.problems


def test_a_reload_in_the_middle_of_sending_loses_nothing_with_persistence(
        page, mysql_backend, start_web, start_engine):
    # A tight rate limit keeps a backlog in the page's outbox: most of a burst is refused
    # "rate limited" and waits to be sent again, in localStorage only, when the page reloads.
    web = start_web(mysql_backend, RATE_LIMIT=10, RATE_BURST=10)
    start_engine(mysql_backend)
    generated: set[str] = set()
    sign_in(page, web.url, "alice", persist=True)
    record_msg_ids(page, generated)
    page.fill("#rate", "5")
    page.click("#start")
    page.fill("#burst-size", "40")
    page.click("#burst")
    # The page's calls to recordMsgId are handled only while Playwright is called: read the
    # page's own count first, which lets the pending ones through.
    wait_until(lambda: page.evaluate("demo.generated") >= 42 and len(generated) >= 42, 30,
               what="the burst and a few more generated")
    outbox_at_reload = page.evaluate("demo.client.pending()")
    assert outbox_at_reload >= 10  # not yet accepted: only the page holds them

    page.reload()
    wait_for_connection(page)
    record_msg_ids(page, generated)
    wait_until(lambda: all_settled(page), 60, what="every restored message stored")
    # The reloaded page sent what it restored (fewer than `outbox_at_reload` when acks came in
    # between that reading and the reload); every generated msg_id is stored exactly once.
    assert count(page, "stored") > 0
    assert count(page, "refused") == 0
    assert_stored_exactly_once(mysql_backend.db, "alice", generated)
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('tributary:'))"
                         ) == []
    assert not page.problems, page.problems


def test_the_access_token_is_refreshed_before_it_expires_and_nothing_is_lost(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    web.token("alice")
    generated: set[str] = set()
    # The login would give 15 minutes; this token lives 4 seconds.
    first_token = make_jwt("alice", lifetime=4)
    expires = time.time() + 4
    open_demo_with_tokens(page, web, first_token,
                          make_jwt("alice", token_type="refresh", lifetime=3600))
    wait_for_connection(page)
    record_msg_ids(page, generated)
    page.fill("#rate", "10")
    page.click("#start")

    def saved_token() -> str:
        return page.evaluate(
            "JSON.parse(sessionStorage.getItem('tributary-demo-session')).access_token")

    # The page keeps the fresh token (for a reload) when the client hands it over.
    wait_until(lambda: saved_token() != first_token, 10, what="a refreshed access token")
    assert page.evaluate("demo.client.stopped") is None
    wait_until(lambda: time.time() > expires + 1, 10, what="the first token to expire")
    wait_for_generated(page, count(page, "generated") + 5)
    page.click("#start")

    wait_until(lambda: all_settled(page), 20, what="every message stored")
    assert count(page, "stored") == len(generated) >= 40
    assert_stored_exactly_once(mysql_backend.db, "alice", generated)
    assert not page.problems, page.problems


def test_a_page_whose_token_has_expired_refreshes_it_when_refused_and_sends(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    web.token("alice")
    open_demo_with_tokens(page, web, make_jwt("alice", lifetime=-10),
                          make_jwt("alice", token_type="refresh", lifetime=3600))
    wait_for_connection(page)  # after "token expired", a refresh, and a new attempt
    page.click("#burst")
    wait_until(lambda: count(page, "stored") == 50 and all_settled(page), 20,
               what="the burst stored")
    assert len(stored_msg_ids(mysql_backend.db, "alice")) == 50
    assert not page.problems, page.problems


def test_an_expired_refresh_token_stops_the_page_with_the_reason(page, mysql_backend, start_web):
    web = start_web(mysql_backend)
    web.token("alice")
    open_demo_with_tokens(page, web, make_jwt("alice", lifetime=-10),
                          make_jwt("alice", token_type="refresh", lifetime=-10))
    page.wait_for_selector("#connection[data-status=stopped]")
    assert page.text_content("#connection") == "stopped: session ended: token expired"
    assert page.is_visible("#stopped")


PLAIN_PAGE = """<!doctype html>
<title>plain socket.io page</title>
<script src="socket.io.min.js"></script>
<p>sent <span id="sent">0</span>, <span id="status">connecting</span></p>
<script>
  // What a page that knows Tributary only by its URL does: connect with ?token= and emit a
  // message a second, without an ack callback.
  const socket = io(new URLSearchParams(location.search).get("tributary"));
  let sent = 0;
  socket.on("connect", () => { document.getElementById("status").textContent = "connected"; });
  setInterval(() => {
    socket.emit("data", { msg_id: `plain-${sent}`, message: "hello", user_id: "alice",
                          timestamp: new Date().toISOString() });
    document.getElementById("sent").textContent = ++sent;
  }, 1000);
</script>
"""


def test_a_plain_socket_io_page_with_a_token_in_its_url_gets_its_messages_stored(
        page, mysql_backend, start_web, start_engine, static_site):
    if not SOCKET_IO_UMD.is_file():
        unavailable("tests/js/node_modules is missing (make test installs it)")
    static_site.copy(SOCKET_IO_UMD, "socket.io.min.js")
    static_site.add("plain.html", PLAIN_PAGE)
    web = start_web(mysql_backend, CORS_ORIGINS=static_site.origin)
    start_engine(mysql_backend)
    server = f"{web.url}/?token={web.token('alice')}"
    page.goto(f"{static_site.origin}/plain.html?tributary={urllib.parse.quote(server)}")
    page.wait_for_selector("#status:text('connected')")
    wait_until(lambda: len(stored_msg_ids(mysql_backend.db, "alice")) >= 3, 15,
               what="three messages of the plain page stored")
    stored = stored_msg_ids(mysql_backend.db, "alice")
    assert sorted(stored) == [f"plain-{n}" for n in range(len(stored))]
    assert not page.problems, page.problems


FOREIGN_PAGE = """<!doctype html>
<title>a page from another origin</title>
<p>status: <span id="status">connecting</span>; reason: <span id="reason"></span></p>
<script type="module">
  import { connect } from "./tributary.js";
  const params = new URLSearchParams(location.search);
  const client = connect(params.get("server"), { token: params.get("token") });
  client.on("connection", (status, detail) => {
    document.getElementById("status").textContent = status;
    if (detail.reason) document.getElementById("reason").textContent = detail.reason;
  });
  client.send({ message: "from elsewhere" });
</script>
"""


def test_a_page_from_an_origin_not_in_cors_origins_is_refused_and_told_why(
        page, mysql_backend, start_web, static_site):
    # The page brings its own copy of tributary.js: it may not even read Tributary's.
    static_site.copy(STATIC / "tributary.js", "tributary.js")
    static_site.copy(STATIC / "vendor", "vendor")
    static_site.add("foreign.html", FOREIGN_PAGE)
    web = start_web(mysql_backend, CORS_ORIGINS="http://allowed.example")
    query = urllib.parse.urlencode({"server": web.url, "token": web.token("alice")})
    page.goto(f"{static_site.origin}/foreign.html?{query}")
    page.wait_for_selector("#status:text('stopped')")
    assert page.text_content("#reason") == "origin not allowed"
    assert stored_msg_ids(mysql_backend.db, "alice") == []
    assert mysql_backend.redis.keys("ingest:*") == []


LIBRARY_RUN = """async (token) => {
  const { connect } = await import("/static/tributary.js");
  const client = connect("", { token });
  const states = {};
  client.on("state", (msgId, state) => (states[msgId] ??= []).push(state));
  let thrown = null;
  try {
    client.send({ message: "not mine", user_id: "bob" });
  } catch (error) {
    thrown = error.message;
  }
  // Sent together: one `data` event carrying an array.
  const sent = [client.send({ message: "fine", value: 2 }),
                client.send({ message: "bad", value: "two" }),
                client.send({ message: "fine too", key: "k" })];
  const pendingAtFirst = client.pending();
  const outcomes = await Promise.allSettled(sent);
  client.close();
  return { thrown, pendingAtFirst, states, outcomes: outcomes.map((outcome) =>
    outcome.status === "fulfilled" ? outcome.value : { refused: outcome.reason.reason,
                                                        msg_id: outcome.reason.msg_id }) };
}"""


def test_the_library_reports_each_state_and_refuses_bad_input_for_good(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    page.goto(f"{web.url}/")
    result = page.evaluate(LIBRARY_RUN, web.token("alice"))
    assert result["thrown"].startswith('tributary: unknown field "user_id"')
    assert result["pendingAtFirst"] == 3
    fine, bad, fine_too = result["outcomes"]
    assert bad["refused"] == "value: must be a number"
    assert result["states"] == {
        fine["msg_id"]: ["queued", "sent", "accepted", "stored"],
        bad["msg_id"]: ["queued", "sent", "refused"],  # final: never sent again
        fine_too["msg_id"]: ["queued", "sent", "accepted", "stored"]}
    with mysql_backend.db.connect() as conn:
        rows = dict(conn.execute(sa.select(messages.c.msg_id, messages.c.stream_id)).all())
    assert rows == {fine["msg_id"]: fine["id"], fine_too["msg_id"]: fine_too["id"]}
    assert not page.problems, page.problems


SUBSCRIBE_RUN = """async (token) => {
  const { connect } = await import("/static/tributary.js");
  const client = connect("", { token });
  const seen = { first: [], second: [], events: [] };
  const thrown = [];
  for (const key of ["", "k".repeat(256), 5]) {
    try {
      client.subscribe(key, () => {});
    } catch (error) {
      thrown.push(error.message);
    }
  }
  client.on("subscription", (key, status, detail) =>
    seen.events.push([key, status, detail.error ?? null]));
  const until = (test) => new Promise((resolve) => {
    const check = () => (test() ? resolve() : setTimeout(check, 20));
    check();
  });
  const stopFirst = client.subscribe("pump", (stats, key) =>
    seen.first.push(stats && [key, stats.messages, stats.values.sum]));
  await until(() => seen.first.length === 1);  // the figures of the moment: none yet
  await Promise.all([client.send({ message: "a", key: "pump", value: 2 }),
                     client.send({ message: "b", key: "other", value: 7 })]);
  await client.send({ message: "c", key: "pump", value: 3 });
  await until(() => seen.first.at(-1)?.[1] === 2);
  // Another listener of the same key gets the figures known at once.
  const stopSecond = client.subscribe("pump", (stats) => seen.second.push(stats.messages));
  await until(() => seen.second.length === 1);
  stopFirst();
  stopSecond();
  // A connection holds at most 100 subscriptions: the 101st is refused, for good.
  for (let n = 0; n < 101; n++) client.subscribe(`many-${n}`, () => {});
  await until(() => seen.events.some(([, status]) => status === "refused"));
  client.close();
  return { thrown, ...seen };
}"""


def test_the_library_follows_a_keys_aggregates_until_unsubscribed_and_reports_refusals(
        page, mysql_backend, start_web, start_engine):
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    page.goto(f"{web.url}/")
    # A second connection of alice keeps her queue (and its subscription counts) from being
    # removed as idle once the page's client closes.
    keeper = connect(web.url, web.token("alice"))
    result = page.evaluate(SUBSCRIBE_RUN, web.token("alice"))
    assert result["thrown"] == ["tributary: a key is a string of 1 to 255 characters"] * 3
    # Never the other key's figures; each reading at most once, only moving forward.
    first = result["first"]
    assert first[0] is None and first[-1] == ["pump", 2, 5.0]
    assert [row[1] for row in first[1:]] == sorted({row[1] for row in first[1:]})
    assert result["second"] == [2]
    refused = [event for event in result["events"] if event[1] == "refused"]
    assert refused == [["many-100", "refused", "subscriptions: at most 100 per connection"]]
    assert ["pump", "subscribed", None] in result["events"]
    # Ended subscriptions are counted out on the server; the refused one was never counted.
    def counted() -> dict[str, str]:
        return mysql_backend.redis.hgetall(keys.subscriptions("alice"))

    try:
        wait_until(lambda: set(counted().values()) == {"0"}, 10,
                   what="the connection's subscriptions counted out after close()")
        assert set(counted()) == {"pump"} | {f"many-{n}" for n in range(100)}
    finally:
        keeper.close()
    assert not page.problems, page.problems
