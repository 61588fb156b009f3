"""Token estimates, providers' usage and rate-limit headers, read as the providers write them."""

from __future__ import annotations

import pytest

from celery_resilience.providers.usage import (
    DEFAULT_OUTPUT_ESTIMATE,
    Limit,
    OutputObserver,
    StreamUsage,
    Usage,
    estimate_tokens,
    limits_from_headers,
    retry_after_from_headers,
    usage_from_body,
)

NOW = 1_800_000_000.0


def test_a_prompt_is_estimated_at_a_token_per_four_bytes_unless_a_counter_is_given() -> None:
    """Four bytes a token, rounded up; non-ASCII text counts its UTF-8 bytes; a tokenizer wins."""
    assert estimate_tokens("abcdefgh") == 2 and estimate_tokens("abcdefghi") == 3
    assert estimate_tokens("日本語") == 3  # nine bytes
    assert estimate_tokens("anything", counter=lambda text: 42) == 42


def test_openai_chat_usage_counts_cached_tokens_in() -> None:
    """Chat completions: prompt and completion tokens; cached prompt tokens stay counted."""
    body = {
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 100},
        }
    }
    assert usage_from_body(body) == Usage(120, 30)


def test_anthropic_usage_counts_cache_writes_but_not_cache_reads() -> None:
    """Anthropic: input plus what was written to the cache; reads are outside its input limit."""
    body = {
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 200,
            "cache_read_input_tokens": 1000,
            "output_tokens": 80,
        }
    }
    assert usage_from_body(body) == Usage(250, 80)


def test_the_responses_api_and_bodies_without_usage() -> None:
    """The Responses API's input and output tokens; no usage, or not a mapping: None."""
    assert usage_from_body({"usage": {"input_tokens": 7, "output_tokens": 9}}) == Usage(7, 9)
    assert usage_from_body({"id": "x"}) is None and usage_from_body([1, 2]) is None
    assert usage_from_body({"usage": {"prompt_tokens": True}}) == Usage(0, 0)  # a bool is no count


def test_openai_headers_with_their_durations() -> None:
    """Remaining requests and tokens, resets written like 6m0s, 1s or 20ms; any case of header name."""
    headers = {
        "X-RateLimit-Remaining-Requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-remaining-tokens": "150000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert limits_from_headers(headers, NOW) == {
        "requests": Limit(499, pytest.approx(0.12)),  # type: ignore[arg-type]
        "tokens": Limit(150000, 360.0),
    }


def test_anthropic_headers_with_reset_times() -> None:
    """Input and output token limits apart, resets as RFC 3339 times read against now."""
    headers = {
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": "2027-01-15T08:00:30Z",
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2027-01-15T08:00:45Z",
    }
    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    limits = limits_from_headers(headers, now)
    assert limits["input_tokens"] == Limit(39000, 30.0)
    assert limits["output_tokens"] == Limit(0, 45.0)


def test_unreadable_headers_say_nothing_is_scarce() -> None:
    """A remaining count that is not a number reads as unlimited; a reset that is not a time, unknown."""
    limits = limits_from_headers(
        {"x-ratelimit-remaining-tokens": "n/a", "x-ratelimit-reset-tokens": "soon"}, NOW
    )
    assert limits == {"tokens": Limit(float("inf"), None)}


def test_retry_after_in_seconds_or_as_a_date() -> None:
    """Retry-After as seconds, or an HTTP date read against now; absent: None."""
    assert retry_after_from_headers({"Retry-After": "12"}, NOW) == 12.0
    assert retry_after_from_headers({"retry-after": "Fri, 15 Jan 2027 08:00:20 GMT"}, NOW) == 20.0
    assert retry_after_from_headers({}, NOW) is None


def test_the_output_estimate_is_the_tasks_high_percentile_once_seen_enough() -> None:
    """Before twenty calls, the default; then the 99th percentile (or the mean) of the last ones, per task."""
    observer = OutputObserver(keep=100, percentile=0.99, minimum=20)
    assert observer.estimate("t") == DEFAULT_OUTPUT_ESTIMATE
    for tokens in range(1, 101):
        observer.observe("t", float(tokens))
    assert observer.estimate("t") == 99.0
    assert observer.estimate("other") == DEFAULT_OUTPUT_ESTIMATE
    assert observer.mean("t") == 50.5 and observer.mean("other") == DEFAULT_OUTPUT_ESTIMATE


def test_a_streams_usage_comes_from_its_last_events() -> None:
    """OpenAI's usage chunk, or Anthropic's message_start then message_delta, end the count."""
    openai = StreamUsage()
    openai.event({"choices": [{"delta": {"content": "hi"}}]})
    assert openai.usage is None and not openai.final
    openai.event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    assert openai.usage == Usage(7, 3) and openai.final
    anthropic = StreamUsage()
    anthropic.event({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}})
    assert anthropic.usage == Usage(9, 1) and not anthropic.final
    anthropic.event({"type": "message_delta", "usage": {"output_tokens": 40}})
    assert anthropic.usage == Usage(9, 40) and anthropic.final
