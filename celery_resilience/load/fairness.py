"""Weighted fairness per tenant in a saturated queue, at enqueue: pure, time passed in.

Admission decides who may add work; once work is queued, the broker serves it first
come, first served, so a tenant inside its limits that offers a large burst makes every
other tenant's task wait behind it. Reordering the broker's queue is not possible on
every broker, and a dequeue loop of our own would be a second scheduler; instead, a
saturated queue publishes each tenant's work with the delay its start tag implies, so
that the broker's FIFO (and the worker's ETA timer) releases work in fair order.

The tags are start-time fair queueing's (SFQ; VTC for LLM serving), with virtual time
kept on the real clock: at its publish, a task of tenant ``i`` (weight ``w``, cost ``c``)
starts at ``S = max(now, F_i)`` and moves the tenant's finish tag to
``F_i = S + (c / c̄) * W / (w * μ)``, where ``μ`` is the queue's service rate in tasks a
second, ``c̄`` the mean cost of the queue's tasks and ``W`` the weight of the tenants with
booked work (a finish tag ahead of now). A tenant is thus released at ``μ * w / W``
tasks a second while it has work booked, and tenants that offer less than their share
hold their weight only for the time their own task takes, which leaves the rest to the
others, as generalized processor sharing does. Two rules keep it from holding work
back without cause:

- a tenant whose tag is behind now starts now (no credit is hoarded while idle);
- the tags are only used while the queue is saturated: with spare capacity nobody waits.

A hold is fixed at the publish, so work booked at a tenant's share while others were
present keeps that spacing after they leave; a worker with a free slot and nothing ready
therefore starts held work before its time, earliest first (``load/release.py``), and
the queue drains about as FIFO does. On Redis and RabbitMQ the order can be kept by
message priority instead (``"order": "priority"``): the same tag's lag picks one of four
levels (``priority_level``), nothing is held back, and the broker serves a lower level
whenever no higher one waits.

A tenant is the unit of fairness, not the user: twenty user ids of one tenant share the
tenant's one tag. Nothing is known of the service rate until workers report it (or the
setting states it): without one, no delay is added (the queue stays FIFO).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from ..errors import ConfigurationError
from ..rates import Rate
from ..validation import mapping, number, rate, seconds
from .signals import QueueThresholds

__all__ = [
    "FairPolicy",
    "FairQueue",
    "FairTag",
    "ORDERS",
    "priority_level",
    "start_tag",
    "report_capacity",
    "capacity_of",
    "read_fair_queues",
    "FAIR_DELAYED",
    "FAIR_DELAY_TOTAL",
    "FAIR_OVER_SHARE",
    "FAIR_FIELDS",
    "CAPACITY_STALE",
    "COST_SMOOTHING",
]

# The counters of a fair queue (``store/lua/fair.lua`` writes the same): publishes it
# delayed and the seconds it delayed them by, and of a provider budget's turns
# (``fair_budget.lua``) also the calls whose turn was further off than they could wait,
# in all and per tenant ("<name>:<tenant>").
FAIR_DELAYED = "delayed"
FAIR_DELAY_TOTAL = "delay_total"
FAIR_OVER_SHARE = "over_share"
FAIR_FIELDS = (FAIR_DELAYED, FAIR_DELAY_TOTAL, FAIR_OVER_SHARE)
# A worker's report of the rate it serves a queue at counts for this long (seconds).
CAPACITY_STALE = 10.0
# Weight of each new cost in the queue's mean cost (an exponential moving average).
COST_SMOOTHING = 0.05
# Depth at which a queue counts as saturated when neither the setting nor the queue's
# thresholds say.
DEFAULT_DEPTH = 100


# How a fair queue keeps its order: holding publishes back (any broker), or by priority.
ORDERS = ("delay", "priority")
# A tag's lag (seconds its tenant is ahead of its share) from which each priority level
# below the first applies: a tenant within its share goes first, one a little ahead
# next, one far ahead last.
PRIORITY_LAGS = (0.0, 1.0, 10.0)


@dataclass(frozen=True, slots=True)
class FairPolicy:
    """``depth``: ready messages from which the queue is saturated; ``max_delay``: the
    longest a publish is held back (seconds); ``capacity``: the queue's service rate in
    tasks a second, when stated (None: learned from the workers' reports); ``order``:
    ``"delay"`` or ``"priority"``."""

    depth: int
    max_delay: float
    capacity: float | None = None
    order: str = "delay"


def priority_level(lag: float) -> int:
    """The level (0 first, 3 last) of a publish whose tenant is ``lag`` seconds ahead."""
    return sum(lag > bound for bound in PRIORITY_LAGS)


class FairTag(NamedTuple):
    delay: float
    """Seconds to hold the publish back (0: it goes at once)."""
    capacity: float
    """The service rate the tag was worked out with (0: none known, no delay)."""
    booked: bool = True
    """False: a provider budget's turn was further off than the call could wait, and
    nothing was booked (``providers/turns.py``)."""


@dataclass(slots=True)
class FairQueue:
    """One queue's tenant state, as ``store/lua/fair.lua`` keeps it in Redis."""

    tags: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> (finish, weight)
    capacity: dict[str, tuple[float, float]] = field(default_factory=dict)  # reporter -> (rate, at)
    mean_cost: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)


