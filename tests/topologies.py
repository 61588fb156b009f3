"""Real Redis topologies on loopback for a test run: a Cluster, a Sentinel group and one
server speaking only TLS.

Each server is a ``redis-server`` process of this machine, in a directory of its own,
keeping nothing on disk, stopped when the run ends. Timeouts are short (a node is
judged down after a second), so a failover takes seconds, not the production default
of half a minute.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

__all__ = ["Server", "Cluster", "SentinelGroup", "TlsServer", "free_ports", "wait_until"]

NODE_TIMEOUT_MS = 1000
# A self-signed certificate for 127.0.0.1 and its key, made for these tests only: the server
# presents it, clients trust it as their CA.
TLS_CERTIFICATE = Path(__file__).parent / "data" / "tls" / "server.crt"
TLS_KEY = TLS_CERTIFICATE.with_name("server.key")


def tls_client_options(tls: bool) -> dict[str, Any]:
    """What a redis-py client of a test server needs to trust its certificate (nothing without TLS)."""
    return {"ssl": True, "ssl_ca_certs": str(TLS_CERTIFICATE)} if tls else {}


def tls_store_options(tls: bool) -> dict[str, str]:
    """The ``resilience_store_options`` a user would write for it: the URL's scheme says TLS."""
    return {"ssl_ca_certs": str(TLS_CERTIFICATE)} if tls else {}


