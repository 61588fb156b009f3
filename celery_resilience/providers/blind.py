"""A token budget that nothing settles is blind: every call keeps its reserved cost (the
prompt plus the whole output cap) for a full window, and the budget serves a fraction of
the account without a word. That happens when the SDK's HTTP client does not carry
``provider_hooks``, or when a streamed response carries no usage. Each process says so
once in its log, naming the provider and what to add, and counts the calls in the
metrics, where ``status`` shows them (``blind_budgets``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import StoreUnavailable
from ..monitoring.counters import count_unsettled
from .port import ProviderStore

__all__ = ["BlindBudgets", "hint"]

logger = logging.getLogger("celery_resilience.quota")

# Seconds between two writes of the counts to the store, per process.
FLUSH_EVERY = 1.0


def hint(provider: str, streamed: bool) -> str:
    """What to add so that the provider's responses settle its budget."""
    if streamed:
        return (
            f"streamed responses of {provider!r} end without usage: ask for it "
            "(OpenAI: stream_options={'include_usage': True}; Anthropic sends it)"
        )
    return (
        f"no response settled a call of {provider!r}: give its SDK an HTTP client with "
        f"event_hooks=Resilience.of(app).provider_hooks({provider!r})"
    )


class BlindBudgets:
    """Counts calls a token budget could not settle, and warns once per provider."""

    def __init__(self, store: Callable[[], ProviderStore]) -> None:
        self._store = store
        self._warned: set[tuple[str, bool]] = set()
        self._pending: dict[str, int] = {}
        self._flushed = 0.0
        self._lock = threading.Lock()

    def unsettled(self, provider: str, task: str, streamed: bool) -> None:
        with self._lock:
            first = (provider, streamed) not in self._warned
            self._warned.add((provider, streamed))
            self._pending[provider] = self._pending.get(provider, 0) + 1
            due = time.monotonic() - self._flushed >= FLUSH_EVERY
            if due:
                pending, self._pending = self._pending, {}
                self._flushed = time.monotonic()
        if first:
            logger.warning(
                "the token budget of %r is blind (task %s): %s; until then each call counts "
                "its whole reservation for a full window",
                provider,
                task,
                hint(provider, streamed),
            )
        if due:
            self._flush(pending)

    def _flush(self, pending: dict[str, int]) -> None:
        store = self._store()
        try:
            for provider, calls in pending.items():
                count_unsettled(store.count, provider, calls)
        except StoreUnavailable as error:
            logger.debug("unsettled calls not counted: %s", error)
