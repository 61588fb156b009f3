"""Predicted demand from the same hour in past weeks: pure, time passed in.

History is kept per hour of week (``0`` = Monday 00:00 UTC ... ``167`` = Sunday 23:00),
one count per completed hour. The prediction for an hour is the mean of that hour in
the past weeks; its spike factor is that mean over the typical hour (the median of all
recorded hours); its confidence grows with the number of weeks seen and shrinks with
how much those weeks disagree. The reference acts when confidence > 0.8 and the spike
factor > 2.0, shrinking limits by 1/spike for that hour, ahead of the surge.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Prediction", "predict", "hour_of_week", "hour_index", "SECONDS_PER_HOUR", "HOURS_PER_WEEK"]

SECONDS_PER_HOUR = 3600
HOURS_PER_WEEK = 168
_EPOCH_MONDAY_OFFSET = 3 * 24  # 1970-01-01 was a Thursday: hour 0 of the epoch is hour 72 of its week
_FULL_CONFIDENCE_WEEKS = 3


@dataclass(frozen=True, slots=True)
class Prediction:
    hour: int  # absolute hour index (epoch seconds // 3600)
    expected: float
    spike: float
    confidence: float
    weeks: int

    def acts(self, confidence: float = 0.8, spike: float = 2.0) -> bool:
        return self.confidence > confidence and self.spike > spike


def hour_index(now: float) -> int:
    return int(now // SECONDS_PER_HOUR)


def hour_of_week(hour: int) -> int:
    return (hour + _EPOCH_MONDAY_OFFSET) % HOURS_PER_WEEK


def predict(history: Mapping[int, float], hour: int) -> Prediction:
    """Predict the demand of absolute ``hour`` from ``history`` (absolute hour -> count)."""
    same_hour = [
        history[h]
        for h in range(hour - HOURS_PER_WEEK, min(history, default=hour) - 1, -HOURS_PER_WEEK)
        if h in history
    ]
    if not same_hour or len(history) < HOURS_PER_WEEK // 2:
        return Prediction(hour, 0.0, 1.0, 0.0, len(same_hour))
    expected = statistics.fmean(same_hour)
    typical = statistics.median(history.values())
    spike = expected / typical if typical > 0 else 1.0
    spread = statistics.pstdev(same_hour) / expected if expected > 0 and len(same_hour) > 1 else 1.0
    confidence = min(1.0, len(same_hour) / _FULL_CONFIDENCE_WEEKS) * max(0.0, 1.0 - spread)
    return Prediction(hour, expected, spike, confidence, len(same_hour))
