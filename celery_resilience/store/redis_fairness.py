"""Fair queues on Redis: ``fair.lua`` books a tenant's task (one round trip, made only
while the queue is saturated), ``fair_capacity.lua`` takes a worker's service rate;
``fair_budget.lua`` books a tenant's turn on a provider budget (``providers/turns.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.commands.core import Script

from ..load.fairness import CAPACITY_STALE, COST_SMOOTHING, FairTag
from .base import Call
from .keys import KeySpace

__all__ = ["RedisFairness"]

# A fair queue's keys outlive the longest delay and an idle spell; counters last an hour.
_TTL = 3600


class RedisFairness:
    """``FairStore`` for ``RedisStore``, through its error-mapping ``call``."""

    def __init__(
        self,
        client: Any,
        keys: KeySpace,
        call: Call,
        *,
        clock: Callable[[], float] | None,
        now: Callable[[], float],
        load: Callable[[str], str],
    ) -> None:
        self._client = client
        self._keys = keys
        self._call = call
        self._clock = clock
        self._now = now
        self._tag: Script = client.register_script(load("fair"))
        self._turn: Script = client.register_script(load("fair_budget"))
        self._capacity: Script = client.register_script(load("fair_capacity"))

    def _now_arg(self) -> str:
        return "" if self._clock is None else repr(self._clock())

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
        if kind == "provider":
            return self._budget_turn(queue, tenant, weight, cost, capacity, within, lead, lead_for)
        delay, served, _ = self._call(
            self._tag,
            keys=self._keys.fair(queue),
            args=[
                self._now_arg(),
                self._keys.tenant(tenant),
                repr(float(weight)),
                repr(float(cost)),
                repr(float(max_delay)),
                "" if capacity is None else repr(float(capacity)),
                repr(CAPACITY_STALE),
                repr(COST_SMOOTHING),
                str(_TTL),
            ],
        )
        return FairTag(float(delay), float(served))

    def _budget_turn(
        self,
        provider: str,
        tenant: str | None,
        weight: float,
        cost: float,
        capacity: float | None,
        within: float | None,
        lead: float,
        lead_for: float,
    ) -> FairTag:
        if capacity is None or capacity <= 0:
            return FairTag(0.0, 0.0)
        tags, state, _, stats = self._keys.fair(provider, "provider")
        wait, served, _, booked = self._call(
            self._turn,
            keys=[tags, state, stats],
            args=[
                self._now_arg(),
                self._keys.tenant(tenant),
                repr(float(weight)),
                repr(float(cost)),
                repr(float(capacity)),
                "" if within is None else repr(float(within)),
                repr(COST_SMOOTHING),
                str(_TTL),
                repr(float(max(lead, 0.0))),
                repr(float(max(lead_for, 0.0))),
            ],
        )
        return FairTag(float(wait), float(served), _text(booked) == "1")

    def fair_capacity(self, queue: str, reporter: str, served: float) -> None:
        key = self._keys.fair(queue)[2]
        self._call(
            self._capacity, keys=[key], args=[self._now_arg(), reporter, repr(float(served)), str(_TTL)]
        )

    def fair_status(self, queue: str, kind: str = "queue") -> dict[str, float]:
        tags, state, capacity, stats = self._keys.fair(queue, kind)
        now = self._now()
        pipe = self._call(self._client.pipeline, transaction=False)
        pipe.hgetall(stats)
        pipe.hgetall(capacity)
        if kind == "provider":  # a budget's tags are on its virtual clock: read it first
            pipe.hget(state, "virtual")
            counters, reports, virtual = self._call(pipe.execute)
            booked = self._call(self._client.zcount, tags, f"({float(virtual or 0.0)!r}", "+inf")
        else:
            pipe.zcount(tags, f"({now!r}", "+inf")
            counters, reports, booked = self._call(pipe.execute)
        status = {_text(name): float(value) for name, value in counters.items()}
        status["capacity"] = sum(
            float(served)
            for served, at in (_text(report).split(" ") for report in reports.values())
            if float(at) >= now - CAPACITY_STALE
        )
        status["tenants"] = float(booked)
        return status


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
