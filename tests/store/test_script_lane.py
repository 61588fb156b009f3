"""The script lane on a real Cluster: one round trip's calls spread over several nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis.cluster import RedisCluster

from celery_resilience.store.script_lane import ClusterLane, ScriptLane, Written
from tests.topologies import Cluster

# Answers with its own key and argument: a reply read by the wrong caller shows.
ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
def client(redis_cluster: Cluster) -> Iterator[RedisCluster]:
    port = redis_cluster.primaries()[0].port
    cluster = RedisCluster(host="127.0.0.1", port=port)
    try:
        yield cluster
    finally:
        cluster.close()


def calls_on_every_node(redis_cluster: Cluster) -> list[tuple[list[str], list[str]]]:
    """One call per primary, each with a key of that primary's slots."""
    by_port: dict[int, tuple[list[str], list[str]]] = {}
    while len(by_port) < len(redis_cluster.primaries()):
        key = f"lane:{uuid.uuid4().hex[:8]}"
        by_port.setdefault(redis_cluster.node_for(key).port, ([key], [key.upper()]))
    return list(by_port.values())


def echoed(calls: list[tuple[list[str], list[str]]]) -> list[list[bytes]]:
    return [[keys[0].encode(), args[0].encode()] for keys, args in calls]


def pools(client: RedisCluster) -> list[Any]:
    return [node.redis_connection.connection_pool for node in client.get_nodes()]  # type: ignore[no-untyped-call]


def in_use(client: RedisCluster) -> int:
    """Connections taken from the nodes' pools and not given back."""
    return sum(len(pool._in_use_connections) for pool in pools(client))


def test_each_node_gets_its_calls_before_any_reply_is_read(
    redis_cluster: Cluster, client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round trip over three nodes waits for the slowest node, not for each in turn."""
    lane = ClusterLane(client, ECHO)
    calls = calls_on_every_node(redis_cluster)
    lane.many(calls)  # the lanes and their connections exist
    events: list[str] = []
    for pool in pools(client):
        for connection in pool._available_connections:
            send, read = connection.send_packed_command, connection.read_response

            def sending(*args: Any, _send: Any = send, _port: int = connection.port, **kw: Any) -> Any:
                events.append(f"write {_port}")
                return _send(*args, **kw)

            def reading(*args: Any, _read: Any = read, _port: int = connection.port, **kw: Any) -> Any:
                events.append(f"read {_port}")
                return _read(*args, **kw)

            monkeypatch.setattr(connection, "send_packed_command", sending)
            monkeypatch.setattr(connection, "read_response", reading)
    replies = lane.many(calls)
    assert replies == echoed(calls)
    assert [event.split()[0] for event in events] == ["write"] * 3 + ["read"] * 3
    assert len({event.split()[1] for event in events}) == 3


def test_a_round_trip_cut_off_midway_leaves_no_reply_for_the_next_caller(
    redis_cluster: Cluster, client: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes whose replies were never read close their connections: none is handed on or kept."""
    lane = ClusterLane(client, ECHO)
    calls = calls_on_every_node(redis_cluster)
    lane.many(calls)

    def interrupted(self: ScriptLane, written: Written) -> list[Any]:
        self.abandon(written)
        raise KeyboardInterrupt

    monkeypatch.setattr(ScriptLane, "read", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lane.many(calls)
    monkeypatch.undo()
    assert in_use(client) == 0
    again = list(reversed(calls))
    assert lane.many(again) == echoed(again)
