"""ACK_REPLICAS on Redis Cluster (3 masters, 3 replicas, made by the tests): each master's share
of a flush waits for its own replica, a master whose replica cannot confirm fails only its own
users' messages, redirections are followed, and a master killed -9 mid-run loses nothing that
was acknowledged."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import AskError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from engine import keys, replication, scripts, streams
from engine.connections import connect_cluster
from tests.cluster_support import TestCluster
from tests.conftest import Backend, wait_until
from tests.gateway_support import connected, msg_ids
from tests.test_cluster import (  # noqa: F401 (senders: a fixture)
    FAST_TAKEOVER,
    _database_url,
    finish,
    per_user_order_kept,
    senders,
    start_senders,
)

ACK_REPLICAS_TIMEOUT = 0.5
LIMITS = streams.Limits("socket", rate=0, burst=100, max_backlog=1000)
WAIT_MS = int(ACK_REPLICAS_TIMEOUT * 1000)
#: The replicas' wait while a master fails over: the machine is busiest then (a cluster
#: electing, a node restarting), and a live master's replica must not miss its confirmation
#: for being slow to be scheduled; a dead master's users fail whatever the wait.
FAILOVER_WAIT_MS = 2000


def users_on_every_master(client, count_per_master: int = 2) -> dict[str, list[str]]:
    """User ids falling on each master (by node name), `count_per_master` each."""
    found: dict[str, list[str]] = {}
    number = 0
    while len(found) < 3 or any(len(users) < count_per_master for users in found.values()):
        user = f"user{number}"
        number += 1
        users = found.setdefault(client.get_node_from_key(keys.stream(user)).name, [])
        if len(users) < count_per_master:
            users.append(user)
    return found


def replicas_in_sync(cluster: TestCluster) -> None:
    """Wait until every master's replica confirms a write (a new cluster's replicas finish
    their first sync some seconds after the cluster says it is ok)."""
    with contextlib.closing(cluster.client()) as client:
        for port in cluster.master_ports():
            key = next(f"sync{n}" for n in range(100_000)
                       if client.get_node_from_key(f"sync{n}").port == port)
            with contextlib.closing(cluster.node(port)) as master:
                def confirmed(master=master, key=key) -> bool:
                    pipe = master.pipeline(transaction=False)
                    pipe.set(key, 1)
                    pipe.delete(key)
                    pipe.execute_command("WAIT", 1, 200)
                    return pipe.execute()[-1] == 1

                wait_until(confirmed, 30, what=f"the replica of {port} to confirm writes")


@pytest.fixture
def cluster(_cluster: TestCluster) -> TestCluster:
    """This worker's cluster, every replica confirming writes."""
    replicas_in_sync(_cluster)
    return _cluster


def replica_of(cluster: TestCluster, master_port: int) -> int:
    """The port of the replica of the master on `master_port`."""
    info = cluster.node(master_port).info("replication")
    return int(info["slave0"]["port"])


@contextlib.contextmanager
def frozen(cluster: TestCluster, port: int) -> Iterator[None]:
    """SIGSTOP the node on `port` (by pid) for the block: it stands for a replica that has
    fallen behind or is cut off; SIGCONT after, and wait until it is in sync again."""
    process = cluster.processes[port]
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)
        wait_until(lambda: cluster.node(port).info("replication").get("master_link_status")
                   == "up", 30, what=f"the replica on {port} to be in sync again")


def append(client, users: list[str], message: bytes = b'{"msg_id":"m"}', wait_ms: int = WAIT_MS):
    return replication.append_confirmed(client, [(user, LIMITS, [message]) for user in users],
                                        1, wait_ms)


# --- the append itself ----------------------------------------------------------------------------

def test_each_master_s_share_of_a_flush_waits_for_its_own_replica(cluster_backend, cluster):
    client = cluster_backend.redis
    by_master = users_on_every_master(client)
    users = [user for group in by_master.values() for user in group]
    replies, confirmed = append(client, users)
    assert all(isinstance(reply, list) and "-" in str(reply[1]) for reply in replies), replies
    assert confirmed == [1] * len(users)
    for user in users:  # acknowledged means its master's replica has it already
        port = replica_of(cluster, client.get_node_from_key(keys.stream(user)).port)
        with contextlib.closing(cluster.node(port)) as replica:
            pipe = replica.pipeline(transaction=False)  # one connection: READONLY holds
            pipe.execute_command("READONLY")
            pipe.xlen(keys.stream(user))
            assert pipe.execute()[1] == 1, user