# Ports handed out by this process: two groups made before either starts (a Cluster and
# a Sentinel group) would otherwise both find the same idle port free.
_handed_out: set[int] = set()


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, nor on the port 10,000 above (a Cluster node's bus),
    none handed out before by this process, all below the ephemeral range, where a
    client's outgoing connection could take one between this check and the server's start."""
    rng = random.Random()
    found: list[int] = []
    while len(found) < count:
        port = rng.randrange(20_000, 22_700)
        if port in _handed_out or not all(_bindable(p) for p in (port, port + 10_000)):
            continue
        _handed_out.add(port)
        found.append(port)
    return found


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout:g}s")


class Server:
    """One redis-server process on 127.0.0.1."""

    def __init__(
        self,
        port: int,
        directory: Path,
        *options: str,
        sentinel: bool = False,
        tls: bool = False,
        executable: str = "redis-server",
    ) -> None:
        self.port = port
        self.executable = executable
        self.directory = directory / str(port)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.sentinel = sentinel
        self.tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.directory / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.directory}"',
            'save ""',
            "appendonly no",
            # Replicas sync at once, over the socket: nothing waits on a disk.
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            f'logfile "{self.directory / "redis.log"}"',
            *self._tls_options(),
            *self.options,
        ]
        config.write_text("\n".join(lines) + "\n")
        command = [self.executable, str(config), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answering() -> bool:
            if self.process is not None and self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on {self.port} exited: {log}")
            return bool(self.client().ping())

        wait_until(answering, 10, f"redis-server on {self.port} answering")

    def _tls_options(self) -> list[str]:
        """TLS on the server's port, and nothing else listening."""
        if not self.tls:
            return []
        return [
            "port 0",
            f"tls-port {self.port}",
            f'tls-cert-file "{TLS_CERTIFICATE}"',
            f'tls-key-file "{TLS_KEY}"',
            f'tls-ca-cert-file "{TLS_CERTIFICATE}"',
            "tls-auth-clients no",
        ]

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, socket_timeout=1, socket_connect_timeout=1, **tls_client_options(self.tls)
        )

    def followers(self, channel: str, *, sharded: bool) -> int:
        """How many connections follow ``channel`` (a sharded one, or a broadcast one) here."""
        command = "SHARDNUMSUB" if sharded else "NUMSUB"
        return int(self.client().execute_command("PUBSUB", command, channel)[1])  # type: ignore[no-untyped-call]

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """Three primaries, each with a replica; ``url`` names all six. ``tls``: every node, its
    bus and its replication speak only TLS. ``binaries``: another release's ``redis-server``
    and ``redis-cli`` than the machine's."""

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        tls: bool = False,
        binaries: tuple[str, str] = ("redis-server", "redis-cli"),
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="crtest-cluster-"))
        ports = free_ports(primaries * (1 + replicas))
        options = (
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {NODE_TIMEOUT_MS}",
            # A replica may take over however long ago it last heard its primary.
            "cluster-replica-validity-factor 0",
            *(("tls-cluster yes", "tls-replication yes") if tls else ()),
        )
        server = binaries[0]
        self.servers = [Server(port, self.directory, *options, tls=tls, executable=server) for port in ports]
        self.cli = binaries[1]
        self.replicas = replicas
        self.tls = tls

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    @property
    def options(self) -> dict[str, str]:
        return tls_store_options(self.tls)

    def start(self) -> None:
        for server in self.servers:
            server.start()
        tls = ["--tls", "--cacert", str(TLS_CERTIFICATE)] if self.tls else []
        subprocess.run(
            [self.cli, *tls, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in self.servers),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        self.wait_settled()

    def wait_settled(self, timeout: float = 30) -> None:
        """Every live node sees the cluster ok, and every slot has a live primary."""

        def settled() -> bool:
            live = [s for s in self.servers if s.running]
            if not all(s.client().cluster("info").get("cluster_state") == "ok" for s in live):
                return False
            if len(self._primaries()) != len(self.servers) // (1 + self.replicas):
                return False
            replicas = [s.client().info("replication") for s in live if s not in self._primaries().values()]
            return all(info.get("master_link_status") == "up" for info in replicas)

        wait_until(settled, timeout, "the cluster settled")

    def _primaries(self) -> dict[int, Server]:
        """Live primaries holding slots, by port."""
        found = {}
        for server in self.servers:
            if not server.running:
                continue
            role = server.client().execute_command("ROLE")[0]  # type: ignore[no-untyped-call]
            if role in (b"master", "master"):
                found[server.port] = server
        return found

    def node_for(self, key: str) -> Server:
        """The live primary holding ``key``'s slot."""
        port = next(s.port for s in self.servers if s.running)
        client = RedisCluster(host="127.0.0.1", port=port, **tls_client_options(self.tls))
        try:
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            return next(s for s in self.servers if s.port == int(node.port))
        finally:
            client.close()

    def move_slot(self, key: str, to: Server) -> None:
        """Move ``key``'s slot, keys and all, to the primary ``to``, the way a resharding
        does: importing and migrating marks, the keys moved in batches, the new owner
        announced to every primary."""
        source = self.node_for(key)
        slot = int(source.client().cluster("keyslot", key))
        source_id, target_id = (s.client().cluster("myid") for s in (source, to))
        source_id, target_id = (i.decode() if isinstance(i, bytes) else i for i in (source_id, target_id))
        to.client().cluster("setslot", slot, "importing", source_id)
        source.client().cluster("setslot", slot, "migrating", target_id)
        client = source.client()
        while keys := client.cluster("getkeysinslot", slot, 100):
            client.migrate("127.0.0.1", to.port, keys, 0, 5000)
        for server in self._primaries().values():
            server.client().cluster("setslot", slot, "node", target_id)
        wait_until(lambda: self.node_for(key).port == to.port, 10, f"slot {slot} on {to.port}")

    def primaries(self) -> list[Server]:
        """The live primaries holding slots."""
        return list(self._primaries().values())

    def stop(self) -> None:
        for server in self.servers:
            server.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class TlsServer:
    """One server that speaks only TLS, as managed Redis offerings do (``rediss://``)."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="crtest-tls-"))
        self.server = Server(free_ports(1)[0], self.directory, tls=True)

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.server.port}/0"

    @property
    def options(self) -> dict[str, str]:
        return tls_store_options(True)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class SentinelGroup:
    """A primary, a replica and three sentinels watching them as ``service``. ``tls``: the
    servers, their replication and the sentinels speak only TLS."""

    def __init__(self, service: str = "crtest", *, tls: bool = False) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="crtest-sentinel-"))
        self.service = service
        self.tls = tls
        primary, replica, *sentinels = free_ports(5)
        replication = ("tls-replication yes",) if tls else ()
        self.primary = Server(primary, self.directory, *replication, tls=tls)
        self.replica = Server(
            replica, self.directory, f"replicaof 127.0.0.1 {primary}", *replication, tls=tls
        )
        watch = (
            f"sentinel monitor {service} 127.0.0.1 {primary} 2",
            f"sentinel down-after-milliseconds {service} {NODE_TIMEOUT_MS}",
            f"sentinel failover-timeout {service} 5000",
            f"sentinel parallel-syncs {service} 1",
            *replication,
        )
        self.sentinels = [Server(port, self.directory, *watch, sentinel=True, tls=tls) for port in sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{hosts}/{self.service}"

    @property
    def options(self) -> dict[str, str]:
        return tls_store_options(self.tls)

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        wait_until(
            lambda: self.replica.client().info("replication").get("master_link_status") == "up",
            20,
            "the replica in sync",
        )
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(lambda: self._known_replicas() >= 1, 20, "the sentinels seeing the replica")

    def _known_replicas(self) -> int:
        client = self.sentinels[0].client()
        replicas = client.execute_command("SENTINEL", "REPLICAS", self.service)  # type: ignore[no-untyped-call]
        return len(replicas)

    def master_port(self) -> int:
        client = self.sentinels[0].client()
        address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)  # type: ignore[no-untyped-call]
        return int(address[1])

    def master(self) -> Server:
        """The server Sentinel names master now."""
        port = self.master_port()
        return self.primary if self.primary.port == port else self.replica

    def replicas_in_sync(self) -> int:
        """Replicas the master streams to now."""
        info = self.master().client().info("replication")
        return sum(
            1
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )

    def stop(self) -> None:
        for server in (*self.sentinels, self.primary, self.replica):
            server.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
