"""The HTTP client hooks against a real provider endpoint on loopback, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx2
import pytest
from celery_resilience_harness.simulation.token_provider import TokenLimits, TokenProvider

from celery_resilience.clock import SYSTEM_CLOCK
from celery_resilience.providers.hooks import async_response_hook, response_hook
from celery_resilience.providers.quota import ProviderQuota, reserved_for
from celery_resilience.providers.settings import read_provider_settings
from celery_resilience.store import MemoryStore
from celery_resilience.store.keys import KeySpace
from celery_resilience.validation import SettingsReader

CHAT = {"model": "m", "max_tokens": 300, "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
def provider() -> Iterator[TokenProvider]:
    server = TokenProvider(TokenLimits(tokens=100_000), window=60, output_median=20, output_p99=20)
    yield server
    server.close()


def quota() -> ProviderQuota:
    conf = {"resilience_providers": {"p": {"tokens": "400/m"}}}
    store = MemoryStore(KeySpace("hooks", 1))
    return ProviderQuota(read_provider_settings(SettingsReader(conf)), lambda: store)


def test_a_response_settles_the_call_it_answers(provider: TokenProvider) -> None:
    """Reserved 302, the provider counted 22: after the response, a second call of 302 fits."""
    guard = quota()
    reservation, _ = guard.reserve("p", "t", 2, 300)
    assert reservation is not None
    hooks = {"response": [response_hook(guard, "p", SYSTEM_CLOCK)]}
    with httpx2.Client(event_hooks=hooks) as client, reserved_for(reservation):
        client.post(f"{provider.url}/chat/completions", json=CHAT).raise_for_status()
    assert reservation.settled
    assert guard.reserve("p", "t", 2, 300)[1] == 0


def test_an_async_client_settles_the_same_way(provider: TokenProvider) -> None:
    """The async hook reads the body with aread and settles inside the task's context."""
    guard = quota()
    reservation, _ = guard.reserve("p", "t", 2, 300)
    assert reservation is not None

    async def call() -> None:
        hooks = {"response": [async_response_hook(guard, "p", SYSTEM_CLOCK)]}
        async with httpx2.AsyncClient(event_hooks=hooks) as client:
            with reserved_for(reservation):
                (await client.post(f"{provider.url}/chat/completions", json=CHAT)).raise_for_status()

    asyncio.run(call())
    assert reservation.settled
    assert guard.reserve("p", "t", 2, 300)[1] == 0


def test_a_response_outside_a_guarded_call_still_steers_by_its_headers(provider: TokenProvider) -> None:
    """No reservation: nothing is settled, but a provider saying nothing is left spends the budget."""
    provider.remaining = 0
    guard = quota()
    with httpx2.Client(event_hooks={"response": [response_hook(guard, "p", SYSTEM_CLOCK)]}) as client:
        client.post(f"{provider.url}/chat/completions", json=CHAT).raise_for_status()
    assert guard.reserve("p", "t", 1, 0)[1] == pytest.approx(60.0, abs=1.0)