def test_a_master_whose_replica_cannot_confirm_fails_only_its_own_users(
        cluster_backend, cluster):
    client = cluster_backend.redis
    by_master = users_on_every_master(client)
    stalled = next(iter(by_master))
    master = client.get_node(node_name=stalled).port
    with frozen(cluster, replica_of(cluster, master)):
        users = [user for group in by_master.values() for user in group]
        replies, confirmed = append(client, users)
    for user, reply, count in zip(users, replies, confirmed):
        assert isinstance(reply, list), reply  # every master took its appends
        assert count == (0 if user in by_master[stalled] else 1), user
    assert {user for user, count in zip(users, confirmed) if count == 0} == \
        set(by_master[stalled])


def node_ids(client, cluster: TestCluster) -> dict[str, str]:
    """Node name -> cluster node id, of every master."""
    return {client.get_node(port=port, host="127.0.0.1").name:
            cluster.node(port).execute_command("CLUSTER", "MYID")
            for port in cluster.master_ports()}


def assign_slot(cluster: TestCluster, slot: int, owner: str, order: list[int]) -> None:
    """Give an empty slot to the master with node id `owner`, told to the masters on the
    ports of `order` in turn (the new owner first, as redis-cli --cluster does)."""
    for port in order:
        with contextlib.closing(cluster.node(port)) as node:
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)


def test_a_slot_moved_to_another_master_is_followed_there(cluster_backend, cluster):
    client = cluster_backend.redis
    by_master = users_on_every_master(client, 1)
    (source, [user]), (target, _), (third, _) = list(by_master.items())
    slot = client.keyslot(keys.stream(user))
    ids = node_ids(client, cluster)
    ports = {name: client.get_node(node_name=name).port for name in by_master}
    # A resharding this client has not heard of: the old master answers MOVED.
    assign_slot(cluster, slot, ids[target], [ports[target], ports[source], ports[third]])
    try:
        assert client.get_node_from_key(keys.stream(user)).name == source  # stale
        replies, confirmed = append(client, [user])
        assert isinstance(replies[0], list) and confirmed == [1]
        assert client.get_node_from_key(keys.stream(user)).name == target  # put right
        with contextlib.closing(cluster.node(ports[target])) as node:
            assert node.xlen(keys.stream(user)) == 1
    finally:
        with contextlib.closing(cluster.node(ports[target])) as node:
            node.delete(keys.stream(user), keys.rate_bucket(user, "socket"))
        assign_slot(cluster, slot, ids[source], [ports[source], ports[target], ports[third]])
        wait_until(cluster.healthy, 15, what="the cluster to agree on the slot again")


def test_a_user_whose_keys_were_migrated_mid_resharding_is_appended_to_through_asking(
        cluster_backend, cluster):
    client = cluster_backend.redis
    by_master = users_on_every_master(client, 1)
    (source, [user]), (target, _) = list(by_master.items())[:2]
    user_keys = [keys.stream(user), keys.rate_bucket(user, "socket")]
    rated = streams.Limits("socket", rate=0.01, burst=100, max_backlog=1000)  # keeps its bucket
    assert replication.append_confirmed(client, [(user, rated, [b"1"])], 1, WAIT_MS)[1] == [1]
    slot = client.keyslot(user_keys[0])
    ids = node_ids(client, cluster)
    source_node = cluster.node(client.get_node(node_name=source).port)
    target_port = client.get_node(node_name=target).port
    target_node = cluster.node(target_port)
    # A resharding half done, as redis-cli --cluster reshard leaves it: the slot migrating,
    # this user's keys already moved to the target.
    target_node.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
    source_node.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
    source_node.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000,
                                "KEYS", *user_keys)
    try:
        # The source answers ASK, naming the target, which takes it after ASKING.
        replies, confirmed = replication.append_confirmed(client, [(user, rated, [b"2"])], 1,
                                                          WAIT_MS)
        assert isinstance(replies[0], list) and confirmed == [1], replies
        pipe = target_node.pipeline(transaction=False)  # one connection: ASKING holds
        pipe.execute_command("ASKING")
        pipe.xlen(user_keys[0])
        assert pipe.execute()[1] == 2
        assert client.get_node_from_key(user_keys[0]).name == source  # no MOVED: map kept

        # A user with no keys yet in a migrating slot: Redis refuses a script over keys it
        # cannot be sure of (TRYAGAIN) until the migration ends; the append is not acked.
        newcomer = next(f"new{n}" for n in range(100_000)
                        if client.keyslot(keys.stream(f"new{n}")) == slot)
        replies, confirmed = append(client, [newcomer])
        assert isinstance(replies[0], (AskError, TryAgainError)) and confirmed == [0]
    finally:
        for node in (target_node, source_node):  # the slot ends where it was; the keys left
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[source])
        cluster.flush()
        for node in (source_node, target_node):
            node.close()
        wait_until(cluster.healthy, 15, what="the cluster to agree on the slot again")


