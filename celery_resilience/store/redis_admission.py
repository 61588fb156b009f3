"""Admission's operations on Redis: ``admit.lua`` on the script lane (one call per publish
that holds no lease, several renewals pipelined with it), ``drain`` and ``refund``."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import Script

from ..admission.bucket import BucketSpec, Decision, Outcome
from ..admission.port import AdmitPolicy, AdmitRequest
from ..errors import StoreUnavailable
from .base import Call, MinuteClock
from .keys import KeySpace
from .script_lane import ScriptCall, script_lane

__all__ = ["RedisAdmission"]

# admit.lua's decision codes, and the layouts of its policy argument and its reply.
_DECISIONS = (Decision.ALLOW, Decision.ALLOW_WITH_GRACE, Decision.THROTTLE)
_ADMIT_POLICY = struct.Struct("<dddddBddd")
_ADMIT_REPLY = struct.Struct("<BddBddd")
_WIRE_CACHE_SIZE = 4096


class RedisAdmission:
    """``AdmissionStore``'s bucket operations for ``RedisStore``, through its error-mapping ``call``."""

    def __init__(
        self,
        client: Any,  # redis.Redis, or a Cluster's client
        keys: KeySpace,
        call: Call,
        *,
        clock: Callable[[], float] | None,
        minutes: MinuteClock,
        metrics_ttl: int,
        load: Callable[[str], str],
        clustered: bool,
    ) -> None:
        self._keys = keys
        self._call = call
        self._clock = clock
        self._minutes = minutes
        self._metrics_ttl = metrics_ttl
        # The one script on every publish runs on its own lane.
        self._admit = script_lane(client, load("admit"), clustered)
        self._drain: Script = client.register_script(load("drain"))
        self._refund: Script = client.register_script(load("refund"))
        self._wire: dict[AdmitPolicy, bytes] = {}
        self._metrics_keys: dict[tuple[int, int], str] = {}

    def admit(self, request: AdmitRequest) -> Outcome:
        keys, args = self._admit_call(request)
        return self._outcome(self._call(self._admit, keys, args))

    def admit_many(self, requests: Sequence[AdmitRequest]) -> list[Outcome | None]:
        replies = self._call(self._admit.many, [self._admit_call(request) for request in requests])
        outcomes: list[Outcome | None] = []
        for index, reply in enumerate(replies):
            if isinstance(reply, Exception):
                if index == 0:
                    raise StoreUnavailable(f"store did not decide: {reply}") from reply
                outcomes.append(None)
            else:
                outcomes.append(self._outcome(reply))
        return outcomes

    def drain(self, bucket_key: str, spec: BucketSpec, seconds: float) -> None:
        self._call(
            self._drain,
            keys=[bucket_key],
            args=[self._now_arg(), repr(seconds), repr(spec.capacity), repr(spec.refill)],
        )

    def refund(self, bucket_key: str, spec: BucketSpec, grace: bool) -> None:
        self._call(
            self._refund,
            keys=[bucket_key],
            args=[
                self._now_arg(),
                repr(spec.capacity),
                repr(spec.refill),
                repr(spec.grace_period),
                "1" if grace else "0",
            ],
        )

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _admit_call(self, request: AdmitRequest) -> ScriptCall:
        wire = self._wire.get(request.policy)
        if wire is None:
            wire = self._encode(request.policy)
        minute = self._minutes.minute()
        metrics_key = self._metrics_keys.get((request.shard, minute)) or self._metrics_key(
            request.shard, minute
        )
        args: list[str | bytes] = [self._now_arg(), wire, str(request.lease), str(request.pending)]
        if request.renew:
            args.append("1")
        return [request.bucket_key, metrics_key], args

    def _outcome(self, reply: bytes) -> Outcome:
        decision, remaining, retry_after, reserved, grace_used, leased, store_now = _ADMIT_REPLY.unpack(reply)
        self._minutes.observe(store_now)
        return Outcome(
            _DECISIONS[decision],
            remaining,
            retry_after,
            reserved == 1,
            int(grace_used),
            int(leased),
        )

    def _metrics_key(self, shard: int, minute: int) -> str:
        if len(self._metrics_keys) > 4 * self._keys.shards:
            self._metrics_keys.clear()
        key = self._metrics_keys[(shard, minute)] = self._keys.metrics(shard, minute)
        return key

    def _encode(self, policy: AdmitPolicy) -> bytes:
        """The policy as the script's ARGV[2]; cached because it is the same for every call."""
        spec = policy.spec
        wire = _ADMIT_POLICY.pack(
            spec.capacity,
            spec.refill,
            spec.grace_limit,
            spec.grace_period,
            spec.reserve,
            1 if spec.grace_allowed else 0,
            spec.horizon,
            policy.min_delay,
            self._metrics_ttl,
        ) + b"%s\0%s\0" % (policy.strategy.encode(), policy.tier.encode())
        if len(self._wire) >= _WIRE_CACHE_SIZE:
            self._wire.clear()
        self._wire[policy] = wire
        return wire
