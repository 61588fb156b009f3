"""One Lua script run by EVALSHA on a connection of the client's own pool, its command
encoded here.

Why: admission is one EVALSHA per publish, and on small machines redis-py's generic
command path (argument encoding, retry wrapper, event dispatch, observability hooks)
costs about as much as the round trip itself: 45-60 µs a call against about 90 µs on
loopback with redis-py 8 (benchmarks/admission.py measures both). The lane keeps what
matters from redis-py (the pool, its fork check, connections with their health checks,
timeouts and reply parser) and skips the rest.

What it keeps of redis-py's own path:
- a reply is never read by the wrong caller: redis-py's connection disconnects itself
  when a command is cut off (a timeout, an interrupt), and the pool checks a connection
  before handing it out, replacing one the server closed while it sat idle;
- a connection dropped between that check and the command is retried once,
  reconnected; a timeout is not, so a hung store costs one socket timeout;
- a flushed script cache (``SCRIPT FLUSH``, a restart, a fail-over) reloads the script
  and runs the call again.

Several calls (an admission and the lease renewals riding on it) are written at once
and their replies read in order (``many``): one round trip for all of them.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import redis
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)

__all__ = ["ScriptLane", "ClusterLane", "ScriptCall", "Written", "script_lane", "encode_part"]

# One script call: its keys and its arguments.
ScriptCall = tuple[Sequence[str | bytes], Sequence[str | bytes]]


class Written(NamedTuple):
    """Calls written and not yet read: the connection they wait on, and the commands."""

    connection: Any
    commands: list[bytes]


def encode_part(value: str | bytes) -> bytes:
    """A RESP bulk string: ``$<length>\\r\\n<bytes>\\r\\n``."""
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


class ScriptLane:
    """Runs ``source`` with ``keys`` and ``args`` (already bytes or str) in one round trip."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self._pool = client.connection_pool
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._sha_part = encode_part(self.sha)
        # redis-py before 5.3 requires a command name; later versions deprecate passing one.
        parameters = inspect.signature(self._pool.get_connection).parameters
        name = parameters.get("command_name")
        self._needs_name = name is not None and name.default is inspect.Parameter.empty

    def __call__(self, keys: Sequence[str | bytes], args: Sequence[str | bytes]) -> Any:
        command = self._command(keys, args)
        try:
            return self._run(command)
        except NoScriptError:
            self.client.script_load(self._source)
            return self._run(command)

    def many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, or the error the server answered it with, in one round trip:
        every command written at once, every reply read in order."""
        return self.read(self.write(calls))

    def write(self, calls: Sequence[ScriptCall]) -> Written:
        """Write every call at once, on a connection held until ``read``: a Cluster writes
        to each node holding the calls before reading any, so that they run at once."""
        commands = [self._command(keys, args) for keys, args in calls]
        connection = self._connection()
        try:
            try:
                connection.send_packed_command([b"".join(commands)])
            except redis.ConnectionError:
                # Dropped after the pool's check: once more, on the connection reconnected.
                connection.send_packed_command([b"".join(commands)])
        except BaseException:
            self._release(connection)
            raise
        return Written(connection, commands)

    def read(self, written: Written) -> list[Any]:
        """The replies to what ``write`` wrote, in order; the connection goes back to its pool."""
        connection, commands = written
        try:
            try:
                replies = self._replies(connection, len(commands))
            except redis.ConnectionError:
                replies = self._exchange_many(connection, commands)
        finally:
            self._release(connection)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            self.client.script_load(self._source)
            replies = self._run_many(commands)
        return replies

    def abandon(self, written: Written) -> None:
        """Give up what ``write`` wrote unread: the connection is closed, so that no later
        caller reads these replies."""
        written.connection.disconnect()
        self._release(written.connection)

    def _command(self, keys: Sequence[str | bytes], args: Sequence[str | bytes]) -> bytes:
        parts = [
            b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + len(keys) + len(args)),
            self._sha_part,
            encode_part(str(len(keys))),
        ]
        parts.extend(encode_part(key) for key in keys)
        parts.extend(encode_part(arg) for arg in args)
        return b"".join(parts)

    def _run(self, command: bytes) -> Any:
        return self._on_connection(self._exchange, command)

    def _run_many(self, commands: list[bytes]) -> list[Any]:
        result: list[Any] = self._on_connection(self._exchange_many, commands)
        return result

    def _on_connection(self, exchange: Callable[[Any, Any], Any], payload: Any) -> Any:
        connection = self._connection()
        try:
            return exchange(connection, payload)
        except redis.ConnectionError:
            # Dropped after the pool's check: once more, on the connection reconnected.
            return exchange(connection, payload)
        finally:
            self._release(connection)

    def _release(self, connection: Any) -> None:
        should_reconnect = getattr(connection, "should_reconnect", None)
        if should_reconnect is not None and should_reconnect():
            connection.disconnect()
        self._pool.release(connection)

    @staticmethod
    def _exchange(connection: Any, command: bytes) -> Any:
        connection.send_packed_command([command])
        return connection.read_response()

    @classmethod
    def _exchange_many(cls, connection: Any, commands: list[bytes]) -> list[Any]:
        connection.send_packed_command([b"".join(commands)])
        return cls._replies(connection, len(commands))

    @staticmethod
    def _replies(connection: Any, count: int) -> list[Any]:
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as error:  # read whole: the next reply follows
                replies.append(error)
        return replies

    def _connection(self) -> Any:
        if self._needs_name:
            return self._pool.get_connection("EVALSHA")
        return self._pool.get_connection()


class ClusterLane:
    """On a Cluster: our lane on the pool of the node whose slot holds the keys (redis-py's
    slot map says which), redis-py's routed path when that node cannot serve it.

    Why both: redis-py's cluster path costs several times our lane's on every call, and
    admission makes one call per publish. What the routed path adds is only needed when
    the map is wrong or a node is gone: a MOVED or ASK (a slot moved), TRYAGAIN or
    CLUSTERDOWN (a failover under way), a connection refused or reset. The call then goes
    through redis-py, which follows the move and refreshes its map, so the next call
    finds the new node. A timeout is not retried (the script may have run), as on one
    server.
    """

    _REROUTED = (
        MovedError,
        AskError,
        TryAgainError,
        ClusterDownError,
        SlotNotCoveredError,
        redis.ConnectionError,
    )

    def __init__(self, client: Any, source: str) -> None:
        self._client = client  # RedisCluster, or the LazyCluster making it at first use
        self._source = source
        self._routed = client.register_script(source)
        self.sha: str = self._routed.sha
        self._lanes: dict[str, ScriptLane] = {}

    def __call__(self, keys: Sequence[str | bytes], args: Sequence[str | bytes]) -> Any:
        try:
            lane = self._lane(keys[0])
            return lane(keys, args)
        except self._REROUTED:
            return self._routed(keys=list(keys), args=list(args))

    def many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, or the error it met: one round trip per node holding any of
        their slots; a call the node could not serve goes the routed way on its own."""
        replies: list[Any] = [None] * len(calls)
        by_node: dict[int, tuple[ScriptLane, list[int]]] = {}
        for index, (keys, _) in enumerate(calls):
            try:
                lane = self._lane(keys[0])
            except self._REROUTED as error:
                replies[index] = error
                continue
            by_node.setdefault(id(lane), (lane, []))[1].append(index)
        self._on_nodes(calls, list(by_node.values()), replies)
        for index, reply in enumerate(replies):
            if isinstance(reply, self._REROUTED):
                keys, args = calls[index]
                try:
                    replies[index] = self._routed(keys=list(keys), args=list(args))
                except (redis.RedisError, RedisClusterException) as error:
                    replies[index] = error
        return replies

    @staticmethod
    def _on_nodes(
        calls: Sequence[ScriptCall], nodes: list[tuple[ScriptLane, list[int]]], replies: list[Any]
    ) -> None:
        """Every node's calls written before any reply is read: the nodes run them at once,
        and the caller waits for the slowest node, not for each in turn."""
        written: list[tuple[ScriptLane, list[int], Written]] = []
        try:
            for lane, indexes in nodes:
                try:
                    written.append((lane, indexes, lane.write([calls[index] for index in indexes])))
                except redis.RedisError as error:
                    for index in indexes:
                        replies[index] = error
            while written:
                lane, indexes, pending = written.pop(0)
                try:
                    answered = lane.read(pending)
                except redis.RedisError as error:
                    answered = [error] * len(indexes)
                for index, reply in zip(indexes, answered, strict=True):
                    replies[index] = reply
        finally:
            for lane, _, pending in written:  # interrupted: nobody reads these replies
                lane.abandon(pending)

    def _lane(self, key: str | bytes) -> ScriptLane:
        client = self._client
        cluster = client.real() if hasattr(client, "real") else client
        node = cluster.nodes_manager.get_node_from_slot(
            key_slot(key.encode() if isinstance(key, str) else key)
        )
        connection = node.redis_connection or cluster.get_redis_connection(node)
        lane = self._lanes.get(node.name)
        if lane is None or lane.client is not connection:
            lane = self._lanes[node.name] = ScriptLane(connection, self._source)
        return lane


def script_lane(client: Any, source: str, clustered: bool) -> ScriptLane | ClusterLane:
    """The lane for the client: on one server (or Sentinel's master) its own pool, on a
    Cluster the pool of the node holding the call's slot."""
    return ClusterLane(client, source) if clustered else ScriptLane(client, source)