def test_a_master_that_forgot_the_scripts_is_sent_them_and_the_append_again(
        cluster_backend, cluster):
    client = cluster_backend.redis
    by_master = users_on_every_master(client, 1)
    user = next(iter(by_master.values()))[0]
    node = cluster.node(client.get_node_from_key(keys.stream(user)).port)
    node.script_flush()
    replies, confirmed = append(client, [user])
    assert isinstance(replies[0], list) and confirmed == [1]
    assert node.script_exists(scripts.INGEST.sha) == [True]
    assert client.xlen(keys.stream(user)) == 1


@pytest.mark.slow
def test_a_dead_master_fails_only_its_own_users_until_its_promoted_replica_has_a_replica(
        tmp_path: Path):
    cluster = TestCluster(tmp_path / "cluster")
    cluster.start()
    # Replies wait up to FAILOVER_WAIT_MS for a replica: the socket waits longer.
    client = connect_cluster(cluster.url, decode_responses=True, socket_timeout=6,
                             socket_connect_timeout=2)
    try:
        replicas_in_sync(cluster)
        by_master = users_on_every_master(client)
        users = [user for group in by_master.values() for user in group]
        dead = next(iter(by_master))
        victim = client.get_node(node_name=dead).port
        promoted = replica_of(cluster, victim)
        cluster.kill(victim)

        # Mid-failover: the slot map still names the dead master.
        replies, confirmed = append(client, users, wait_ms=FAILOVER_WAIT_MS)
        for user, reply, count in zip(users, replies, confirmed):
            if user in by_master[dead]:
                assert isinstance(reply, RedisConnectionError) and count == 0, (user, reply)
            else:
                assert isinstance(reply, list) and count == 1, (user, reply)

        wait_until(lambda: promoted in cluster.master_ports() and cluster.healthy(), 30,
                   interval=0.1, what="the replica promoted")
        # The promoted master has no replica yet: its users' appends are taken, not confirmed.
        replies, confirmed = wait_until(
            lambda: (answer := append(client, users, wait_ms=FAILOVER_WAIT_MS)) and all(
                not isinstance(reply, Exception) for reply in answer[0]) and answer, 15,
            what="every user's master to answer")
        assert {user for user, count in zip(users, confirmed) if count == 0} == \
            set(by_master[dead])

        cluster.restart(victim)  # back as the replica of the promoted one
        wait_until(lambda: append(client, users, wait_ms=FAILOVER_WAIT_MS)[1] == [1] * len(users),
                   30, what="every user's append confirmed again")
    finally:
        client.close()
        cluster.stop()


# --- through the web process ----------------------------------------------------------------------

