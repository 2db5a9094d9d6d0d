"""The queue controls through the dashboard's own actions, with a real engine writing: pausing
holds one user's rows back while the others are written, and resuming writes them in order;
a purge moves the entries to dead letters, and replaying them from the Dead letters view
brings them back into MySQL; the Queues page shows each queue as it is."""

from __future__ import annotations

import re

import sqlalchemy as sa

from engine import keys
from engine.schema import dead_letters
from tests.admin_support import ensure_account, signed_in
from tests.conftest import wait_until
from tests.engine_support import append, order_violations, payload, rows


def msg_ids(db, user: str) -> list[str]:
    return [row.msg_id for row in rows(db) if row.user_id == user]


def queue_row(page: str, user: str) -> str:
    found = re.search(rf'<tr data-user="{user}".*?</tr>', page, re.S)
    assert found, f"no row for {user}"
    return found.group(0)


def test_pause_holds_a_users_rows_back_while_others_are_written_and_resume_writes_them(
        mysql_backend, start_web, start_engine):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend)
    start_engine(mysql_backend)
    admin = signed_in(web.url, "boss")
    append(mysql_backend.redis, "alice", [payload("warm-up")])
    wait_until(lambda: msg_ids(mysql_backend.db, "alice") == ["warm-up"], 10,
               what="alice's first row")

    assert admin.post("/admin/queues/action", {"action": "pause", "user": "alice"}) \
        .status_code == 302
    append(mysql_backend.redis, "alice", [payload(f"a{n}") for n in range(5)])
    append(mysql_backend.redis, "bob", [payload(f"b{n}") for n in range(5)])
    wait_until(lambda: len(msg_ids(mysql_backend.db, "bob")) == 5, 10, what="bob's rows")
    append(mysql_backend.redis, "bob", [payload("b-late")])  # a later sweep, alice still held
    wait_until(lambda: "b-late" in msg_ids(mysql_backend.db, "bob"), 10, what="bob's later row")
    assert msg_ids(mysql_backend.db, "alice") == ["warm-up"]
    row = queue_row(admin.get("/admin/queues/?sort=backlog").text, "alice")
    assert "paused" in row and '<td class="text-right">5</td>' in row

    assert admin.post("/admin/queues/action", {"action": "resume", "user": "alice"}) \
        .status_code == 302
    wait_until(lambda: len(msg_ids(mysql_backend.db, "alice")) == 6, 10, what="alice's rows")
    assert msg_ids(mysql_backend.db, "alice") == ["warm-up"] + [f"a{n}" for n in range(5)]
    assert order_violations(mysql_backend.db) == []
    assert "paused" not in queue_row(admin.get("/admin/queues/").text, "alice")


def test_a_purge_moves_entries_to_dead_letters_and_a_replay_brings_them_back(
        mysql_backend, start_web, start_engine):
    ensure_account(mysql_backend, "boss", "admin")
    web = start_web(mysql_backend)
    admin = signed_in(web.url, "boss")
    append(mysql_backend.redis, "alice", [payload(f"a{n}") for n in range(4)])
    confirm = admin.get("/admin/queues/purge?user=alice")
    assert "Purge alice" in confirm.text and "4 entries" in confirm.text
    unconfirmed = admin.post("/admin/queues/action", {"action": "purge", "user": "alice"})
    assert unconfirmed.status_code == 302
    assert mysql_backend.redis.xlen(keys.stream("alice")) == 4  # nothing without confirming
    admin.post("/admin/queues/action", {"action": "purge", "user": "alice",
                                        "confirm": "alice"})
    assert mysql_backend.redis.xlen(keys.stream("alice")) == 0
    with mysql_backend.db.connect() as conn:
        letters = conn.execute(sa.select(dead_letters).order_by(dead_letters.c.id)).all()
    assert [(d.msg_id, d.error) for d in letters] == [
        (f"a{n}", "purged by boss") for n in range(4)]
    listed = admin.get("/admin/dead-letters/?user=alice").text
    assert all(f'data-id="{d.id}"' in listed for d in letters)

    start_engine(mysql_backend)
    answer = admin.post("/admin/dead-letters/action",
                        {"action": "replay", "id": [d.id for d in letters]})
    assert answer.status_code == 302
    wait_until(lambda: msg_ids(mysql_backend.db, "alice") == [f"a{n}" for n in range(4)], 10,
               what="the replayed rows")
    assert "No dead letter" in admin.get("/admin/dead-letters/?user=alice").text
    replayed = admin.get("/admin/dead-letters/?user=alice&state=replayed").text
    assert all(f'data-id="{d.id}"' in replayed for d in letters)


def test_the_queues_page_sorts_by_backlog_and_pages_by_100(mysql_backend, start_web,
                                                          start_engine):
    ensure_account(mysql_backend, "watcher", "viewer")
    append(mysql_backend.redis, "busy", [payload(f"m{n}") for n in range(7)])
    for n in range(150):
        append(mysql_backend.redis, f"u{n:03d}", [payload(f"x{n}")])
    web = start_web(mysql_backend)
    viewer = signed_in(web.url, "watcher")
    first = viewer.get("/admin/queues/?sort=backlog").text
    users = re.findall(r'<tr data-user="([^"]+)"', first)
    assert users[0] == "busy" and len(users) == 100
    assert "Page 1 of 2" in first
    second = re.findall(r'<tr data-user="([^"]+)"',
                        viewer.get("/admin/queues/?sort=name&page=2").text)
    assert second == [f"u{n:03d}" for n in range(99, 150)]
    assert re.findall(r'<tr data-user="([^"]+)"', viewer.get("/admin/queues/?q=u14").text) \
        == [f"u14{n}" for n in range(10)]
    assert "ranking-note" not in first  # measured live: no engine has ranked the queues

    # With an engine running (one that writes nothing yet), pages follow its ranking.
    start_engine(mysql_backend, BATCH_SIZE_THRESHOLD=10**6, MAX_BATCH_AGE=3600)
    wait_until(lambda: mysql_backend.redis.zcard(keys.BACKLOG_RANKING) == 151, 10,
               what="the engine's backlog ranking")
    ranked = viewer.get("/admin/queues/?sort=backlog").text
    assert "ranking-note" in ranked and "Page 1 of 2" in ranked
    users = re.findall(r'<tr data-user="([^"]+)"', ranked)
    assert users[0] == "busy" and len(users) == 100
    rest = re.findall(r'<tr data-user="([^"]+)"',
                      viewer.get("/admin/queues/?sort=backlog&page=2").text)
    assert len(rest) == 51 and not set(rest) & set(users)
