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
from collections.abc import Callable

from ..errors import StoreUnavailable
from ..monitoring.counters import count_unsettled
from .port import ProviderStore

__all__ = ["BlindBudgets", "hint"]

logger = logging.getLogger("celery_resilience.quota")


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
        self._lock = threading.Lock()

    def unsettled(self, provider: str, task: str, streamed: bool) -> None:
        with self._lock:
            first = (provider, streamed) not in self._warned
            self._warned.add((provider, streamed))
        if first:
            logger.warning(
                "the token budget of %r is blind (task %s): %s; until then each call counts "
                "its whole reservation for a full window",
                provider,
                task,
                hint(provider, streamed),
            )
        try:
            count_unsettled(self._store().count, provider, 1, streamed)
        except StoreUnavailable as error:
            logger.debug("unsettled call not counted: %s", error)
