"""The token-counting provider through the official SDKs: its limits, headers, usage and switches."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from celery_resilience_harness.simulation.token_provider import TokenLimits, TokenProvider

from celery_resilience.providers.usage import limits_from_headers, usage_from_body
from celery_resilience.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


def served(provider: TokenProvider) -> Iterator[TokenProvider]:
    yield provider
    provider.close()


@pytest.fixture
def openai_style(clock: FakeClock) -> Iterator[TokenProvider]:
    yield from served(TokenProvider(TokenLimits(requests=100, tokens=1000), window=60, clock=clock.now))


@pytest.fixture
def anthropic_style(clock: FakeClock) -> Iterator[TokenProvider]:
    limits = TokenLimits(requests=100, input_tokens=1000, output_tokens=200)
    yield from served(TokenProvider(limits, window=60, style="anthropic", clock=clock.now))


def test_openai_style_charges_the_cap_at_arrival_and_answers_with_usage(openai_style: TokenProvider) -> None:
    """A call asking 900 tokens of output is refused once 200 are used, though it would use 50."""
    client = openai.OpenAI(base_url=openai_style.url, api_key="k", max_retries=0)
    first = client.chat.completions.with_raw_response.create(
        model="m", max_tokens=300, messages=[{"role": "user", "content": "answer in 196 tokens"}]
    )
    usage = usage_from_body(first.parse().model_dump())
    assert usage is not None and usage.output_tokens == 196
    limits = limits_from_headers(dict(first.headers), 1_000_000.0)
    assert limits["tokens"].remaining == 1000 - usage.total
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="m", max_tokens=900, messages=[{"role": "user", "content": "answer in 50 tokens"}]
        )


def test_anthropic_style_counts_output_apart_and_as_produced(anthropic_style: TokenProvider) -> None:
    """Output tokens fill their own bucket; once full, calls are refused with Anthropic's headers."""
    client = anthropic.Anthropic(base_url=anthropic_style.url.removesuffix("/v1"), api_key="k", max_retries=0)
    answer = client.messages.with_raw_response.create(
        model="m", max_tokens=1000, messages=[{"role": "user", "content": "answer in 200 tokens"}]
    )
    usage = usage_from_body(answer.parse().model_dump())
    assert usage is not None and usage.output_tokens == 200
    limits = limits_from_headers(dict(answer.headers), 1_000_000.0)
    assert (
        limits["output_tokens"].remaining == 0
        and limits["input_tokens"].remaining == 1000 - usage.input_tokens
    )
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def test_the_window_slides_and_the_hidden_limit_can_change(
    openai_style: TokenProvider, clock: FakeClock
) -> None:
    """Refused at the limit, served again once the window has passed, refused again at a halved limit."""
    client = openai.OpenAI(base_url=openai_style.url, api_key="k", max_retries=0)

    def ask(output: int) -> None:
        client.chat.completions.create(
            model="m", max_tokens=output, messages=[{"role": "user", "content": f"answer in {output} tokens"}]
        )

    ask(900)
    with pytest.raises(openai.RateLimitError):
        ask(200)
    clock.advance(61)
    openai_style.set_limits(tokens=500)
    with pytest.raises(openai.RateLimitError):
        ask(600)
    ask(400)


def test_without_headers_the_provider_says_nothing_of_its_limits(clock: FakeClock) -> None:
    """A provider or gateway that sends no rate-limit headers still answers with usage."""
    provider = TokenProvider(TokenLimits(tokens=1000), window=60, headers=False, clock=clock.now)
    try:
        client = openai.OpenAI(base_url=provider.url, api_key="k", max_retries=0)
        answer = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hello"}]
        )
    finally:
        provider.close()
    assert limits_from_headers(dict(answer.headers), 1_000_000.0) == {}
    assert answer.parse().usage is not None


def test_output_sizes_spread_like_real_traffic() -> None:
    """Over many prompts the drawn output sizes have a median near 300 and a p99 near 2000."""
    provider = TokenProvider(TokenLimits(tokens=1), window=60)
    try:
        sizes = sorted(provider.output_for(f"question {i}", None) for i in range(4000))
    finally:
        provider.close()
    assert 270 <= sizes[2000] <= 330
    assert 1700 <= sizes[3960] <= 2300
