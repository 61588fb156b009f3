"""The provider quota guard: stay under a provider's own limits instead of finding them by 429s.

Before each call a worker reserves the call's cost in every unit the provider's budget
counts (a request, and the estimated tokens), in sliding windows every worker shares. A
spent budget names the wait; the caller runs again then, without calling the provider
and without counting a failure. After the call, the reservation is settled to what the
provider counted (the response's ``usage``) and the windows are brought into line with
what the provider says is left (its rate-limit headers), in one round trip. A 429 anyway
fills the windows for the wait the provider named, or for the rest of the period.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import StoreUnavailable
from ..monitoring.counters import count_provider_429
from .blind import BlindBudgets
from .budget import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, ProviderBudget, Said, UnitBudget, Window
from .learned import LearnedRates
from .port import ProviderStore
from .settings import ProviderSettings
from .usage import Limit, OutputObserver, Usage, estimate_tokens

__all__ = ["ProviderQuota", "Reservation", "current_reservation", "reserved_for"]

# ``retry-after`` is in whole seconds, rounded up: the provider takes a call again, on
# average, this much sooner than it says.
ROUNDED_BY = 0.5

logger = logging.getLogger("celery_resilience.quota")

# A success grows a learned unit only while calls waited for the budget this recently:
# a budget that holds nothing back has not found the provider's limit.
HELD_BACK_SECONDS = 1.0
# Weight of each call's reservation in a token unit's mean (an exponential moving average).
MEAN_SMOOTHING = 0.05


@dataclass(slots=True)
class Reservation:
    """What one call took from its provider's budget, until the provider's count settles it."""

    provider: str
    task: str
    taken: dict[str, float]
    # The call's entry in every unit's window.
    entry: str = field(default_factory=lambda: secrets.token_hex(8))
    settled: bool = field(default=False)
    # What the provider counted, over every response of the call so far.
    counted: dict[str, float] = field(default_factory=dict)
    # What the call booked on the provider's timetable when it was published, if it did.
    booked: dict[str, float] | None = None
    # A streamed response whose events carried no usage (settled by nothing).
    streamed: bool = False


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
    units: Sequence[str], windows: Sequence[Window], input_tokens: float, output_tokens: float
) -> list[float]:
    """A call's cost in each unit; above a unit's count, the whole count (it could never be
    granted otherwise)."""
    return [
        min(window.count, _cost(unit, input_tokens, output_tokens))
        for unit, window in zip(units, windows, strict=True)
    ]


class ProviderQuota:
    def __init__(
        self, settings: ProviderSettings, store: Callable[[], ProviderStore], clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.providers: Mapping[str, ProviderBudget] = dict(settings.budgets)
        self._fair = settings.fair  # budgets whose takes say when they run ahead (fair shares)
        self.outputs = OutputObserver()
        self.learned = LearnedRates(store, clock)
        self.blind = BlindBudgets(store)
        self._counter = settings.token_counter
        self._store, self._clock = store, clock
        self._fixed: dict[str, tuple[tuple[str, ...], tuple[Window, ...]]] = {
            name: (tuple(unit for unit, _ in budget.units), tuple(b.window() for _, b in budget.units))
            for name, budget in self.providers.items()
            if not any(b.learned for _, b in budget.units)
        }
        self._held_back: dict[str, float] = {}  # provider -> when a call last had to wait
        self._ahead: dict[str, float] = {}  # provider -> when a take last found it running ahead
        # provider -> the calls its window then held beyond its rate, and for how long
        self._lead: dict[str, tuple[float, float]] = {}
        # (provider, unit) -> the mean a call reserves of a token unit (for fair shares).
        self._means: dict[tuple[str, str], float] = {}

    def _units(self, provider: str) -> tuple[tuple[str, ...], tuple[Window, ...]]:
        """Each unit and its window now: learned units at their shared learned rate."""
        fixed = self._fixed.get(provider)
        if fixed is not None:
            return fixed
        budget = self.providers[provider]
        windows = tuple(
            b.at(self.learned.rate(provider, unit, b.rate.per_second)).window() if b.learned else b.window()
            for unit, b in budget.units
        )
        return tuple(unit for unit, _ in budget.units), windows

    def _learned_units(self, provider: str) -> list[tuple[str, UnitBudget]]:
        """The provider's learned units (their ``rate`` is the starting guess)."""
        if provider in self._fixed or provider not in self.providers:
            return []
        return [(unit, b) for unit, b in self.providers[provider].units if b.learned]

    def counts_tokens(self, provider: str) -> bool:
        budget = self.providers.get(provider)
        return budget is not None and any(unit != REQUESTS for unit, _ in budget.units)

    def count(self, fields: Mapping[str, float]) -> None:
        """Add to the store's metrics; an outage is logged, never raised."""
        try:
            self._store().count(fields)
        except StoreUnavailable as error:
            logger.debug("could not count %s: %s", dict(fields), error)

    def held_back(self, provider: str) -> None:
        """A call waited for the budget before it got here (its turn on the timetable at
        enqueue): for a learned unit, as telling as a wait in the worker."""
        self._held_back[provider] = self._clock.monotonic()

    def holding_back(self, provider: str) -> bool:
        """Whether a call waited for the budget in this process lately: the budget, not
        the callers, sets the pace."""
        held_back = self._held_back.get(provider)
        return held_back is not None and self._clock.monotonic() - held_back <= HELD_BACK_SECONDS

    def running_ahead(self, provider: str) -> bool:
        """Whether a call taken in this process lately found the budget spent faster than
        its rate (``budget.running_ahead``): a flood, seen before the window is full."""
        ahead = self._ahead.get(provider)
        return ahead is not None and self._clock.monotonic() - ahead <= HELD_BACK_SECONDS

    def lead(self, provider: str) -> tuple[float, float]:
        """While ``running_ahead``: the calls the budget's window held beyond its rate when a
        take last found it so, and the seconds left until the oldest leaves it
        (``budget.lead``); else nothing."""
        if not self.running_ahead(provider):
            return 0.0, 0.0
        calls, seconds = self._lead[provider]
        return calls, max(0.0, seconds - (self._clock.monotonic() - self._ahead[provider]))

    def calls_per_second(self, provider: str) -> float:
        """The calls a second the budget serves now: its tightest unit's rate over the mean
        a call reserves of it in this process (0.0 before a call of a token unit)."""
        if provider not in self.providers:
            return 0.0
        units, windows = self._units(provider)
        rates = []
        for unit, window in zip(units, windows, strict=True):
            mean = 1.0 if unit == REQUESTS else self._means.get((provider, unit), 0.0)
            if mean <= 0:
                return 0.0
            rates.append(window.count / window.span / mean)
        return min(rates, default=0.0)

    def succeeded(self, provider: str, reservation: Reservation | None = None) -> None:
        """A call went through: learned units grow while they are what holds calls back; a
        token reservation that nothing settled is a blind budget."""
        if reservation is not None and not reservation.settled and self.counts_tokens(provider):
            self.blind.unsettled(provider, reservation.task, reservation.streamed)
        learned = self._learned_units(provider)
        if not learned:
            return
        if not self.holding_back(provider):
            return
        for unit, budget in learned:
            self.learned.grew(provider, unit, budget.rate.per_second)

    def estimate(
        self, provider: str, task: str, prompt: str | None, max_tokens: float | None
    ) -> tuple[float, float]:
        """A call's input and output tokens, before it is made (zero for a budget of requests).

        Without ``max_tokens``, a stated limit is kept by reserving a high percentile of
        the task's outputs: no window of the provider's then holds more than its count.
        A unit learned from 429s (no response stated its limit) has its count where the
        provider refuses, so the mean is reserved: with the high percentile, the window
        would run under its count by the difference, and the provider refuse only once
        the count is past the limit by as much (the count would read high, and a probe
        meet the provider late)."""
        if not self.counts_tokens(provider):
            return 0.0, 0.0
        input_tokens = float(estimate_tokens(prompt, self._counter)) if prompt else 0.0
        if max_tokens is not None:
            return input_tokens, float(max_tokens)
        budget = self.providers[provider]
        units = [(unit, b) for unit, b in budget.units if unit != REQUESTS]
        found = all(b.learned and not self.learned.is_stated(provider, unit) for unit, b in units)
        output_tokens = self.outputs.mean(task) if found else self.outputs.estimate(task)
        return input_tokens, output_tokens

    def reserve(
        self,
        provider: str,
        task: str = "",
        input_tokens: float = 0.0,
        output_tokens: float = 0.0,
        booked: Mapping[str, float] | None = None,
    ) -> tuple[Reservation | None, float]:
        """Reserve a call's cost in every unit's window at once: ``(reservation, 0.0)`` when
        granted, ``(None, seconds to wait)`` when not. With the store unreachable the call
        is granted unchecked (the breaker still guards it)."""
        units, windows = self._units(provider)
        amounts = _amounts(units, windows, input_tokens, output_tokens)
        for unit, amount in zip(units, amounts, strict=True):
            if unit != REQUESTS:
                mean = self._means.get((provider, unit), amount)
                self._means[provider, unit] = mean + MEAN_SMOOTHING * (amount - mean)
        reservation = Reservation(
            provider, task, dict(zip(units, amounts, strict=True)), booked=dict(booked) if booked else None
        )
        store = self._store()
        try:
            keys, shard = store.provider_windows(provider, units)
            watch = provider in self._fair
            taken = store.budget_take(keys, shard, windows, amounts, provider, reservation.entry, watch)
        except StoreUnavailable as error:
            logger.warning("provider quota for %r unchecked: %s", provider, error)
            return None, 0.0
        wait = taken.wait
        if taken.ahead:
            self._ahead[provider] = self._clock.monotonic()
            self._lead[provider] = (taken.lead, taken.lead_for)
        if wait > 0:
            self._held_back[provider] = self._clock.monotonic()
            # The budget, not the provider, holds this call back: a learned unit is below
            # what the provider takes until a 429 says otherwise. A sliding window full of
            # the unit's own calls refuses every call until its oldest leave, so the
            # refusal itself must grow it: no call succeeds meanwhile.
            for unit, budget in self._learned_units(provider):
                self.learned.grew(provider, unit, budget.rate.per_second)
            return None, wait
        return reservation, 0.0

    def book(
        self, provider: str, input_tokens: float, output_tokens: float, horizon: float
    ) -> tuple[dict[str, float] | None, float]:
        """At enqueue: book a call's turn on the provider's timetable. ``(booked, wait)``:
        what was booked per unit, its turn in ``wait`` seconds (the publish is delayed that
        long); ``(None, wait)``: not within ``horizon``, nothing booked. With the store
        unreachable, ``({}, 0.0)``."""
        units, windows = self._units(provider)
        amounts = _amounts(units, windows, input_tokens, output_tokens)
        specs = [window.timetable() for window in windows]
        try:
            booked, wait = self._store().budget_schedule(provider, units, specs, amounts, horizon)
        except StoreUnavailable as error:
            logger.warning("provider timetable for %r unchecked: %s", provider, error)
            return {}, 0.0
        return (dict(zip(units, amounts, strict=True)) if booked else None), wait

    def take(self, provider: str) -> float:
        """One request's worth of the budget: 0.0 when granted, else seconds to wait."""
        return self.reserve(provider)[1]

    def settle(
        self, reservation: Reservation, usage: Usage, limits: Mapping[str, Limit] | None = None
    ) -> None:
        """The provider counted ``usage`` (over every response of the call, the sum): the
        call's entry counts that from now on, and the timetable gets back what was booked
        beyond it. ``limits``: what the same response's headers say is left."""
        first = not reservation.settled
        for unit in reservation.taken:
            reservation.counted[unit] = reservation.counted.get(unit, 0.0) + _cost(
                unit, usage.input_tokens, usage.output_tokens
            )
        reservation.counted[REQUESTS] = 1.0 if REQUESTS in reservation.taken else 0.0
        reservation.settled = True
        self.outputs.observe(reservation.task, usage.output_tokens)
        booked = (
            {
                unit: amount - reservation.counted.get(unit, 0.0)
                for unit, amount in (reservation.booked or {}).items()
                if unit != REQUESTS
            }
            if first
            else {}
        )
        self._update(reservation.provider, reservation, dict(reservation.counted), limits or {}, booked)

    def give_back(self, reservation: Reservation) -> None:
        """The call failed before the provider counted its tokens: they are free again, in
        the windows and on the timetable (the request stays counted: it may have arrived)."""
        if reservation.settled:
            return
        reservation.settled = True
        counted = {unit: (1.0 if unit == REQUESTS else 0.0) for unit in reservation.taken}
        booked = {unit: amount for unit, amount in (reservation.booked or {}).items() if unit != REQUESTS}
        self._update(reservation.provider, reservation, counted, {}, booked)

    def follow(self, provider: str, limits: Mapping[str, Limit]) -> None:
        """The provider's headers say what is left, outside any call's settlement: no
        window holds more, and a unit with nothing left is full until the provider's reset."""
        if provider not in self.providers:
            return
        self._update(provider, None, {}, limits, {})

    def _update(
        self,
        provider: str,
        reservation: Reservation | None,
        counted: Mapping[str, float],
        limits: Mapping[str, Limit],
        booked: Mapping[str, float],
    ) -> None:
        """One round trip: the call's entry to what was counted, each window to what the
        headers say is left, the timetable corrected by ``booked``. Nothing to say: no trip."""
        for unit, budget in self._learned_units(provider):
            stated = limits.get(unit)
            if stated is not None and stated.limit is not None and stated.limit > 0:
                start, period = budget.rate.per_second, budget.rate.period
                self.learned.stated(provider, unit, start, stated.limit / period)
        units, windows = self._units(provider)
        said = [
            Said(
                counted.get(unit) if reservation is not None else None,
                *((limits[unit].remaining, limits[unit].reset) if unit in limits else (None, None)),
            )
            for unit in units
        ]
        corrections = {unit: delta for unit, delta in booked.items() if unit in units and abs(delta) >= 1}
        if all(unit.counted is None and unit.left is None for unit in said) and not corrections:
            return
        by_unit = dict(zip(units, windows, strict=True))
        store = self._store()
        try:
            keys, _ = store.provider_windows(provider, units)
            store.budget_settle(
                keys,
                windows,
                reservation.entry if reservation is not None else "",
                said,
                store.provider_timetable(provider, tuple(corrections)),
                [by_unit[unit].timetable() for unit in corrections],
                list(corrections.values()),
            )
        except StoreUnavailable as error:
            logger.warning("could not reconcile the %r budget: %s", provider, error)

    def drain(self, provider: str, seconds: float | None) -> None:
        """The provider said 429: nothing fits for ``seconds`` (default: one period), and
        the learned units are cut to what the window held when the provider refused."""
        units, windows = self._units(provider)
        budget = self.providers[provider]
        said = seconds if seconds is not None and seconds > 0 else None
        unit_budgets = [b for b in (budget.unit(unit) for unit in units) if b is not None]
        waits = [said if said is not None else b.rate.period for b in unit_budgets]
        store = self._store()
        try:
            keys, shard = store.provider_windows(provider, units)
            periods = [b.rate.period for b in unit_budgets]
            found = store.budget_block(keys, windows, waits, _again(said), periods)
            held = dict(zip(units, found, strict=True))
            count_provider_429(lambda fields: store.count(fields, shard), provider)
        except StoreUnavailable as error:
            logger.warning("could not drain the %r budget: %s", provider, error)
            held = {}
        for unit, unit_budget in self._learned_units(provider):
            drained = said if said is not None else unit_budget.rate.period
            before, shown = held.get(unit, (0.0, 0.0))
            # With the provider's wait, the window shows its limit: what the provider will
            # count when it takes a call again. Without it, what it held when refused.
            period = unit_budget.rate.period
            accepted = (shown if said is not None else before) / period
            self.learned.cut(provider, unit, unit_budget.rate.per_second, drained, accepted, before / period)


def _again(said: float | None) -> float | None:
    """When the provider takes a call again, from its ``retry-after`` (None: not said)."""
    if said is None:
        return None
    return said - ROUNDED_BY if said >= 1 and said == int(said) else said