def capacity_of(queue: FairQueue, now: float) -> float:
    """The queue's service rate: the sum of fresh reports (stale ones are dropped)."""
    for reporter, (_, at) in list(queue.capacity.items()):
        if at < now - CAPACITY_STALE:
            del queue.capacity[reporter]
    return sum(served for served, _ in queue.capacity.values())


def report_capacity(queue: FairQueue, reporter: str, served: float, now: float) -> None:
    """A worker process serves the queue at ``served`` tasks a second (its slots over
    its tasks' mean duration): a rate that does not fall when fairness holds work back,
    as a count of dequeues would."""
    queue.capacity[reporter] = (served, now)


def start_tag(
    queue: FairQueue,
    tenant: str,
    weight: float,
    cost: float,
    now: float,
    max_delay: float,
    stated: float | None = None,
) -> FairTag:
    """Book one task of ``tenant`` in the saturated queue: how long to hold it back.
    ``stated`` is the configured service rate (else the workers' reports)."""
    for name, (finish, _) in list(queue.tags.items()):
        if finish <= now:  # nothing booked any more: the tenant starts afresh at now
            del queue.tags[name]
    capacity = stated if stated is not None else capacity_of(queue, now)
    if capacity <= 0:
        return FairTag(0.0, 0.0)
    cost = max(cost, 1e-9)
    queue.mean_cost = (
        cost if queue.mean_cost <= 0 else queue.mean_cost + COST_SMOOTHING * (cost - queue.mean_cost)
    )
    finish, _ = queue.tags.get(tenant, (now, 0.0))
    active = weight + sum(w for name, (_, w) in queue.tags.items() if name != tenant)
    start = max(now, finish)
    queue.tags[tenant] = (start + (cost / queue.mean_cost) * active / (weight * capacity), weight)
    delay = min(start - now, max_delay)
    if delay > 0:
        for name, amount in ((FAIR_DELAYED, 1.0), (FAIR_DELAY_TOTAL, delay)):
            for field_name in (name, f"{name}:{tenant}"):
                queue.stats[field_name] = queue.stats.get(field_name, 0.0) + amount
    return FairTag(delay, capacity)


def read_fair_queues(
    setting: str, value: object, thresholds: Mapping[str, QueueThresholds]
) -> Mapping[str, FairPolicy]:
    """``resilience_fair_queues``: a list of queue names, or queue name -> ``{"depth": N,
    "max_delay": s, "capacity": "40/s", "order": "delay" | "priority"}`` (each optional)."""
    if value is None:
        return MappingProxyType({})
    expected = (
        "a list of queue names, or a mapping of queue name to {'depth', 'max_delay', 'capacity', 'order'}"
    )
    if isinstance(value, str) or not isinstance(value, Mapping | list | tuple):
        raise ConfigurationError(setting, expected, value)
    specs = mapping(setting, value) if isinstance(value, Mapping) else {}
    if not isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(setting, "queue names (non-empty strings)", name)
            specs = {**specs, name: {}}
    found: dict[str, FairPolicy] = {}
    for queue, given in specs.items():
        where = f"{setting}[{queue!r}]"
        spec = mapping(where, {} if given is None else given)
        unknown = set(spec) - {"depth", "max_delay", "capacity", "order"}
        if unknown:
            expected_keys = "one of 'depth', 'max_delay', 'capacity', 'order'"
            raise ConfigurationError(f"{where}[{sorted(unknown)[0]!r}]", expected_keys, has_value=False)
        high = thresholds[queue].high if queue in thresholds else DEFAULT_DEPTH
        depth = number(f"{where}['depth']", spec.get("depth", high), minimum=1, whole=True)
        max_delay = seconds(f"{where}['max_delay']", spec.get("max_delay", 60.0), positive=True)
        stated: Rate | None = (
            None if spec.get("capacity") is None else rate(f"{where}['capacity']", spec["capacity"])
        )
        order = spec.get("order", "delay")
        if order not in ORDERS:
            raise ConfigurationError(
                f"{where}['order']", "'delay' (any broker) or 'priority' (Redis, RabbitMQ)", order
            )
        found[queue] = FairPolicy(int(depth), max_delay, None if stated is None else stated.per_second, order)
    return MappingProxyType(found)
