"""Shared state behind one interface; ``open_store`` picks the implementation from a URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..keys import KeySpace
from .base import AdmitRequest, Clock, Store
from .memory import MemoryStore

__all__ = ["Store", "AdmitRequest", "MemoryStore", "open_store", "masked_url"]


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


def masked_url(url: str) -> str:
    """The URL as logs and messages may show it: any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
