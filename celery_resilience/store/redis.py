"""``RedisStore``: shared state for every worker on every host, on Redis.

Each atomic operation is one Lua script from ``store/lua/``, registered once and run
by EVALSHA (redis-py's ``Script`` reloads it after a ``NOSCRIPT``). Connections use
short timeouts: a store that does not answer must cost a caller a fraction of a
second, never a hung publish. Every redis error surfaces as ``StoreUnavailable``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException

from ..admission.bucket import BucketSpec, Outcome
from ..admission.port import AdmitRequest
from ..breakers.machine import BreakerPolicy, BreakerState, BreakerView, Denied, Permit, Recorded
from ..breakers.port import BreakerOutcome, TransitionListener
from ..clock import Clock
from ..errors import StoreUnavailable
from ..fallbacks.evidence import Judgement
from ..fallbacks.port import CacheEntry
from ..load.fairness import FairTag
from ..load.port import DEMAND_HISTORY_HOURS, LOAD_HISTORY_MINUTES
from ..load.signals import HealthSnapshot
from ..monitoring.counters import REQUESTS, derive
from .base import MinuteClock
from .keys import KeySpace
from .redis_admission import RedisAdmission
from .redis_budget import RedisBudgets
from .redis_cache import RedisCache
from .redis_fairness import RedisFairness
from .topology import CLUSTER, LazyCluster, connect, parse_store_url
from .transition_feed import Sharding, TransitionFeed

__all__ = ["RedisStore", "load_script"]

logger = logging.getLogger("celery_resilience.store")

_STATES = {s.value: s for s in BreakerState}
_CLOCK_FRESH_SECONDS = 5.0


def load_script(name: str) -> str:
    """The script, after prelude.lua (the clock every script reads)."""
    lua = resources.files("celery_resilience.store") / "lua"
    return (lua / "prelude.lua").read_text() + (lua / f"{name}.lua").read_text()


class RedisStore(RedisBudgets):
    def __init__(
        self,
        url: str,
        keys: KeySpace,
        *,
        timeout: float = 0.25,
        clock: Clock | None = None,
        metrics_ttl: int = 7200,
        client: redis.Redis | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.keys = keys
        self.topology = parse_store_url(url)
        self._timeout = timeout
        # An injected clock (tests) replaces the server's TIME in every script.
        self._clock = clock.now if clock is not None else None
        self._metrics_ttl = metrics_ttl
        self._closed = False
        self._redis: Any = client or connect(self.topology, timeout, options)
        self._minutes = MinuteClock(clock) if clock is not None else MinuteClock()
        self._admission = RedisAdmission(
            self._redis,
            keys,
            self._call,
            clock=self._clock,
            minutes=self._minutes,
            metrics_ttl=metrics_ttl,
            load=load_script,
            clustered=self.topology.kind == CLUSTER,
        )
        self._breaker: Script = self._redis.register_script(load_script("breaker"))
        self._budget: Script = self._redis.register_script(load_script("budget"))
        self._retry_budget: Script = self._redis.register_script(load_script("retry_budget"))
        self._schedule: Script = self._redis.register_script(load_script("schedule"))
        self._learn: Script = self._redis.register_script(load_script("learn"))
        self._lease: Script = self._redis.register_script(load_script("lease"))
        self._cache = RedisCache(self._redis, keys, self._call, self.now, load_script)
        self._fairness = RedisFairness(
            self._redis, keys, self._call, clock=self._clock, now=self.now, load=load_script
        )
        self._breaker_wire: dict[BreakerPolicy, bytes] = {}
        # Whether breaker transitions go out on sharded pub/sub: asked of a Cluster once.
        self._sharded_events: bool | None = None if self.topology.kind == CLUSTER else False
        self._feed = TransitionFeed(
            self._feed_client(options),
            keys.breaker_channel(),
            Sharding(self._announces_per_shard, keys.breaker_shard_channel, self._refresh_slots)
            if self.topology.kind == CLUSTER
            else None,
        )

    def user_bucket(self, user_id: str | None, tier: str, request_type: str | None) -> tuple[str, int]:
        return self.keys.user_bucket(user_id, tier, request_type)

    @property
    def client(self) -> Any:
        """The redis-py client: ``redis.Redis``, or ``RedisCluster`` on a Cluster."""
        return self._redis

    def _feed_client(self, options: Mapping[str, Any] | None) -> Any:
        """A client of the feed's own (its subscription blocks a connection for the life of
        the process); on a Cluster, the store's, whose slot map follows failovers."""
        if self.topology.kind == CLUSTER:
            return self._redis
        return connect(self.topology, self._timeout, {"socket_timeout": None, **(options or {})})

    def _announces_per_shard(self) -> bool:
        """On a Cluster whose servers have sharded pub/sub (Redis 7), a breaker announces its
        transitions on a channel in its own slot; elsewhere on the key space's channel."""
        if self._sharded_events is None:
            info = self._call(self._redis.info, "server", target_nodes=RedisCluster.RANDOM)
            major = str(info.get("redis_version", "0")).split(".", 1)[0]
            self._sharded_events = major.isdigit() and int(major) >= 7
        return self._sharded_events

    def _refresh_slots(self) -> None:
        client = self._redis.real() if isinstance(self._redis, LazyCluster) else self._redis
        client.nodes_manager.initialize()

    def now(self) -> float:
        """The server's clock: from the offset the last answers carried when they are recent
        (every script returns the server's time), else one ``TIME`` round trip."""
        if self._clock is not None:
            return self._clock()
        if self._minutes.fresh(_CLOCK_FRESH_SECONDS):
            return self._minutes.now()
        seconds, micros = self._call(self._redis.time)
        now = float(seconds) + float(micros) / 1_000_000
        self._minutes.observe(now)
        return now

    def admit(self, request: AdmitRequest) -> Outcome:
        return self._admission.admit(request)

    def admit_many(self, requests: Sequence[AdmitRequest]) -> list[Outcome | None]:
        return self._admission.admit_many(requests)

    def drain(self, bucket_key: str, spec: BucketSpec, seconds: float) -> None:
        self._admission.drain(bucket_key, spec, seconds)

    def refund(self, bucket_key: str, spec: BucketSpec, grace: bool) -> None:
        self._admission.refund(bucket_key, spec, grace)

    def fair_tag(
        self,
        queue: str,
        tenant: str | None,
        weight: float,
        cost: float,
        max_delay: float,
        capacity: float | None,
        *,
        within: float | None = None,
        kind: str = "queue",
        lead: float = 0.0,
        lead_for: float = 0.0,
    ) -> FairTag:
        return self._fairness.fair_tag(
            queue,
            tenant,
            weight,
            cost,
            max_delay,
            capacity,
            within=within,
            kind=kind,
            lead=lead,
            lead_for=lead_for,
        )

    def fair_capacity(self, queue: str, reporter: str, served: float) -> None:
        self._fairness.fair_capacity(queue, reporter, served)

    def fair_status(self, queue: str, kind: str = "queue") -> dict[str, float]:
        return self._fairness.fair_status(queue, kind)

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        key = self.keys.metrics(shard, self._minutes.minute())
        pipe = self._call(self._redis.pipeline, transaction=False)
        for name, amount in fields.items():
            if float(amount).is_integer():
                pipe.hincrby(key, name, int(amount))
            else:
                pipe.hincrbyfloat(key, name, amount)
        pipe.expire(key, self._metrics_ttl)
        self._call(pipe.execute)

    def metrics(self, minute: int | None = None, scope: str = "") -> dict[str, float]:
        if minute is None:
            minute = self._minutes.minute()
        pipe = self._call(self._redis.pipeline, transaction=False)
        for key in self.keys.all_metrics(minute, scope):
            pipe.hgetall(key)
        totals: dict[str, float] = {}
        for shard_fields in self._call(pipe.execute):
            for name, value in shard_fields.items():
                field = name.decode()
                totals[field] = totals.get(field, 0.0) + float(value)
        return derive(totals)

    def breaker_acquire(
        self, name: str, policy: BreakerPolicy, lease: str
    ) -> tuple[Permit | Denied, BreakerView]:
        parts = self._run_breaker("acquire", name, policy, lease)
        if parts[0] == "permit":
            generation, state = int(parts[1]), _STATES[parts[4]]
            probe = parts[2] == "1"
            permit = Permit(generation, probe=probe, lease=lease if probe else "", recording=parts[3] == "1")
            return permit, BreakerView(state, generation, float(parts[5]))
        state, retry_after = _STATES[parts[1]], float(parts[2])
        denied = Denied(state, None if retry_after < 0 else retry_after)
        return denied, BreakerView(state, int(parts[3]), float(parts[4]))

    def breaker_record(self, name: str, policy: BreakerPolicy, outcome: BreakerOutcome) -> Recorded:
        parts = self._run_breaker(
            "record",
            name,
            policy,
            outcome.generation,
            outcome.lease,
            repr(outcome.weight),
            -1 if outcome.retry_after is None else repr(outcome.retry_after),
            1 if outcome.trip_now else 0,
            repr(outcome.jitter_draw),
            outcome.calls,
        )
        return Recorded(_STATES[parts[0]], int(parts[1]), float(parts[2]), parts[3] == "1", parts[4] == "1")

    def breaker_release(self, name: str, policy: BreakerPolicy, generation: int, lease: str) -> None:
        self._run_breaker("release", name, policy, generation, lease)

    def breaker_force(self, name: str, policy: BreakerPolicy, state: BreakerState) -> BreakerView:
        if state not in (BreakerState.CLOSED, BreakerState.FORCED_OPEN, BreakerState.DISABLED):
            raise ValueError(f"an operator can set closed, forced_open or disabled, not {state.value}")
        parts = self._run_breaker("force", name, policy, state.value)
        return BreakerView(_STATES[parts[0]], int(parts[1]), float(parts[2]))

    def breaker_read(self, name: str, policy: BreakerPolicy) -> BreakerView:
        p = self._run_breaker("read", name, policy)
        return BreakerView(
            _STATES[p[0]], int(p[1]), float(p[2]), int(p[3]), int(p[4]), float(p[5]), int(p[6])
        )

    def _run_breaker(self, op: str, name: str, policy: BreakerPolicy, *args: Any) -> list[str]:
        wire = self._breaker_wire.get(policy)
        if wire is None:
            wire = self._breaker_wire[policy] = " ".join(
                repr(float(v))
                for v in (
                    policy.failure_threshold,
                    policy.window,
                    policy.minimum_calls,
                    policy.recovery_timeout,
                    policy.max_recovery_timeout,
                    policy.backoff,
                    policy.jitter,
                    policy.half_open_probes,
                    policy.success_threshold,
                    policy.probe_lease,
                    policy.quota_open_seconds,
                    policy.buckets,
                )
            ).encode()
        now_arg = "" if self._clock is None else repr(self._clock())
        reply = self._call(
            self._breaker,
            keys=self.keys.breaker(name),
            args=[op, now_arg, wire, name, *self._announcement(name), *args],
        )
        return reply.decode().split()  # type: ignore[no-any-return]

    def _announcement(self, name: str) -> tuple[str, str]:
        """The command and channel a breaker's transitions are announced with."""
        if self._announces_per_shard():
            return "SPUBLISH", self.keys.breaker_shard_channel(name)
        return "PUBLISH", self.keys.breaker_channel()

    def cache_put(self, namespace: str, entry: CacheEntry, max_entries: int, ttl: float) -> int:
        return self._cache.cache_put(namespace, entry, max_entries, ttl)

    def cache_candidates(self, namespace: str, terms: list[str], limit: int, ttl: float) -> list[CacheEntry]:
        return self._cache.cache_candidates(namespace, terms, limit, ttl)

    def cache_touch(self, namespace: str, entry_id: str) -> None:
        self._cache.cache_touch(namespace, entry_id)

    def cache_judge(self, namespace: str, judged: Sequence[tuple[str, Judgement]], keep: int) -> None:
        self._cache.cache_judge(namespace, judged, keep)

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        value = json.dumps(
            {
                "at": snapshot.at,
                "cpu": snapshot.cpu,
                "memory": snapshot.memory,
                "load": snapshot.load,
                "active": snapshot.active,
                "probes": dict(snapshot.probes),
            }
        )
        self._call(self._redis.hset, self.keys.health(), snapshot.worker, value)

    def read_health(self) -> list[HealthSnapshot]:
        snapshots = []
        for worker, raw in self._call(self._redis.hgetall, self.keys.health()).items():
            try:
                data = json.loads(raw)
                snapshots.append(
                    HealthSnapshot(
                        worker.decode(),
                        float(data["at"]),
                        float(data["cpu"]),
                        float(data["memory"]),
                        float(data["load"]),
                        int(data["active"]),
                        dict(data.get("probes", {})),
                    )
                )
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed heartbeat from %r", worker)
        return snapshots

    def hold_lease(self, name: str, owner: str, seconds: float) -> bool:
        return self._run_lease(self.keys.lease(name), owner, seconds)

    def lease_holder(self, name: str) -> str | None:
        raw = self._call(self._redis.get, self.keys.lease(name))
        if raw is None:
            return None
        owner, expires = raw.decode().rsplit(" ", 1)
        return owner if float(expires) > self.now() else None

    def claim(self, name: str, seconds: float) -> bool:
        return self._run_lease(self.keys.cooldown(name), "", seconds)

    def _run_lease(self, key: str, owner: str, seconds: float) -> bool:
        now_arg = "" if self._clock is None else repr(self._clock())
        return bool(int(self._call(self._lease, keys=[key], args=[owner, repr(seconds), now_arg])))

    def push_alert(self, record: str, keep: int = 50) -> None:
        pipe = self._call(self._redis.pipeline, transaction=False)
        pipe.lpush(self.keys.alerts(), record)
        pipe.ltrim(self.keys.alerts(), 0, keep - 1)
        self._call(pipe.execute)

    def recent_alerts(self, count: int = 20) -> list[str]:
        return [raw.decode() for raw in self._call(self._redis.lrange, self.keys.alerts(), 0, count - 1)]

    def record_load(self, minute: int, usage: float) -> None:
        key = self.keys.load()
        pipe = self._call(self._redis.pipeline, transaction=False)
        pipe.hset(key, str(minute), repr(usage))
        pipe.hdel(key, str(minute - LOAD_HISTORY_MINUTES))
        self._call(pipe.execute)

    def load_series(self, minutes: list[int]) -> dict[int, float]:
        if not minutes:
            return {}
        values = self._call(self._redis.hmget, self.keys.load(), [str(m) for m in minutes])
        return {m: float(v) for m, v in zip(minutes, values, strict=True) if v is not None}

    def requests_in_hour(self, hour: int) -> float:
        pipe = self._call(self._redis.pipeline, transaction=False)
        for minute in range(hour * 60, hour * 60 + 60):
            for key in self.keys.all_metrics(minute):
                pipe.hgetall(key)
        total = 0.0
        for fields in self._call(pipe.execute):
            total += derive({name.decode(): float(value) for name, value in fields.items()}).get(
                REQUESTS, 0.0
            )
        return total

    def record_demand(self, hour: int, requests: float) -> None:
        key = self.keys.demand()
        pipe = self._call(self._redis.pipeline, transaction=False)
        pipe.hsetnx(key, str(hour), repr(requests))
        pipe.hkeys(key)
        _, hours = self._call(pipe.execute)
        old = [h for h in hours if int(h) < hour - DEMAND_HISTORY_HOURS]
        if old:
            self._call(self._redis.hdel, key, *old)

    def demand_history(self) -> dict[int, float]:
        raw = self._call(self._redis.hgetall, self.keys.demand())
        return {int(hour): float(value) for hour, value in raw.items()}

    def subscribe(self, listener: TransitionListener, breakers: Iterable[str]) -> None:
        self._feed.subscribe(listener, breakers)

    def purge(self) -> int:
        deleted = 0
        for batch in _batched(self._redis.scan_iter(match=self.keys.pattern(), count=500), 500):
            deleted += int(self._call(self._redis.unlink, *batch))
        return deleted

    def eviction_policy(self) -> str | None:
        """Redis' ``maxmemory-policy``, or None where CONFIG is not allowed (managed services)."""
        try:
            policy = self._redis.config_get("maxmemory-policy").get("maxmemory-policy")
        except (redis.RedisError, RedisClusterException):
            return None
        return policy.decode() if isinstance(policy, bytes) else policy

    def close(self) -> None:
        self._closed = True
        self._feed.close()
        self._redis.close()

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        # redis-py opens a closed client again on its next command: a closed store must not,
        # or what runs after it (leases reported at exit) reconnects to servers long gone.
        if self._closed:
            raise StoreUnavailable("the store was closed")
        try:
            return func(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"store did not answer: {error}") from error
        except (redis.RedisError, RedisClusterException) as error:
            # Read-only replicas, OOM with noeviction, a Cluster whose slots are moving or
            # not covered: the store cannot serve us now.
            raise StoreUnavailable(f"store refused the operation: {error}") from error


def _batched(items: Any, size: int) -> Any:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
