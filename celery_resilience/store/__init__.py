"""Shared state behind one interface; ``open_store`` picks the implementation from a URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..clock import Clock
from .base import Store
from .keys import KeySpace
from .memory import MemoryStore
from .redis import RedisStore
from .topology import unreachable

__all__ = ["Store", "KeySpace", "MemoryStore", "RedisStore", "open_store", "masked_url", "store_problem"]


def open_store(
    url: str,
    keys: KeySpace,
    *,
    timeout: float = 0.25,
    clock: Clock | None = None,
    metrics_ttl: int = 7200,
    options: Mapping[str, Any] | None = None,
) -> Store:
    """``memory://`` gives a ``MemoryStore``; the Redis URLs of ``topology`` (one server, a
    Cluster, Sentinel's master) a ``RedisStore`` (on the server's clock unless one is given)."""
    if url.startswith("memory://"):
        if clock is None:
            return MemoryStore(keys, metrics_ttl=metrics_ttl)
        return MemoryStore(keys, clock=clock, metrics_ttl=metrics_ttl)
    return RedisStore(url, keys, timeout=timeout, clock=clock, metrics_ttl=metrics_ttl, options=options)


def store_problem(url: str, timeout: float, options: Mapping[str, Any] | None = None) -> str | None:
    """Why the store at ``url`` does not answer now, or None when it does (or is in memory)."""
    return None if url.startswith("memory://") else unreachable(url, timeout, options)


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
