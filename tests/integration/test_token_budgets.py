"""Token budgets with real workers, the OpenAI SDK and a provider counting tokens over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from types import ModuleType
from typing import Any

import pytest
from celery.signals import before_task_publish
from celery_resilience_harness.simulation.token_provider import TokenLimits, TokenProvider

from celery_resilience import FallbackResult, Resilience, Throttled
from celery_resilience.cli import status_report
from tests.integration.conftest import start_worker, stop_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokens(integration_env: dict[str, str]) -> Iterator[tuple[ModuleType, dict[str, str]]]:
    from tests.integration import tokenapp

    run = uuid.uuid4().hex[:6]
    workers = [
        start_worker(integration_env, "tests.integration.tokenapp", tokenapp.QUEUE, concurrency=2,
                     extra=["-n", f"tokens{i}-{run}@%h"])
        for i in range(2)
    ]  # fmt: skip
    try:
        for _ in workers:
            assert tokenapp.ping.delay().get(timeout=60) == "pong"
        yield tokenapp, integration_env
    finally:
        for worker in workers:
            stop_worker(worker)
        Resilience.of(tokenapp.app).store.purge()


@pytest.fixture
def app(tokens: tuple[ModuleType, dict[str, str]]) -> Iterator[ModuleType]:
    """The token app with every budget full."""
    tokenapp, _ = tokens
    Resilience.of(tokenapp.app).store.purge()
    yield tokenapp


def answered_by_provider(results: list[Any]) -> int:
    return sum(not isinstance(result, FallbackResult) for result in results)


def in_turn(app: ModuleType, prompts: list[str], url: str) -> list[Any]:
    """One call after another, each waited for: what fits is decided by what the last gave back."""
    return [app.ask.delay(prompt, url).get(timeout=60) for prompt in prompts]


def test_what_a_call_did_not_use_is_given_back(app: ModuleType) -> None:
    """Each call reserves 300 output tokens but uses 20: settled, six calls fit a 700-token window."""
    provider = TokenProvider(TokenLimits(tokens=100_000), window=60, output_median=20, output_p99=20)
    try:
        results = in_turn(app, [f"short question {i}" for i in range(6)], provider.url)
    finally:
        provider.close()
    assert answered_by_provider(results) == 6
    assert provider.statuses == [200] * 6


def test_a_call_that_failed_before_the_provider_counted_it_gives_its_tokens_back(app: ModuleType) -> None:
    """A 500 spends no tokens: the two calls after it both fit the window that three reservations exceed."""
    provider = TokenProvider(TokenLimits(tokens=100_000), window=60, output_median=20, output_p99=20)
    provider.fail_next = 1
    try:
        # Each uses what it reserved (300 out), so only a failed call gives anything back.
        results = in_turn(app, [f"question {i}, answer in 300 tokens" for i in range(3)], provider.url)
    finally:
        provider.close()
    assert isinstance(results[0], FallbackResult) and results[0].kind == "template"
    assert answered_by_provider(results[1:]) == 2
    assert provider.statuses == [500, 200, 200]


def test_the_providers_headers_spend_the_budget_for_every_worker(app: ModuleType) -> None:
    """A response saying no tokens are left stops every worker's calls until its reset, unsent."""
    provider = TokenProvider(TokenLimits(tokens=100_000), window=60, output_median=20, output_p99=20)
    provider.remaining = 0  # another client of the same key has used the rest
    try:
        first = app.ask.delay("first question", provider.url).get(timeout=60)
        later = [app.ask.delay(f"question {i}", provider.url) for i in range(4)]
        results = [result.get(timeout=60) for result in later]
    finally:
        provider.close()
    assert not isinstance(first, FallbackResult)
    assert all(isinstance(result, FallbackResult) and "budget" in result.reason for result in results)
    assert provider.statuses == [200]


def test_four_workers_never_exceed_the_providers_token_window(app: ModuleType) -> None:
    """Forty calls of varied output from four worker threads: no 429, and no window holds more than 3000."""
    provider = TokenProvider(TokenLimits(tokens=3000), window=3, output_median=20, output_p99=20)
    try:
        prompts = [f"question {i}, answer in {20 + (i * 53) % 230} tokens" for i in range(40)]
        pending = [app.ask_windowed.delay(prompt, provider.url) for prompt in prompts]
        results = [result.get(timeout=120) for result in pending]
    finally:
        provider.close()
    assert answered_by_provider(results) == 40
    assert 429 not in provider.statuses
    assert provider.most_in_any_window() <= 3000


