"""A Redis Cluster of the tests' own: three masters and three replicas made from the system
redis-server on spare loopback ports, in a temporary directory, stopped by pid.

`make test` runs two pytest workers; each makes its own cluster once per session (about two
seconds), so that no test sees another worker's keys and flushing its masters between tests is
safe. A test that kills a node makes a cluster of its own.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

#: Ports Tributary's other services use on this machine; never taken for a cluster node.
_RESERVED = {6379, 3306, 5432, 5672, 1883, 4222}


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cluster_ports(count: int) -> list[int]:
    """`count` free loopback ports whose cluster bus ports (port + 10000) are free too.

    A cluster node cannot listen on port 0 (the bus port is derived from the client port), so
    ports are picked at random and probed by binding them. Both ports lie below the kernel's
    ephemeral range, so that no outgoing connection of the suite can take one between the probe
    and the node's own bind."""
    high = max(10001, _ephemeral_low() - 10000)
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randrange(10000, high)
        if (port in chosen or port in _RESERVED or port + 10000 in _RESERVED
                or not _port_free(port) or not _port_free(port + 10000)):
            continue
        chosen.append(port)
    return chosen


class TestCluster:
    """Six redis-server processes forming one cluster (`cluster-replicas 1`)."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, directory: Path, masters: int = 3, node_timeout_ms: int = 1000) -> None:
        self.directory = directory
        self.binary = shutil.which("redis-server") or "redis-server"
        self.cli = shutil.which("redis-cli") or "redis-cli"
        self.ports = cluster_ports(masters * 2)
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """A REDIS_URL naming the cluster by two of its nodes."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2]) + "/"

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._start_node(port)
        for index in range(len(self.ports)):
            self._wait_for_node(index, deadline, attempts)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        created = subprocess.run(
            [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "1",
             "--cluster-yes"], capture_output=True, timeout=max(1.0, deadline - time.monotonic()))
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: "
                               f"{created.stdout.decode()[-2000:]}{created.stderr.decode()}")
        self._wait(self.healthy, deadline, "cluster_state:ok on every node")

    def _wait_for_node(self, index: int, deadline: float, attempts: int) -> None:
        """Wait until the node at `self.ports[index]` answers. One that exits first (its port
        taken by someone else since it was probed) is started again on other ports."""
        for attempt in range(attempts):
            port = self.ports[index]
            process = self.processes[port]
            while not self._ping(port):
                if process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"timed out waiting for node {port} to answer:\n"
                                       f"{self._log_tail(port)}")
                time.sleep(0.05)
            else:
                return
            if attempt == attempts - 1:
                raise RuntimeError(f"node {port} exited with {process.returncode}:\n"
                                   f"{self._log_tail(port)}")
            del self.processes[port]
            replacement = cluster_ports(1)[0]
            while replacement in self.ports:
                replacement = cluster_ports(1)[0]
            self.ports[index] = replacement
            self._start_node(replacement)

    def _log_tail(self, port: int) -> str:
        try:
            return (self.directory / str(port) / "redis.log").read_text()[-2000:]
        except OSError as error:
            return f"(no log: {error})"

    def _start_node(self, port: int) -> None:
        directory = self.directory / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        log = (directory / "redis.log").open("wb")
        self.processes[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout_ms), "--save", "",
             "--appendonly", "no", "--maxmemory-policy", "noeviction",
             "--cluster-replica-validity-factor", "0", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    @staticmethod
    def _wait(predicate: object, deadline: float, what: str) -> None:
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, protocol=2,
                           socket_connect_timeout=0.5, socket_timeout=2)

    def _ping(self, port: int) -> bool:
        with contextlib.closing(self.node(port)) as client:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok and sees `masters` masters with all slots."""
        for port in self.live_ports():
            with contextlib.closing(self.node(port)) as client:
                try:
                    info = client.execute_command("CLUSTER", "INFO")
                except redis.RedisError:
                    return False
            if isinstance(info, str):
                info = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
        return True

    def master_ports(self) -> list[int]:
        """Ports of the live masters, as the cluster sees them now."""
        found = []
        for port in self.live_ports():
            with contextlib.closing(self.node(port)) as client, \
                    contextlib.suppress(redis.RedisError):
                if client.info("replication").get("role") == "master":
                    found.append(port)
        return found

    def client(self) -> RedisCluster:
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports[:2]],
                            decode_responses=True, protocol=2)

    def flush(self) -> None:
        """Empty every master (the replicas follow)."""
        for port in self.master_ports():
            with contextlib.closing(self.node(port)) as client:
                client.flushall()

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would."""
        process = self.processes[port]
        process.kill()
        process.wait()

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again on its port and directory: it rejoins the cluster (as a
        replica, when a replica was promoted in its place meanwhile)."""
        assert self.processes[port].poll() is not None, f"node {port} is still running"
        self._start_node(port)
        self._wait(lambda: self._ping(port), time.monotonic() + timeout, f"node {port} to answer")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
