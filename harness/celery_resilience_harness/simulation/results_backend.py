"""A result backend in this process's memory for the embedded simulation.

Celery's ``cache+memory://`` keeps its results in one LRU of 5,000 entries for the whole
process: a long scenario would evict answers before the load generator reads them, and
count them as lost. This one keeps everything until the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from celery.backends.base import KeyValueStoreBackend

__all__ = ["InProcessBackend", "URL"]

URL = "celery_resilience_harness.simulation.results_backend:InProcessBackend"


class InProcessBackend(KeyValueStoreBackend):
    _data: ClassVar[dict[Any, Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get(self, key: Any) -> Any:
        return self._data.get(key)

    def mget(self, keys: Sequence[Any]) -> list[Any]:
        data = self._data
        return [data.get(key) for key in keys]

    def set(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value

    def delete(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: Any) -> int:
        with self._lock:
            value = int(self._data.get(key) or 0) + 1
            self._data[key] = value
            return value

    def expire(self, key: Any, value: Any) -> None:
        return None

    @classmethod
    def clear(cls) -> None:
        with cls._lock:
            cls._data.clear()
