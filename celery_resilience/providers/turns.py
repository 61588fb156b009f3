"""Tenants' turns on a provider budget: start-time fair queueing on a virtual clock, pure,
time passed in (``store/lua/fair_budget.lua`` does the same in Redis).

A fair queue (``load/fairness.py``) keeps its tags on the real clock, which a queue of
workers can afford: its delays are a broker's ETA, its service rate is learned. A budget
knows its rate, and is where a pipeline spends what it pays for, so its turns keep the
fair-queueing clock itself: virtual time ``V`` runs at ``capacity / W`` a second, ``W``
the weight of the tenants with a turn booked ahead of ``V``, so that the moment one
tenant has nothing booked, the others' turns come sooner (the budget is shared
among those who want it, never held for one who does not: work-conserving). A call
of tenant ``i`` (weight ``w``, cost ``c`` over the mean cost ``c̄``) starts at
``S = max(V, F_i)`` and moves the tenant's finish tag to ``F_i = S + c / (c̄ w)``; its
wait is the real time until ``V`` reaches ``S``, foreseen with the tags as they stand:
each other tenant counted in ``W`` until ``V`` passes its finish tag (``calls_until``).
Foreseen as if every tenant booked now stayed booked, a burst beside tenants with one
call each would be told of waits several turns too long, and sent to its chain.

Each tenant may run one call ahead of its share without waiting (the wait is counted
to its previous call's start, not its own): a tenant within its share sends at random
moments, and without that allowance the second call of every pair would wait a whole
turn, however little the tenant asks on average. A tenant over its share waits for its
turns after the first.

A call whose wait is longer than ``within`` is not booked: its tenant is not charged.

Until a budget is seen saturated its calls take it straight away, and a flood takes more
than the budget's rate before the first turn is booked (``budget.lead``: about a quarter
of the window's count, in a burst). Run at the rate from then on, the turns would fill
the window before those calls leave it, and for a while every call whose turn had come
would find it full. So the clock, starting with nobody booked, runs slower by that lead
over the time until those calls begin to leave the window: it gives out what the window
has room for, and no more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..load.fairness import COST_SMOOTHING, FAIR_DELAY_TOTAL, FAIR_DELAYED, FAIR_OVER_SHARE, FairTag

__all__ = ["Turns", "advance", "budget_turn"]


@dataclass(slots=True)
class Turns:
    """One budget's tenant state, as ``store/lua/fair_budget.lua`` keeps it in Redis."""

    tags: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> (finish, weight)
    mean_cost: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    virtual: float = 0.0  # the virtual clock
    updated: float = 0.0  # when it last ran
    slower: float = 0.0  # calls a second the clock runs below the budget's rate ...
    slower_until: float = 0.0  # ... until then (a flood's lead, paid)


def seconds_for(turns: Turns, now: float, capacity: float, calls: float) -> float:
    """The seconds the clock takes from ``now`` to give out ``calls`` calls."""
    if calls <= 0:
        return 0.0
    slow, rate = max(0.0, turns.slower_until - now), capacity - turns.slower
    if slow <= 0:
        return calls / capacity
    if rate * slow >= calls:
        return calls / rate
    return slow + (calls - rate * slow) / capacity


def advance(turns: Turns, now: float, capacity: float) -> None:
    """Run the virtual clock from its last reading to ``now``, at ``rate / W`` a second
    while tenants are booked ahead of it, passing their finish tags in order (each one
    passed leaves ``W``); with nobody booked it stands still. ``rate`` is the budget's
    ``capacity``, less a lead being paid until it is."""
    start = turns.updated
    elapsed = max(0.0, now - start)
    turns.updated = max(now, start)
    slow = max(0.0, min(elapsed, turns.slower_until - start))
    if slow > 0:
        _run(turns, slow, capacity - turns.slower)
    _run(turns, elapsed - slow, capacity)
    for name, (finish, _) in list(turns.tags.items()):
        if finish <= turns.virtual:  # nothing booked any more: the tenant starts afresh at V
            del turns.tags[name]


def _run(turns: Turns, elapsed: float, rate: float) -> None:
    clock = turns.virtual
    ahead = sorted((finish, weight) for finish, weight in turns.tags.values() if finish > clock)
    weight_ahead = sum(weight for _, weight in ahead)
    for finish, weight in ahead:
        if elapsed <= 0 or weight_ahead <= 0 or rate <= 0:
            break
        needed = (finish - clock) * weight_ahead / rate
        if needed >= elapsed:
            clock += elapsed * rate / weight_ahead
            break
        clock, elapsed = finish, elapsed - needed
        weight_ahead -= weight
    turns.virtual = clock


def calls_until(turns: Turns, tenant: str, weight: float, target: float) -> float:
    """The calls the clock gives out before it reaches ``target``, with the tags as they
    stand: the tenant booked all the way, each other tenant until its finish tag."""
    clock, calls = turns.virtual, 0.0
    ahead = sorted((f, w) for name, (f, w) in turns.tags.items() if name != tenant and f > clock)
    total = weight + sum(w for _, w in ahead)
    for finish, other in ahead:
        if finish >= target:
            break
        calls, clock, total = calls + (finish - clock) * total, finish, total - other
    return calls + max(0.0, target - clock) * total


def budget_turn(
    turns: Turns,
    tenant: str,
    weight: float,
    cost: float,
    now: float,
    capacity: float,
    within: float | None = None,
    lead: float = 0.0,
    lead_for: float = 0.0,
) -> FairTag:
    """Book one call of ``tenant`` on a budget serving ``capacity`` calls a second, whose
    window holds ``lead`` calls beyond its rate for ``lead_for`` seconds more: the seconds
    until its turn, or, further off than ``within``, nothing booked."""
    if capacity <= 0:
        return FairTag(0.0, 0.0)
    advance(turns, now, capacity)
    if lead > 0 and lead_for > 0 and not turns.tags and now >= turns.slower_until:
        turns.slower, turns.slower_until = min(lead / lead_for, capacity), now + lead_for
    cost = max(cost, 1e-9)
    mean = cost if turns.mean_cost <= 0 else turns.mean_cost + COST_SMOOTHING * (cost - turns.mean_cost)
    length = cost / mean / weight
    finish, _ = turns.tags.get(tenant, (turns.virtual, weight))
    start = max(turns.virtual, finish)
    wait = seconds_for(turns, now, capacity, calls_until(turns, tenant, weight, start - length))
    if within is not None and wait > within:
        for name in (FAIR_OVER_SHARE, f"{FAIR_OVER_SHARE}:{tenant}"):
            turns.stats[name] = turns.stats.get(name, 0.0) + 1.0
        return FairTag(wait, capacity, False)
    turns.mean_cost = mean
    turns.tags[tenant] = (start + length, weight)
    if wait > 0:
        for name, amount in ((FAIR_DELAYED, 1.0), (FAIR_DELAY_TOTAL, wait)):
            for field_name in (name, f"{name}:{tenant}"):
                turns.stats[field_name] = turns.stats.get(field_name, 0.0) + amount
    return FairTag(wait, capacity)
