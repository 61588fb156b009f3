"""Shared state behind one interface; ``open_store`` picks the implementation from a URL."""

from __future__ import annotations

from ..keys import KeySpace
from .base import AdmitRequest, Clock, Store
from .memory import MemoryStore

__all__ = ["Store", "AdmitRequest", "MemoryStore", "open_store"]


def open_store(
    url: str,
    keys: KeySpace,
    *,
    timeout: float = 0.25,
    clock: Clock | None = None,
    metrics_ttl: int = 7200,
) -> Store:
    """``memory://`` gives a ``MemoryStore``; ``redis://``, ``rediss://`` and ``unix://`` a ``RedisStore``."""
    if url.startswith("memory://"):
        if clock is None:
            return MemoryStore(keys, metrics_ttl=metrics_ttl)
        return MemoryStore(keys, clock=clock, metrics_ttl=metrics_ttl)
    from .redis import RedisStore  # redis is imported only when a Redis store is asked for

    return RedisStore(url, keys, timeout=timeout, clock=clock, metrics_ttl=metrics_ttl)
