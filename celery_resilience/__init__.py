"""celery-resilience: admission control, backpressure, circuit breakers and fallbacks for Celery.

Adopt it in three steps: subclass ``ResilientTask``, set ``resilience_*`` policies in
``app.conf``, and call ``Resilience(app)`` once where the app is created.
"""

from __future__ import annotations

from .admission import CallContext, Verdict
from .ai_task import AITask
from .breaker import BreakerState
from .bucket import Decision
from .classify import Category, Classification, classify
from .errors import (
    AdmissionUnavailable,
    CircuitOpen,
    ConfigurationError,
    ResilienceError,
    StoreUnavailable,
    Throttled,
)
from .extension import Resilience
from .fallback import FallbackExhausted
from .fallback_result import FallbackResult
from .policy import Criticality, Severity, StrategyKind
from .rates import Rate, parse_rate
from .task import ResilientTask

__all__ = [
    "Resilience",
    "ResilientTask",
    "AITask",
    "Throttled",
    "CircuitOpen",
    "FallbackResult",
    "FallbackExhausted",
    "classify",
    "Category",
    "Classification",
    "BreakerState",
    "AdmissionUnavailable",
    "ConfigurationError",
    "ResilienceError",
    "StoreUnavailable",
    "CallContext",
    "Verdict",
    "Decision",
    "Severity",
    "Criticality",
    "StrategyKind",
    "Rate",
    "parse_rate",
]

__version__ = "0.1.0"