def test_an_outage_costs_the_provider_little_more_than_one_call_per_request(app: ModuleType) -> None:
    """Forty requests of five retries each, the provider down with 503s: at most 46 calls reach it."""
    provider = TokenProvider(TokenLimits(requests=100_000), window=60)
    provider.outage = 503
    try:
        pending = [app.ask_retried.delay(f"question {i}", provider.url) for i in range(40)]
        results = [result.get(timeout=120) for result in pending]
    finally:
        provider.close()
    assert all(isinstance(result, FallbackResult) and result.kind == "template" for result in results)
    assert 40 <= len(provider.statuses) <= 40 + 4 + 2
    report = status_report(app.app)
    refused = sum(
        report[minute]["retries_refused"].get("retried", 0) for minute in ("this_minute", "last_minute")
    )
    assert refused == 40  # every request ended on a retry the budget refused, then its fallback


def learned(app: ModuleType, provider: str) -> float:
    """The learned token count per period, as ``status --json`` shows it."""
    return float(status_report(app.app)["learned_budgets"][provider]["tokens"]["count"])


def test_a_learned_budget_takes_the_limit_the_provider_states(app: ModuleType) -> None:
    """Guessed at 1000 tokens per 3 s, the budget holds 4000 after one answer stating that limit."""
    provider = TokenProvider(TokenLimits(tokens=4000), window=3, output_median=20, output_p99=20)
    try:
        assert learned(app, "stated") == pytest.approx(1000)
        assert not isinstance(app.ask_stated.delay("first", provider.url).get(timeout=60), FallbackResult)
    finally:
        provider.close()
    assert learned(app, "stated") == pytest.approx(4000)


