"""The provider budgets' operations of ``RedisStore``: each unit's sliding window
(``budget.lua``), the timetable of queued calls (``schedule.lua``), the retry budget and
the learned rates, each one script and one round trip."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import Script

from ..admission.bucket import BucketSpec
from ..monitoring.counters import PROVIDER_SCOPE
from ..providers import learned
from ..providers.budget import AHEAD_SHARE, Said, Taken, Window
from ..providers.retry_budget import RetryBudget
from .base import MinuteClock
from .keys import KeySpace

__all__ = ["RedisBudgets"]


class RedisBudgets:
    """Mixed into ``RedisStore``, whose constructor sets these."""

    keys: KeySpace
    _clock: Callable[[], float] | None
    _metrics_ttl: int
    _minutes: MinuteClock
    _budget: Script
    _retry_budget: Script
    _schedule: Script
    _learn: Script

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def provider_windows(self, provider: str, units: tuple[str, ...]) -> tuple[list[str], int]:
        return self.keys.provider_windows(provider, units)

    def provider_timetable(self, provider: str, units: tuple[str, ...]) -> list[str]:
        return self.keys.provider_timetable(provider, units)

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
        metrics = self.keys.metrics(shard, self._minutes.minute(), PROVIDER_SCOPE)
        args = self._window_args("take", provider, entry, windows, [(a, -1.0, -1.0) for a in amounts])
        share = repr(AHEAD_SHARE) if watch else ""
        wait, ahead, lead, lead_for = self._call(self._budget, keys=[*keys, metrics], args=[*args, share])
        return Taken(float(wait), float(ahead) > 0, float(lead), float(lead_for))

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
        args = self._window_args("settle", "", entry, windows, [_said(unit) for unit in said])
        for spec, delta in zip(specs, deltas, strict=True):
            args += [repr(float(spec.capacity)), repr(spec.refill), repr(float(delta))]
        self._call(self._budget, keys=[*keys, *timetable], args=args)

    def budget_block(
        self,
        keys: Sequence[str],
        windows: Sequence[Window],
        seconds: Sequence[float],
        again: float | None = None,
        periods: Sequence[float] | None = None,
    ) -> list[tuple[float, float]]:
        counted = periods if periods is not None else [-1.0] * len(seconds)
        values = [
            (wait, -1.0 if again is None else again, period)
            for wait, period in zip(seconds, counted, strict=True)
        ]
        args = self._window_args("block", "", "", windows, values)
        found = [float(value) for value in self._call(self._budget, keys=list(keys), args=args)]
        return list(zip(found[0::2], found[1::2], strict=True))

    def _window_args(
        self,
        mode: str,
        provider: str,
        entry: str,
        windows: Sequence[Window],
        values: Sequence[tuple[float, float, float]],
    ) -> list[str]:
        """``budget.lua``'s arguments: per unit its count, span, and three values."""
        now_arg = "" if self._clock is None else repr(self._clock())
        args = [now_arg, mode, provider, str(self._metrics_ttl), entry, str(len(windows))]
        for window, (amount, left, reset) in zip(windows, values, strict=True):
            args += [
                repr(float(window.count)),
                repr(window.span),
                repr(float(amount)),
                repr(left),
                repr(reset),
            ]
        return args

    def retry_budget(self, provider: str, budget: RetryBudget, firsts: int, ask: bool) -> bool:
        now_arg = "" if self._clock is None else repr(self._clock())
        args = [now_arg, repr(budget.ratio), repr(budget.window), str(budget.minimum), str(budget.slices)]
        reply = self._call(
            self._retry_budget,
            keys=[self.keys.provider_retries(provider)],
            args=[*args, str(firsts), "1" if ask else "0"],
        )
        return bool(int(reply))

    def budget_schedule(
        self,
        provider: str,
        units: tuple[str, ...],
        specs: Sequence[BucketSpec],
        amounts: Sequence[float],
        horizon: float,
    ) -> tuple[bool, float]:
        args: list[str] = ["" if self._clock is None else repr(self._clock()), repr(horizon)]
        for spec, amount in zip(specs, amounts, strict=True):
            args += [repr(float(spec.capacity)), repr(spec.refill), repr(float(amount))]
        booked, wait = self._call(
            self._schedule, keys=self.keys.provider_timetable(provider, units), args=args
        )
        return bool(int(booked)), float(wait)

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
        now_arg = "" if self._clock is None else repr(self._clock())
        reply = self._call(
            self._learn,
            keys=[self.keys.provider_learned(provider)],
            args=[
                now_arg,
                unit,
                event,
                repr(start),
                repr(value),
                repr(learned.INCREASE),
                repr(learned.DECREASE),
                repr(learned.COOL_DOWN),
                repr(learned.FLOOR),
                repr(learned.PROBE),
                repr(learned.QUIET),
                repr(accepted),
                repr(learned.PROBE_TOP),
                repr(learned.SLOW_START),
                repr(held),
            ],
        )
        return float(reply)


def _said(unit: Said) -> tuple[float, float, float]:
    """What the provider said of a unit, as ``budget.lua`` reads it (-1: not said)."""
    return (
        -1.0 if unit.counted is None else unit.counted,
        -1.0 if unit.left is None else unit.left,
        -1.0 if unit.reset is None else unit.reset,
    )
