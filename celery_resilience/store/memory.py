"""``MemoryStore``: the embedded default, one process, thread-safe, same semantics as Redis."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ..admission.bucket import (
    BucketSpec,
    BucketState,
    Decision,
    Outcome,
    bucket_ttl,
    decide,
    drain,
    refund,
    renew,
)
from ..admission.port import AdmitRequest, delay_for
from ..breakers.local import LocalBreakers
from ..breakers.machine import BreakerPolicy, BreakerState, BreakerView, Denied, Permit, Recorded
from ..breakers.port import BreakerOutcome, TransitionListener
from ..clock import SYSTEM_CLOCK, Clock
from ..fallbacks.evidence import Judgement
from ..fallbacks.port import CANDIDATE_BUDGET, RAREST_TERMS, CacheEntry
from ..load.fairness import FairQueue, FairTag, capacity_of, report_capacity, start_tag
from ..load.port import DEMAND_HISTORY_HOURS, LOAD_HISTORY_MINUTES
from ..load.signals import HealthSnapshot
from ..monitoring.counters import (
    ADMITTED,
    PROVIDER_SCOPE,
    REQUESTS,
    admission_fields,
    derive,
    outcome_field,
    provider_call_fields,
)
from ..monitoring.port import SECONDS_PER_MINUTE
from ..providers.budget import Ledger, Said, Taken, Window, adjust, block, hold_to, schedule, settle, take_all
from ..providers.learned import LearnedRate, learned
from ..providers.retry_budget import RetryBudget, retry_allowed, window_slice
from ..providers.turns import Turns, budget_turn
from .keys import KeySpace

__all__ = ["MemoryStore"]

_PRUNE_EVERY = 4096


class MemoryStore:
    """State in dictionaries under one lock; expired buckets are pruned as Redis would expire them."""

    def __init__(self, keys: KeySpace, *, clock: Clock = SYSTEM_CLOCK, metrics_ttl: int = 7200) -> None:
        self.keys = keys
        self._clock = clock.now
        self._metrics_ttl = metrics_ttl
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[BucketState, float]] = {}
        self._metrics: dict[tuple[str, int], Counter[str]] = {}
        self._operations = 0
        self._breakers = LocalBreakers(self._clock)
        self._health: dict[str, HealthSnapshot] = {}
        # namespace -> (entries by id, last use by id, ids by term)
        self._caches: dict[str, tuple[dict[str, CacheEntry], dict[str, float], dict[str, set[str]]]] = {}
        self._demand: dict[int, float] = {}
        self._load: dict[int, float] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._claims: dict[str, float] = {}
        self._alerts: list[str] = []
        self._retries: dict[str, dict[int, tuple[float, float]]] = {}
        self._learned: dict[tuple[str, str], LearnedRate] = {}
        self._ledgers: dict[str, Ledger] = {}
        self._fair: dict[str, FairQueue] = {}
        self._turns: dict[str, Turns] = {}

    def now(self) -> float:
        return self._clock()

    def user_bucket(self, user_id: str | None, tier: str, request_type: str | None) -> tuple[str, int]:
        return self.keys.user_bucket(user_id, tier, request_type)

    def provider_windows(self, provider: str, units: tuple[str, ...]) -> tuple[list[str], int]:
        return self.keys.provider_windows(provider, units)

    def provider_timetable(self, provider: str, units: tuple[str, ...]) -> list[str]:
        return self.keys.provider_timetable(provider, units)

    def _windows(self, keys: Sequence[str]) -> list[Ledger]:
        """The ledgers of ``keys`` (a unit's sorted set names it; its hash key is not used here)."""
        return [self._ledgers.setdefault(key, Ledger()) for key in keys[::2]]

    def budget_take(
        self,
        keys: Sequence[str],
        shard: int,
        windows: Sequence[Window],
        amounts: Sequence[float],
        provider: str,
        entry: str,
        watch: bool = False,
    ) -> Taken:
        with self._lock:
            now = self._clock()
            taken = take_all(self._windows(keys), windows, amounts, entry, now, watch)
            self._add(now, provider_call_fields(provider, taken.wait == 0), PROVIDER_SCOPE)
            return taken

    def budget_settle(
        self,
        keys: Sequence[str],
        windows: Sequence[Window],
        entry: str,
        said: Sequence[Said],
        timetable: Sequence[str],
        specs: Sequence[BucketSpec],
        deltas: Sequence[float],
    ) -> None:
        with self._lock:
            now = self._clock()
            for ledger, window, unit in zip(self._windows(keys), windows, said, strict=True):
                ledger.expire(now, window.span)
                if unit.counted is not None:
                    settle(ledger, entry, unit.counted)
                if unit.left is not None:
                    hold_to(ledger, window, now, unit.left, unit.reset)
            for key, spec, delta in zip(timetable, specs, deltas, strict=True):
                state = adjust(self._bucket(key, now), spec, now, delta)
                self._buckets[key] = (state, now + bucket_ttl(state, spec))

    def budget_block(
        self,
        keys: Sequence[str],
        windows: Sequence[Window],
        seconds: Sequence[float],
        again: float | None = None,
        periods: Sequence[float] | None = None,
    ) -> list[tuple[float, float]]:
        counted: Sequence[float | None] = periods if periods is not None else [None] * len(seconds)
        with self._lock:
            now = self._clock()
            ledgers = self._windows(keys)
            return [
                block(ledger, window, now, wait, again, period)
                for ledger, window, wait, period in zip(ledgers, windows, seconds, counted, strict=True)
            ]

    def retry_budget(self, provider: str, budget: RetryBudget, firsts: int, ask: bool) -> bool:
        with self._lock:
            now = self._clock()
            slice_now = window_slice(now, budget)
            counts = self._retries.setdefault(provider, {})
            for index in [index for index in counts if index <= slice_now - budget.slices]:
                del counts[index]
            first, retries = counts.get(slice_now, (0.0, 0.0))
            counts[slice_now] = (first + firsts, retries)
            if not ask:
                return True
            if not retry_allowed(counts, now, budget):
                return False
            first, retries = counts[slice_now]
            counts[slice_now] = (first, retries + 1)
            return True

    def budget_schedule(
        self,
        provider: str,
        units: tuple[str, ...],
        specs: Sequence[BucketSpec],
        amounts: Sequence[float],
        horizon: float,
    ) -> tuple[bool, float]:
        keys = self.keys.provider_timetable(provider, units)
        with self._lock:
            now = self._clock()
            states, wait, booked = schedule(
                [self._bucket(key, now) for key in keys], specs, amounts, now, horizon
            )
            if booked:
                for key, state, spec in zip(keys, states, specs, strict=True):
                    self._buckets[key] = (state, now + bucket_ttl(state, spec))
            return booked, wait

    def learn(
        self,
        provider: str,
        unit: str,
        event: str,
        start: float,
        value: float,
        accepted: float = 0.0,
        held: float = 0.0,
    ) -> float:
        with self._lock:
            known = self._learned.get((provider, unit))
            state = learned(known, event, self._clock(), start, value, accepted, held)
            self._learned[(provider, unit)] = state
            return state.rate

    def _bucket(self, key: str, now: float) -> BucketState | None:
        stored = self._buckets.get(key)
        return stored[0] if stored is not None and stored[1] > now else None

    def admit(self, request: AdmitRequest) -> Outcome:
        with self._lock:
            now = self._clock()
            stored = self._buckets.get(request.bucket_key)
            state = stored[0] if stored is not None and stored[1] > now else None
            spec = request.policy.spec
            if request.renew:
                renewed, leased = renew(state, spec, now, request.lease)
                self._buckets[request.bucket_key] = (renewed, now + bucket_ttl(renewed, spec))
                if request.pending:
                    self._add(now, {outcome_field(ADMITTED, request.policy.tier): request.pending})
                return Outcome(Decision.ALLOW, renewed.tokens, 0.0, False, renewed.grace_used, leased)
            new_state, outcome = decide(state, spec, now, request.lease)
            self._buckets[request.bucket_key] = (new_state, now + bucket_ttl(new_state, spec))
            delay = delay_for(outcome, request.policy.min_delay) if outcome.reserved else 0.0
            self._add(
                now,
                admission_fields(
                    outcome.decision.value,
                    outcome.reserved,
                    request.policy.tier,
                    request.policy.strategy,
                    request.pending,
                    delay,
                ),
            )
            self._operations += 1
            if self._operations % _PRUNE_EVERY == 0:
                self._prune(now)
            return outcome

    def admit_many(self, requests: Sequence[AdmitRequest]) -> list[Outcome | None]:
        return [self.admit(request) for request in requests]

    def drain(self, bucket_key: str, spec: BucketSpec, seconds: float) -> None:
        with self._lock:
            now = self._clock()
            stored = self._buckets.get(bucket_key)
            state = drain(stored[0] if stored is not None and stored[1] > now else None, spec, now, seconds)
            self._buckets[bucket_key] = (state, now + bucket_ttl(state, spec))

    def refund(self, bucket_key: str, spec: BucketSpec, grace: bool) -> None:
        with self._lock:
            now = self._clock()
            stored = self._buckets.get(bucket_key)
            if stored is None or stored[1] <= now:
                return
            state = refund(stored[0], spec, now, grace)
            if state is not None:
                self._buckets[bucket_key] = (state, stored[1])

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
        with self._lock:
            tenant_key, now = self.keys.tenant(tenant), self._clock()
            if kind == "provider":
                turns = self._turns.setdefault(queue, Turns())
                return budget_turn(
                    turns, tenant_key, weight, cost, now, capacity or 0.0, within, lead, lead_for
                )
            state = self._fair.setdefault(queue, FairQueue())
            return start_tag(state, tenant_key, weight, cost, now, max_delay, capacity)

    def fair_capacity(self, queue: str, reporter: str, served: float) -> None:
        with self._lock:
            report_capacity(self._fair.setdefault(queue, FairQueue()), reporter, served, self._clock())

    def fair_status(self, queue: str, kind: str = "queue") -> dict[str, float]:
        with self._lock:
            now = self._clock()
            if kind == "provider":  # a budget's tags are on its virtual clock; no reports
                turns = self._turns.setdefault(queue, Turns())
                booked = sum(1 for finish, _ in turns.tags.values() if finish > turns.virtual)
                return {**turns.stats, "capacity": 0.0, "tenants": float(booked)}
            state = self._fair.setdefault(queue, FairQueue())
            booked = sum(1 for finish, _ in state.tags.values() if finish > now)
            return {**state.stats, "capacity": capacity_of(state, now), "tenants": float(booked)}

    def count(self, fields: Mapping[str, float], shard: int = 0) -> None:
        with self._lock:
            self._add(self._clock(), fields)

    def metrics(self, minute: int | None = None, scope: str = "") -> dict[str, float]:
        with self._lock:
            if minute is None:
                minute = int(self._clock() // SECONDS_PER_MINUTE)
            return derive(dict(self._metrics.get((scope, minute), {})))

    def breaker_acquire(
        self, name: str, policy: BreakerPolicy, lease: str
    ) -> tuple[Permit | Denied, BreakerView]:
        return self._breakers.breaker_acquire(name, policy, lease)

    def breaker_record(self, name: str, policy: BreakerPolicy, outcome: BreakerOutcome) -> Recorded:
        return self._breakers.breaker_record(name, policy, outcome)

    def breaker_release(self, name: str, policy: BreakerPolicy, generation: int, lease: str) -> None:
        self._breakers.breaker_release(name, policy, generation, lease)

    def breaker_force(self, name: str, policy: BreakerPolicy, state: BreakerState) -> BreakerView:
        return self._breakers.breaker_force(name, policy, state)

    def breaker_read(self, name: str, policy: BreakerPolicy) -> BreakerView:
        return self._breakers.breaker_read(name, policy)

    def cache_put(self, namespace: str, entry: CacheEntry, max_entries: int, ttl: float) -> int:
        with self._lock:
            entries, used, index = self._caches.setdefault(namespace, ({}, {}, {}))
            now = self._clock()
            # Held as Redis holds it: JSON. What JSON cannot hold is refused on both stores,
            # and no caller shares a mutable answer with the cache.
            # An answer stored again keeps its evidence, as Redis keeps its evidence hash.
            kept = entries[entry.id].evidence if entry.id in entries else ()
            entries[entry.id] = CacheEntry.from_json(entry.to_json(), kept)
            used[entry.id] = now
            for term in entry.terms:
                index.setdefault(term, set()).add(entry.id)
            doomed = [i for i, t in used.items() if t <= now - ttl]
            survivors = sorted((t, i) for i, t in used.items() if t > now - ttl)
            doomed += [i for _, i in survivors[: max(0, len(survivors) - max_entries)]]
            for entry_id in doomed:
                for term in entries[entry_id].terms:
                    index.get(term, set()).discard(entry_id)
                del entries[entry_id], used[entry_id]
            return len(doomed)

    def cache_candidates(self, namespace: str, terms: list[str], limit: int, ttl: float) -> list[CacheEntry]:
        with self._lock:
            entries, used, index = self._caches.get(namespace, ({}, {}, {}))
            overlap: Counter[str] = Counter()
            sized = sorted((len(index[t]), t) for t in set(terms) if index.get(t))
            gathered = 0
            for position, (size, term) in enumerate(sized[:RAREST_TERMS]):
                if position and gathered + size > CANDIDATE_BUDGET:
                    break
                gathered += size
                overlap.update(index[term])
            oldest = self._clock() - ttl
            best = sorted(overlap.items(), key=lambda item: (-item[1], item[0]))[:limit]
            return [entries[i] for i, _ in best if used.get(i, -1e18) > oldest]

    def cache_touch(self, namespace: str, entry_id: str) -> None:
        with self._lock:
            _, used, _ = self._caches.get(namespace, ({}, {}, {}))
            if entry_id in used:
                used[entry_id] = self._clock()

    def cache_judge(self, namespace: str, judged: Sequence[tuple[str, Judgement]], keep: int) -> None:
        with self._lock:
            entries, _, _ = self._caches.get(namespace, ({}, {}, {}))
            for entry_id, judgement in judged:
                entry = entries.get(entry_id)
                if entry is not None:
                    evidence = (*entry.evidence, judgement)[-keep:]
                    entries[entry_id] = dataclasses.replace(entry, evidence=evidence)

    def publish_health(self, snapshot: HealthSnapshot) -> None:
        with self._lock:
            self._health[snapshot.worker] = snapshot

    def read_health(self) -> list[HealthSnapshot]:
        with self._lock:
            return list(self._health.values())

    def hold_lease(self, name: str, owner: str, seconds: float) -> bool:
        with self._lock:
            now = self._clock()
            holder = self._leases.get(name)
            if holder is None or holder[1] <= now or holder[0] == owner:
                self._leases[name] = (owner, now + seconds)
                return True
            return False

    def lease_holder(self, name: str) -> str | None:
        with self._lock:
            holder = self._leases.get(name)
            return holder[0] if holder is not None and holder[1] > self._clock() else None

    def claim(self, name: str, seconds: float) -> bool:
        with self._lock:
            now = self._clock()
            if self._claims.get(name, -1e18) > now:
                return False
            self._claims[name] = now + seconds
            return True

    def push_alert(self, record: str, keep: int = 50) -> None:
        with self._lock:
            self._alerts = [record, *self._alerts][:keep]

    def recent_alerts(self, count: int = 20) -> list[str]:
        with self._lock:
            return self._alerts[:count]

    def record_load(self, minute: int, usage: float) -> None:
        with self._lock:
            self._load[minute] = usage
            for old in [m for m in self._load if m < minute - LOAD_HISTORY_MINUTES]:
                del self._load[old]

    def load_series(self, minutes: list[int]) -> dict[int, float]:
        with self._lock:
            return {m: self._load[m] for m in minutes if m in self._load}

    def requests_in_hour(self, hour: int) -> float:
        first = hour * 60
        return sum(self.metrics(minute).get(REQUESTS, 0.0) for minute in range(first, first + 60))

    def record_demand(self, hour: int, requests: float) -> None:
        with self._lock:
            self._demand.setdefault(hour, requests)
            for old in [h for h in self._demand if h < hour - DEMAND_HISTORY_HOURS]:
                del self._demand[old]

    def demand_history(self) -> dict[int, float]:
        with self._lock:
            return dict(self._demand)

    def subscribe(self, listener: TransitionListener, breakers: Iterable[str]) -> None:
        self._breakers.subscribe(listener, breakers)

    def purge(self) -> int:
        with self._lock:
            deleted = len(self._buckets) + len(self._metrics) + self._breakers.clear() + len(self._health)
            self._buckets.clear()
            self._ledgers.clear()
            self._metrics.clear()
            self._health.clear()
            self._caches.clear()
            self._demand.clear()
            self._load.clear()
            self._leases.clear()
            self._claims.clear()
            self._alerts.clear()
            self._retries.clear()
            self._learned.clear()
            self._fair.clear()
            self._turns.clear()
            return deleted

    def close(self) -> None:
        return None

    def _add(self, now: float, fields: Mapping[str, float], scope: str = "") -> None:
        counter = self._metrics.setdefault((scope, int(now // SECONDS_PER_MINUTE)), Counter())
        for name, amount in fields.items():
            counter[name] += amount  # type: ignore[assignment]

    def _prune(self, now: float) -> None:
        self._buckets = {k: v for k, v in self._buckets.items() if v[1] > now}
        self._ledgers = {key: ledger for key, ledger in self._ledgers.items() if ledger.entries}
        oldest = int((now - self._metrics_ttl) // SECONDS_PER_MINUTE)
        self._metrics = {m: c for m, c in self._metrics.items() if m[1] >= oldest}
