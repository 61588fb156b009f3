"""celery-resilience: admission control, backpressure, circuit breakers and fallbacks for Celery.

Adopt it in three steps: subclass ``ResilientTask`` (or ``AITask`` for tasks that call an
AI provider), set ``resilience_*`` policies in ``app.conf``, and call ``Resilience(app)``
once where the app is created. ``with caller(user_id=..., tier=...)`` (or a web
framework's middleware from ``celery_resilience.web``) says who is publishing.
Everything else is reachable from its capability package: ``admission``, ``breakers``,
``fallbacks``, ``load``, ``monitoring`` and ``store``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .admission.caller import caller
from .ai_task import AITask
from .breakers.classification import Category, classify
from .breakers.machine import BreakerState
from .errors import (
    AdmissionUnavailable,
    CircuitOpen,
    ConfigurationError,
    FallbackExhausted,
    ResilienceError,
    StoreUnavailable,
    Throttled,
)
from .extension import Resilience
from .fallbacks.result import FallbackResult
from .task import ResilientTask

__all__ = [
    "Resilience",
    "caller",
    "ResilientTask",
    "AITask",
    "FallbackResult",
    "classify",
    "Category",
    "BreakerState",
    "ResilienceError",
    "ConfigurationError",
    "Throttled",
    "AdmissionUnavailable",
    "CircuitOpen",
    "FallbackExhausted",
    "StoreUnavailable",
    "__version__",
]

try:
    __version__ = version("celery-resilience")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
