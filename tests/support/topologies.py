"""Local Redis Cluster and Sentinel sets of private redis-server processes, for the
tests and the benchmark (each node on 127.0.0.1 and a free port)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from streambridge.embedded_redis import START_TIMEOUT_S, RedisServer, find_redis_server, free_port

SERVICE = "mymaster"


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except redis.RedisError as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} not reached in {timeout}s (last error: {last})")


def redis_cli() -> str:
    found = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    if not Path(found).exists():
        raise FileNotFoundError("redis-cli not found: run the set-up (it installs redis-tools)")
    return found


class LocalCluster:
    """``masters`` cluster-enabled redis-servers joined by ``redis-cli --cluster create``
    (no replicas: every node is a master)."""

    def __init__(
        self, directory: str | Path, masters: int = 3, password: str | None = None
    ) -> None:
        self.directory = Path(directory)
        self.password = password
        self._clients: dict[int, redis.Redis] = {}
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.nodes = [
            RedisServer(
                self.directory / f"node{i}",
                appendfsync="always",
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                    *auth,
                ],
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        subprocess.run(
            [redis_cli(), *auth, "--cluster", "create", *addresses, "--cluster-replicas", "0"],
            input="yes\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every node says the cluster is ok and sees every master."""

        def ok() -> bool:
            for node in self.nodes:
                info = self._on(node).cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) < len(
                    self.nodes
                ):
                    return False
            return True

        _wait(ok, timeout, "cluster_state:ok on every node")

    def _on(self, node: RedisServer) -> redis.Redis:
        """One plain client per node, made once."""
        if node.port not in self._clients:
            self._clients[node.port] = node.client()
        return self._clients[node.port]

    def client(self, **kwargs: Any) -> RedisCluster:
        return RedisCluster(
            host="127.0.0.1",
            port=self.nodes[0].port,
            password=self.password,
            decode_responses=True,
            **kwargs,
        )

    def node_ids(self) -> dict[int, str]:
        """port -> node id."""
        return {n.port: self._on(n).cluster("myid") for n in self.nodes}

    def port_of(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot."""
        slot = key_slot(key.encode())
        for start, end, master, *_ in self._on(self.nodes[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(slot)

    def move_empty_slot(self, key: str, to_port: int) -> None:
        """Give ``key``'s (empty) slot to another master: how an operator places a
        shard on a master of its own (``CLUSTER SETSLOT <slot> NODE``, target first)."""
        slot = key_slot(key.encode())
        target = self.node_ids()[to_port]
        ordered = sorted(self.nodes, key=lambda n: n.port != to_port)
        for node in ordered:
            self._on(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target)
        _wait(lambda: self.port_of(key) == to_port, 10, f"slot {slot} on {to_port}")

    def move_slot(self, key: str, to_port: int) -> None:
        """Reshard ``key``'s slot, keys and all, to another master, as ``redis-cli
        --cluster reshard`` does: IMPORTING / MIGRATING, MIGRATE the keys, then
        ``SETSLOT NODE`` (target first)."""
        slot = key_slot(key.encode())
        ids = self.node_ids()
        source = next(n for n in self.nodes if n.port == self.port_of(key))
        target = next(n for n in self.nodes if n.port == to_port)
        self._on(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
        self._on(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to_port])
        auth = ["AUTH", self.password] if self.password else []
        while keys := self._on(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            self._on(source).execute_command(
                "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, *auth, "KEYS", *keys
            )
        for node in sorted(self.nodes, key=lambda n: n.port != to_port):
            self._on(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to_port])
        _wait(lambda: self.port_of(key) == to_port, 10, f"slot {slot} on {to_port}")

    def flush(self) -> None:
        for node in self.nodes:
            self._on(node).flushall()

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        for node in self.nodes:
            node.stop()


class LocalSentinel:
    """One master, one replica and ``sentinels`` Sentinels watching them (quorum 2,
    a master is down after ``down_after_ms`` without answers)."""

    def __init__(
        self,
        directory: str | Path,
        sentinels: int = 3,
        down_after_ms: int = 1000,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.password = password
        self.sentinel_password = sentinel_password
        self._sentinel_clients: dict[int, redis.Redis] = {}
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        # The master starts the replica's first sync at once, not after the 5 s Redis
        # waits by default for more replicas to share a diskless sync with (there is one).
        self.master = RedisServer(
            self.directory / "master",
            port=free_port(),  # given: the replica's arguments name it before it starts
            appendfsync="always",
            extra_args=[*auth, "--repl-diskless-sync-delay", "0"],
        )
        self.replica = RedisServer(
            self.directory / "replica",
            appendfsync="always",
            extra_args=["--replicaof", "127.0.0.1", str(self.master.port), *auth],
        )
        self.down_after_ms = down_after_ms
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        auth = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/0/{SERVICE}{query}"

    def _sentinel(self, port: int) -> redis.Redis:
        """One client per Sentinel, made once."""
        if port not in self._sentinel_clients:
            self._sentinel_clients[port] = redis.Redis(
                port=port, password=self.sentinel_password, decode_responses=True, socket_timeout=1
            )
        return self._sentinel_clients[port]

    def start(self) -> LocalSentinel:
        self.master.start()
        self.replica.start()
        _wait(
            lambda: self.replica.client().info("replication")["master_link_status"] == "up",
            START_TIMEOUT_S,
            "replica in sync",
        )
        for i, port in enumerate(self.sentinel_ports):
            directory = self.directory / f"sentinel{i}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"  # Sentinel rewrites it: its own copy
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"logfile {directory / 'sentinel.log'}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
                + (f"sentinel auth-pass {SERVICE} {self.password}\n" if self.password else "")
                + (
                    f"requirepass {self.sentinel_password}\n"
                    f"sentinel sentinel-pass {self.sentinel_password}\n"
                    if self.sentinel_password
                    else ""
                )
            )
            self.sentinels.append(
                subprocess.Popen(
                    [find_redis_server(), str(config), "--sentinel"], stdin=subprocess.DEVNULL
                )
            )
        others = len(self.sentinel_ports) - 1

        def watching() -> bool:
            for port in self.sentinel_ports:
                s = self._sentinel(port)
                if (
                    len(s.sentinel_slaves(SERVICE)) < 1
                    or len(s.sentinel_sentinels(SERVICE)) < others
                ):
                    return False
            return True

        _wait(watching, 30, "every Sentinel sees the replica and the other Sentinels")
        return self

    def master_port(self) -> int:
        """Where the Sentinels say the master is now."""
        s = self._sentinel(self.sentinel_ports[0])
        return int(s.sentinel_get_master_addr_by_name(SERVICE)[1])

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> int:
        """Until every Sentinel names a new master that accepts writes; its port."""

        def moved() -> int | None:
            ports = set()
            for port in self.sentinel_ports:
                s = self._sentinel(port)
                ports.add(int(s.sentinel_get_master_addr_by_name(SERVICE)[1]))
            if len(ports) != 1 or old_port in ports:
                return None
            (new,) = ports
            master = redis.Redis(
                port=new, password=self.password, decode_responses=True, socket_timeout=1
            )
            return new if master.role()[0] == "master" else None

        return _wait(moved, timeout, "failover")

    def stop(self) -> None:
        for client in self._sentinel_clients.values():
            client.close()
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.sentinels:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.replica.stop()
        self.master.stop()