def test_a_user_whose_master_cannot_get_its_replica_to_confirm_is_told_unavailable(
        cluster_backend, cluster, start_web):
    web = start_web(cluster_backend, ACK_REPLICAS=1, ACK_REPLICAS_TIMEOUT=ACK_REPLICAS_TIMEOUT)
    client = cluster_backend.redis
    by_master = users_on_every_master(client, 1)
    stalled, *others = by_master
    [stuck], [fine] = by_master[stalled], by_master[others[0]]
    with connected(web.url, web.token(stuck)) as stuck_client, \
            connected(web.url, web.token(fine)) as fine_client:
        assert stuck_client.call({"msg_id": "before", "message": "x"})["ok"] is True
        master = client.get_node(node_name=stalled).port
        with frozen(cluster, replica_of(cluster, master)):
            assert stuck_client.call({"msg_id": "frozen", "message": "x"}, timeout=10) == \
                {"ok": False, "error": "unavailable", "msg_id": "frozen"}
            # Another master's user goes on being acknowledged meanwhile.
            assert fine_client.call({"msg_id": "meanwhile", "message": "x"}, timeout=10)["ok"]
        # The client retries with the same msg_id once the replica is back.
        wait_until(lambda: stuck_client.call({"msg_id": "frozen", "message": "x"},
                                             timeout=10)["ok"] is True, 15,
                   what="the replica to confirm again")
    assert "replicas confirmed" in web.process.log()
    assert msg_ids(client, fine) == ["meanwhile"]


# --- a master killed -9 ---------------------------------------------------------------------------

@pytest.mark.slow
def test_with_ack_replicas_a_master_killed_mid_run_loses_no_acknowledged_message(
        tmp_path: Path, mysql_db, start_web, start_engine, senders):  # noqa: F811
    cluster = TestCluster(tmp_path / "cluster")
    cluster.start()
    client = cluster.client()
    try:
        backend = Backend("cluster", cluster.url, _database_url(), client, mysql_db, (7, 0))
        replicas = {"ACK_REPLICAS": 1, "ACK_REPLICAS_TIMEOUT": 0.5}
        webs = [start_web(backend, **replicas), start_web(backend, **replicas)]
        engines = [start_engine(backend, **FAST_TAKEOVER) for _ in range(2)]
        replicas_in_sync(cluster)
        stop, threads = start_senders(backend, webs, 30, senders)
        wait_until(lambda: sum(len(s.acked) for s in senders) >= 90, 30,
                   what="messages flowing")
        # A master holding users' streams, not the socket.io channel's (receipts are not the
        # point here).
        victim = next(port for port in cluster.master_ports()
                      if any(client.get_node_from_key(keys.stream(s.user)).port == port
                             for s in senders))
        orphaned = [s.user for s in senders
                    if client.get_node_from_key(keys.stream(s.user)).port == victim]
        promoted = replica_of(cluster, victim)  # its only replica: the one to be promoted
        cluster.kill(victim)
        killed_at = time.monotonic()
        wait_until(lambda: promoted in cluster.master_ports() and cluster.healthy(), 30,
                   interval=0.1, what="a replica promoted in place of the dead master")
        after = {s.user: len(s.acked) for s in senders}
        # The other masters' users are acknowledged again; the promoted replica has no
        # replica of its own, so its users are told 'unavailable' until it has one.
        wait_until(lambda: all(len(s.acked) > after[s.user] + 1 for s in senders
                               if s.user not in orphaned), 30,
                   what="the other masters' users acknowledged again after the failover")
        assert cluster.node(promoted).info("replication")["connected_slaves"] == 0
        restarted_at = time.monotonic()
        cluster.restart(victim)  # back as the replica of the promoted one
        wait_until(lambda: cluster.node(promoted).info("replication").get("connected_slaves")
                   == 1, 30, what="the killed master back as a replica")
        after = {s.user: len(s.acked) for s in senders}
        wait_until(lambda: all(len(s.acked) > after[s.user] + 1 for s in senders), 30,
                   what="every user acknowledged again")
        acked, written = finish(backend, senders, stop, threads)

        print(f"\nmaster on port {victim} killed: {len(acked)} messages acked, "
              f"{len(acked - set(written))} acked ones lost (ACK_REPLICAS=1), "
              f"{sum(s.refused for s in senders)} refused or unanswered meanwhile "
              f"({len(orphaned)} users on the dead master until it was back as a replica "
              f"{restarted_at - killed_at:.1f} s later)")
        assert len(written) == len(set(written))  # nothing twice
        assert acked <= set(written)  # every acknowledged message, exactly once
        # What was written and not acknowledged: appended to a master whose replica had not
        # confirmed, answered 'unavailable'; a client would resend it with the same msg_id.
        assert len(set(written) - acked) <= sum(s.refused for s in senders)
        per_user_order_kept(senders, written, mysql_db)
        assert all(web.process.alive() for web in webs)
        assert all(engine.alive() for engine in engines)
    finally:
        client.close()
        cluster.stop()
