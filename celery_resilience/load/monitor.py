"""The load monitor: severity and rate multipliers from the whole cluster's signals.

It is the ``SeveritySource`` admission asks on every publish, and the source of the
adaptive multiplier. Both answers come from values refreshed at most once per
``resilience_adaptive_interval``:
- the workers' heartbeats: one store read, ignoring stale ones;
- queue depths: probed per queue at most once per ``resilience_depth_interval``;
- breaker states: this process's breaker cache, no round trip;
- the demand predicted for the current hour (which scales limits) and the next one
  (announced ahead): recomputed when the hour changes, after the previous hour's
  demand is added to the history.

No publish waits for more than a dictionary lookup once the values are fresh.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import StoreUnavailable
from .port import LoadStore
from .prediction import Prediction, hour_index, predict
from .queue_depth import QueueDepths
from .settings import LoadSettings
from .signals import (
    ClusterHealth,
    LoadFactors,
    QueueThresholds,
    Severity,
    api_multiplier,
    cluster_health,
    health_severity,
    queue_multiplier,
    queue_severity,
    step_multiplier,
    worst,
)

__all__ = ["LoadMonitor"]

logger = logging.getLogger("celery_resilience.monitor")


class LoadMonitor:
    def __init__(
        self,
        settings: LoadSettings,
        store: Callable[[], LoadStore],
        depths: QueueDepths | None,
        breaker_state: Callable[[str], str | None],
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.events: deque[Prediction] = deque(maxlen=100)
        self.health: ClusterHealth | None = None
        self.prediction: Prediction | None = None
        self.upcoming: Prediction | None = None
        self._store = store
        self._depths = depths
        self._breaker_state = breaker_state
        self._monotonic = clock.monotonic
        self._fresh_until = -math.inf
        self._health_severity = Severity.NORMAL  # what self.health says, kept per refresh
        self._multipliers: dict[tuple[object, ...], float] = {}
        # Situations that change only with a refresh (no depth probe, no breaker behind
        # them), by (queue, breaker): a publish's answer is then one lookup.
        self._settled: dict[tuple[str | None, str | None], tuple[Severity, float]] = {}
        self._load_minute = -1
        self._lock = threading.Lock()

    # -- what admission asks -----------------------------------------------------------------

    def severity(self, queue: str | None) -> Severity:
        self._refresh()
        return self._with_health(self._queue_severity(queue))

    def situation(self, queue: str | None, breaker: str | None) -> tuple[Severity, float]:
        """The severity and the multiplier together, from one freshness check and one
        probe of the queue: admission asks both on every publish."""
        # A copy of _refresh's freshness check, inline for speed (tests/plugin/test_speed_copies.py).
        if self._monotonic() >= self._fresh_until:
            self._refresh()
        settled = self._settled.get((queue, breaker))
        if settled is not None:
            return settled
        of_queue = self._queue_severity(queue)
        key = (queue, breaker, of_queue, self._breaker_state(breaker) if breaker else None)
        found = self._multipliers.get(key)
        if found is None:
            found = self._multipliers[key] = round(self.factors(queue, breaker).product, 4)
        answer = self._with_health(of_queue), found
        if breaker is None and self._thresholds(queue) is None:
            self._settled[(queue, breaker)] = answer
        return answer

    def _with_health(self, of_queue: Severity) -> Severity:
        health = self._health_severity
        return health if of_queue is Severity.NORMAL else worst(health, of_queue)

    def factors(self, queue: str | None = None, breaker: str | None = None) -> LoadFactors:
        """Every factor on its own; their product scales the admitted rate."""
        self._refresh()
        steps = self.settings.resource_steps
        health = self.health
        state = self._breaker_state(breaker) if breaker is not None else None
        prediction = self.prediction
        acts = prediction is not None and prediction.acts(
            self.settings.prediction_confidence, self.settings.prediction_spike
        )
        return LoadFactors(
            resources=step_multiplier(health.usage, steps) if health is not None else 1.0,
            probes=step_multiplier(max(health.probes.values()), steps) if health and health.probes else 1.0,
            external_apis=api_multiplier([state]) if state is not None else 1.0,
            queue=queue_multiplier(self._queue_severity(queue)),
            predicted=1.0 / prediction.spike if acts and prediction is not None else 1.0,
        )

    def multiplier(self, queue: str | None = None, breaker: str | None = None) -> float:
        """The product of the factors, kept until the next refresh or depth probe changes them."""
        return self.situation(queue, breaker)[1]

    # -- refreshing --------------------------------------------------------------------------

    def _thresholds(self, queue: str | None) -> QueueThresholds | None:
        """The queue's depth thresholds, None when its depth is never probed."""
        if queue is None or self._depths is None:
            return None
        return self.settings.queue_thresholds.get(queue)

    def _queue_severity(self, queue: str | None) -> Severity:
        thresholds = self._thresholds(queue)
        if thresholds is None:
            return Severity.NORMAL
        assert queue is not None and self._depths is not None  # as _thresholds found them
        return queue_severity(self._depths.depth(queue), thresholds)

    def _refresh(self) -> None:
        # situation() repeats this check inline, for speed (tests/plugin/test_speed_copies.py).
        if self._monotonic() < self._fresh_until:
            return
        with self._lock:
            if self._monotonic() < self._fresh_until:
                return
            self._fresh_until = self._monotonic() + self.settings.adaptive_interval
            self._multipliers = {}
            self._settled = {}
            try:
                store = self._store()
                now = store.now()
                self.health = health = cluster_health(
                    store.read_health(), now, self.settings.health_stale_after
                )
                self._health_severity = (
                    health_severity(health, self.settings.severity_thresholds)
                    if health is not None
                    else Severity.NORMAL
                )
                minute = int(now // 60)
                if self.health is not None and minute != self._load_minute:
                    store.record_load(minute, self.health.usage)
                    self._load_minute = minute
                if self.settings.prediction_enabled:
                    self._predict(store, hour_index(now))
            except StoreUnavailable as error:
                logger.debug("load signals unavailable: %s", error)

    def _predict(self, store: LoadStore, hour: int) -> None:
        if self.prediction is not None and self.prediction.hour == hour:
            return
        history = store.demand_history()
        if hour - 1 not in history:
            requests = store.requests_in_hour(hour - 1)
            store.record_demand(hour - 1, requests)
            history[hour - 1] = requests
        confidence, spike = self.settings.prediction_confidence, self.settings.prediction_spike
        # This hour's prediction scales limits now; the next hour's is announced an hour
        # ahead, so that alerts can warn before the surge.
        self.prediction = predict(history, hour)
        self.upcoming = upcoming = predict(history, hour + 1)
        if upcoming.acts(confidence, spike):
            self.events.append(upcoming)
            logger.warning(
                "demand spike predicted for the next hour: %.1fx the usual (confidence %.2f); "
                "limits will be scaled by %.2f",
                upcoming.spike,
                upcoming.confidence,
                1.0 / upcoming.spike,
            )