def test_a_learned_budget_finds_an_unstated_limit_from_429s(app: ModuleType) -> None:
    """Guessed at twice a hidden 3000 tokens per 3 s: 429s alone bring it within 20 % of the limit."""
    provider = TokenProvider(TokenLimits(tokens=3000), window=3, headers=False)
    try:
        prompts = [f"question {i}, answer in 100 tokens" for i in range(120)]
        pending = [app.ask_unstated.delay(prompt, provider.url) for prompt in prompts]
        results = [result.get(timeout=180) for result in pending]
    finally:
        provider.close()
    last_half = provider.statuses[len(provider.statuses) // 2 :]

    # A 429 cuts the guess to the limit the budget's window shows: what it will still hold
    # when the provider, by its retry-after, takes a call again.
    assert 0.8 * 3000 <= learned(app, "unstated") <= 1.2 * 3000, learned(app, "unstated")
    assert provider.most_in_any_window() >= 0.8 * 3000
    assert answered_by_provider(results) >= 110
    assert provider.statuses.count(429) <= len(provider.statuses) * 0.1
    assert last_half.count(429) <= len(last_half) * 0.1


def test_a_learned_budget_guessed_low_grows_while_it_holds_calls_back(app: ModuleType) -> None:
    """Guessed at a third of a hidden 3000 tokens per 3 s, calls that waited for it grow it."""
    provider = TokenProvider(TokenLimits(tokens=3000), window=3, headers=False)
    try:
        prompts = [f"question {i}, answer in 100 tokens" for i in range(60)]
        pending = [app.ask_guessed_low.delay(prompt, provider.url) for prompt in prompts]
        results = [result.get(timeout=180) for result in pending]
    finally:
        provider.close()
    assert answered_by_provider(results) == 60
    assert learned(app, "guessed_low") > 1.5 * 1000  # every wait here is run again later, not held


def test_work_the_budget_cannot_serve_in_time_is_paced_or_refused_at_enqueue(app: ModuleType) -> None:
    """Calls of 310 tokens, 500 free and 48 more a second: one goes now, one waits its turn, one refused."""
    provider = TokenProvider(TokenLimits(tokens=100_000), window=60, output_median=20, output_p99=20)
    published: list[tuple[dict[str, Any], float]] = []

    def seen(headers: dict[str, Any], **_: Any) -> None:
        if headers.get("task") == "tokens.ask_booked":
            published.append((headers, time.time()))

    before_task_publish.connect(seen, weak=False)
    try:
        first = app.ask_booked.delay("first question", provider.url)
        second = app.ask_booked.delay("second question", provider.url)
        with pytest.raises(Throttled) as refused:
            app.ask_booked.delay("third question", provider.url)
        answers = [first.get(timeout=60), second.get(timeout=60)]
    finally:
        before_task_publish.disconnect(seen)
        provider.close()
    assert "cannot serve it within 5s" in str(refused.value) and refused.value.retry_after > 5
    assert len(published) == 2 and published[0][0]["eta"] is None
    (headers, at) = published[1]
    delay = datetime.fromisoformat(headers["eta"]).timestamp() - at
    assert 1 < delay < 3  # its turn: the 120 tokens it lacks, at 48 a second
    assert all(isinstance(answer, str) for answer in answers)
    assert provider.statuses == [200, 200]


def short_provider(style: str = "openai") -> TokenProvider:
    return TokenProvider(TokenLimits(tokens=100_000), window=60, style=style, output_median=20, output_p99=20)


def test_a_streamed_answer_settles_from_its_last_event(app: ModuleType) -> None:
    """Streamed with include_usage, six calls reserving 305 and using 25 all fit a 700-token window."""
    provider = short_provider()
    try:
        results = [app.stream.delay(f"short question {i}", provider.url).get(timeout=60) for i in range(6)]
    finally:
        provider.close()
    assert answered_by_provider(results) == 6 and all("ok" in result for result in results)
    assert provider.statuses == [200] * 6
    assert "streamed" not in status_report(app.app)["blind_budgets"]


def test_an_anthropic_stream_settles_from_its_message_delta(app: ModuleType) -> None:
    """The Anthropic SDK's stream: input from message_start, output from message_delta, six calls fit."""
    provider = short_provider("anthropic")
    try:
        results = [
            app.stream_anthropic.delay(f"short question {i}", provider.url).get(timeout=60) for i in range(6)
        ]
    finally:
        provider.close()
    assert answered_by_provider(results) == 6
    assert provider.statuses == [200] * 6


def test_a_stream_without_usage_is_a_blind_budget_that_says_so(app: ModuleType) -> None:
    """Without the usage chunk nothing settles: the third call waits past its limit; status names the fix."""
    provider = short_provider()
    try:
        results = [
            app.stream_without_usage.delay(f"short question {i}", provider.url).get(timeout=60)
            for i in range(3)
        ]
    finally:
        provider.close()
    assert answered_by_provider(results) == 2 and isinstance(results[2], FallbackResult)
    blind = status_report(app.app)["blind_budgets"]["streamed_without_usage"]
    assert blind["unsettled_calls"] >= 1 and "include_usage" in " ".join(blind["fix"])


def test_a_client_without_hooks_is_a_blind_budget_that_says_so(app: ModuleType) -> None:
    """An SDK client without provider_hooks: status names the provider and the hooks to add."""
    provider = short_provider()
    try:
        results = [
            app.ask_without_hooks.delay(f"short question {i}", provider.url).get(timeout=60) for i in range(3)
        ]
    finally:
        provider.close()
    assert answered_by_provider(results) == 2 and isinstance(results[2], FallbackResult)
    blind = status_report(app.app)["blind_budgets"]["without_hooks"]
    assert blind["unsettled_calls"] >= 1 and "provider_hooks('without_hooks')" in " ".join(blind["fix"])


def test_hooks_of_a_provider_without_a_budget_count_its_429s(app: ModuleType) -> None:
    """No budget named 'unbudgeted': its hooks were built at import all the same, and count its 429s."""
    provider = TokenProvider(TokenLimits(requests=1), window=60, output_median=20, output_p99=20)
    try:
        answers = [app.ask_unbudgeted.delay(f"question {i}", provider.url).get(timeout=60) for i in range(3)]
    finally:
        provider.close()
    assert answers[1:] == ["RateLimitError", "RateLimitError"]
    report = status_report(app.app)
    assert sum(report[m]["provider_429s"].get("unbudgeted", 0) for m in ("this_minute", "last_minute")) == 2
