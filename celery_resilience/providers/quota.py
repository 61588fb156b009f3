"""The provider quota guard: stay under a provider's own limits instead of finding them by 429s.

Before each call a worker reserves the call's cost in every unit the provider's budget
counts (a request, and the estimated tokens), from buckets every worker shares. A spent
budget names the wait; the caller runs again then, without calling the provider and
without counting a failure. After the call, the reservation is reconciled with what the
provider counted (the response's ``usage``) and the buckets are brought into line with
what the provider says is left (its rate-limit headers). A 429 anyway drains the budget
for the wait the provider named, or for the rest of the period.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..admission.bucket import BucketSpec
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import StoreUnavailable
from ..monitoring.counters import count_provider_429
from .budget import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, ProviderBudget, UnitBudget
from .learned import LearnedRates
from .port import ProviderStore
from .settings import ProviderSettings
from .usage import Limit, OutputObserver, Usage, estimate_tokens

__all__ = ["ProviderQuota", "Reservation", "current_reservation", "reserved_for"]

logger = logging.getLogger("celery_resilience.quota")

# A success grows a learned unit only while calls waited for the budget this recently:
# a budget that holds nothing back has not found the provider's limit.
HELD_BACK_SECONDS = 1.0


@dataclass(slots=True)
class Reservation:
    """What one call took from its provider's budget, until the provider's count settles it."""

    provider: str
    task: str
    taken: dict[str, float]
    settled: bool = field(default=False)
    # What the call booked on the provider's timetable when it was published, if it did.
    booked: dict[str, float] | None = None


_current: ContextVar[Reservation | None] = ContextVar("celery_resilience_reservation", default=None)


@contextlib.contextmanager
def reserved_for(reservation: Reservation | None) -> Iterator[None]:
    """While a guarded call runs: the responses it receives settle ``reservation``."""
    token = _current.set(reservation)
    try:
        yield
    finally:
        _current.reset(token)


def current_reservation() -> Reservation | None:
    return _current.get()


def _cost(unit: str, input_tokens: float, output_tokens: float) -> float:
    if unit == REQUESTS:
        return 1.0
    if unit == INPUT_TOKENS:
        return input_tokens
    if unit == OUTPUT_TOKENS:
        return output_tokens
    return input_tokens + output_tokens


def _amounts(
    units: Sequence[str], specs: Sequence[BucketSpec], input_tokens: float, output_tokens: float
) -> list[float]:
    """A call's cost in each unit; above a unit's burst, the whole burst (it could never be
    granted otherwise)."""
    return [
        min(spec.capacity, _cost(unit, input_tokens, output_tokens))
        for unit, spec in zip(units, specs, strict=True)
    ]


class ProviderQuota:
    def __init__(
        self, settings: ProviderSettings, store: Callable[[], ProviderStore], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.providers: Mapping[str, ProviderBudget] = dict(settings.budgets)
        self.outputs = OutputObserver()
        self.learned = LearnedRates(store, clock)
        self._counter = settings.token_counter
        self._store, self._clock = store, clock
        self._fixed: dict[str, tuple[tuple[str, ...], tuple[BucketSpec, ...]]] = {
            name: (tuple(unit for unit, _ in budget.units), tuple(b.spec() for _, b in budget.units))
            for name, budget in self.providers.items()
            if not any(b.learned for _, b in budget.units)
        }
        self._held_back: dict[str, float] = {}  # provider -> when a call last had to wait

    def _units(self, provider: str) -> tuple[tuple[str, ...], tuple[BucketSpec, ...]]:
        """Each unit and its bucket now: learned units at their shared learned rate."""
        fixed = self._fixed.get(provider)
        if fixed is not None:
            return fixed
        budget = self.providers[provider]
        specs = tuple(
            b.at(self.learned.rate(provider, unit, b.rate.per_second)).spec() if b.learned else b.spec()
            for unit, b in budget.units
        )
        return tuple(unit for unit, _ in budget.units), specs

    def _learned_units(self, provider: str) -> list[tuple[str, UnitBudget]]:
        """The provider's learned units (their ``rate`` is the starting guess)."""
        if provider in self._fixed:
            return []
        return [(unit, b) for unit, b in self.providers[provider].units if b.learned]

    def counts_tokens(self, provider: str) -> bool:
        return any(unit != REQUESTS for unit, _ in self.providers[provider].units)

    def succeeded(self, provider: str) -> None:
        """A call went through: learned units grow while they are what holds calls back."""
        learned = self._learned_units(provider)
        if not learned:
            return
        held_back = self._held_back.get(provider)
        if held_back is None or self._clock.monotonic() - held_back > HELD_BACK_SECONDS:
            return
        for unit, budget in learned:
            self.learned.grew(provider, unit, budget.rate.per_second)

    def estimate(
        self, provider: str, task: str, prompt: str | None, max_tokens: float | None
    ) -> tuple[float, float]:
        """A call's input and output tokens, before it is made (zero for a budget of requests)."""
        if not self.counts_tokens(provider):
            return 0.0, 0.0
        input_tokens = float(estimate_tokens(prompt, self._counter)) if prompt else 0.0
        output_tokens = float(max_tokens) if max_tokens is not None else self.outputs.estimate(task)
        return input_tokens, output_tokens

    def reserve(
        self,
        provider: str,
        task: str = "",
        input_tokens: float = 0.0,
        output_tokens: float = 0.0,
        booked: Mapping[str, float] | None = None,
    ) -> tuple[Reservation | None, float]:
        """Take a call's cost from every unit at once: ``(reservation, 0.0)`` when granted,
        ``(None, seconds to wait)`` when not. A cost above a unit's burst takes the whole
        burst (it could never be granted otherwise). With the store unreachable the call is
        granted unchecked (the breaker still guards it)."""
        units, specs = self._units(provider)
        amounts = _amounts(units, specs, input_tokens, output_tokens)
        store = self._store()
        try:
            keys, shard = store.provider_units(provider, units)
            wait = store.budget_take(keys, shard, specs, amounts, provider)
        except StoreUnavailable as error:
            logger.warning("provider quota for %r unchecked: %s", provider, error)
            return None, 0.0
        if wait > 0:
            self._held_back[provider] = self._clock.monotonic()
            return None, wait
        taken = dict(zip(units, amounts, strict=True))
        return Reservation(provider, task, taken, booked=dict(booked) if booked else None), 0.0

    def book(
        self, provider: str, input_tokens: float, output_tokens: float, horizon: float
    ) -> tuple[dict[str, float] | None, float]:
        """At enqueue: book a call's turn on the provider's timetable. ``(booked, wait)``:
        what was booked per unit, its turn in ``wait`` seconds (the publish is delayed that
        long); ``(None, wait)``: not within ``horizon``, nothing booked. With the store
        unreachable, ``({}, 0.0)``."""
        units, specs = self._units(provider)
        amounts = _amounts(units, specs, input_tokens, output_tokens)
        try:
            booked, wait = self._store().budget_schedule(provider, units, specs, amounts, horizon)
        except StoreUnavailable as error:
            logger.warning("provider timetable for %r unchecked: %s", provider, error)
            return {}, 0.0
        return (dict(zip(units, amounts, strict=True)) if booked else None), wait

    def take(self, provider: str) -> float:
        """One request's worth of the budget: 0.0 when granted, else seconds to wait."""
        return self.reserve(provider)[1]

    def settle(self, reservation: Reservation, usage: Usage) -> None:
        """The provider counted ``usage``: give back what the reservation (and the booking)
        took beyond it, or take what it took short (the next calls wait for it)."""
        counted = {unit: _cost(unit, usage.input_tokens, usage.output_tokens) for unit in reservation.taken}
        if reservation.settled:  # a second response in one call: its whole cost is extra
            deltas = {unit: -cost for unit, cost in counted.items()}
            booked: dict[str, float] = {}
        else:
            deltas = {unit: reservation.taken[unit] - cost for unit, cost in counted.items()}
            booked = {
                unit: amount - counted.get(unit, 0.0) for unit, amount in (reservation.booked or {}).items()
            }
        reservation.settled = True
        self.outputs.observe(reservation.task, usage.output_tokens)
        deltas.pop(REQUESTS, None)  # one call is one request, as estimated
        booked.pop(REQUESTS, None)
        self._adjust(
            reservation.provider,
            {unit: delta for unit, delta in deltas.items() if abs(delta) >= 1},
            {unit: delta for unit, delta in booked.items() if abs(delta) >= 1},
        )

    def give_back(self, reservation: Reservation) -> None:
        """The call failed before the provider counted its tokens: they are free again, on
        the buckets and on the timetable."""
        if reservation.settled:
            return
        reservation.settled = True
        self._adjust(
            reservation.provider,
            {unit: taken for unit, taken in reservation.taken.items() if unit != REQUESTS and taken > 0},
            {unit: amount for unit, amount in (reservation.booked or {}).items() if amount > 0},
        )

    def follow(self, provider: str, limits: Mapping[str, Limit]) -> None:
        """The provider's headers say what is left: no unit holds more, and a unit with
        nothing left is drained until the provider's reset."""
        for unit, budget in self._learned_units(provider):
            stated = limits.get(unit)
            if stated is not None and stated.limit is not None and stated.limit > 0:
                start, period = budget.rate.per_second, budget.rate.period
                self.learned.stated(provider, unit, start, stated.limit / period)
        units, specs = self._units(provider)
        caps: dict[str, float] = {}
        for unit, spec in zip(units, specs, strict=True):
            limit = limits.get(unit)
            if limit is None:
                continue
            if limit.remaining < 1:
                self._drain_unit(provider, unit, spec, limit.reset)
            elif limit.remaining < spec.capacity:  # a bucket never holds more than its burst
                caps[unit] = limit.remaining
        if caps:
            keys, _ = self._store().provider_units(provider, tuple(caps))
            by_unit = dict(zip(units, specs, strict=True))
            try:
                self._store().budget_cap(keys, [by_unit[unit] for unit in caps], list(caps.values()))
            except StoreUnavailable as error:
                logger.warning("could not follow the limits %r reported: %s", provider, error)

    def drain(self, provider: str, seconds: float | None) -> None:
        """The provider said 429: spend every unit for ``seconds`` (default: one period), and
        cut the learned ones."""
        for unit, budget in self._learned_units(provider):
            drained = seconds if seconds and seconds > 0 else budget.rate.period
            self.learned.cut(provider, unit, budget.rate.per_second, drained)
        units, specs = self._units(provider)
        for unit, spec in zip(units, specs, strict=True):
            self._drain_unit(provider, unit, spec, seconds)
        store = self._store()
        try:
            _, shard = store.provider_units(provider, units)
            count_provider_429(lambda fields: store.count(fields, shard), provider)
        except StoreUnavailable as error:
            logger.warning("could not count the 429 of %r: %s", provider, error)

    def _drain_unit(self, provider: str, unit: str, spec: BucketSpec, seconds: float | None) -> None:
        wait = seconds if seconds is not None and seconds > 0 else spec.grace_period
        store = self._store()
        try:
            keys, _ = store.provider_units(provider, (unit,))
            store.drain(keys[0], spec, wait)
        except StoreUnavailable as error:
            logger.warning("could not drain the %s of %r: %s", unit, provider, error)

    def _adjust(
        self, provider: str, deltas: Mapping[str, float], booked: Mapping[str, float] | None = None
    ) -> None:
        """Correct the buckets by ``deltas`` and the timetable by ``booked``, in one call."""
        booked = {
            unit: delta
            for unit, delta in (booked or {}).items()
            if self.providers[provider].unit(unit) is not None
        }
        if not deltas and not booked:
            return
        units, specs = self._units(provider)
        by_unit = dict(zip(units, specs, strict=True))
        store = self._store()
        try:
            keys, _ = store.provider_units(provider, tuple(deltas))
            store.budget_adjust(
                [*keys, *store.provider_timetable(provider, tuple(booked))],
                [by_unit[unit] for unit in (*deltas, *booked)],
                [*deltas.values(), *booked.values()],
            )
        except StoreUnavailable as error:
            logger.warning("could not reconcile the %r budget: %s", provider, error)
