"""Rate strings and the key layout."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from celery_resilience.rates import Rate, RateSyntaxError, parse_rate
from celery_resilience.store.keys import ANONYMOUS, KeySpace, escape_part


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("600/m", 600, 60),
        ("10/second", 10, 1),
        ("5/10s", 5, 10),
        (" 1 / hour ", 1, 3600),
        ("2.5/d", 2.5, 86400),
    ],
)
def test_parse_rate_accepts_the_spellings_people_use(text: str, count: float, period: float) -> None:
    """Counts and units, with a multiplier and spaces, parse to count per period seconds."""
    assert parse_rate(text) == Rate(count, period)


@pytest.mark.parametrize("text", ["600", "/m", "ten/m", "5/fortnight", "5/0s", "-1/m", "", "5/m/s"])
def test_parse_rate_rejects_what_it_cannot_read(text: str) -> None:
    """Anything that is not a count over a known unit is an error that shows the expected form."""
    with pytest.raises(RateSyntaxError, match="600/m"):
        parse_rate(text)


def test_rate_prints_back_in_the_same_form() -> None:
    """Operators read rates in messages the way they wrote them."""
    assert str(parse_rate("600/m")) == "600/m"
    assert str(parse_rate("5/10s")) == "5/10s"


HOSTILE = [
    "a:b",
    "a",
    "b",
    "{a}",
    "a}",
    "*",
    "?",
    "[x]",
    "%3A",
    ":",
    " ",
    "",
    "\n",
    "\x00",
    "é",
    "日本",
    "a" * 10_000,
]


def test_escaped_parts_use_only_a_safe_alphabet() -> None:
    """No escaped value can open a hash tag, a glob or split a key."""
    for value in HOSTILE:
        escaped = escape_part(value)
        assert not set(escaped) & set("{}*?[]: \n\x00"), value
        assert len(escaped) <= 130


def test_escaping_is_injective_on_hostile_values() -> None:
    """Distinct user ids never share a key, whatever characters they hold."""
    escaped = [escape_part(v) for v in HOSTILE]
    assert len(set(escaped)) == len(HOSTILE)


@given(st.text(max_size=80), st.text(max_size=80))
def test_escaping_is_injective(a: str, b: str) -> None:
    """Property: equal escapes mean equal inputs."""
    if a != b:
        assert escape_part(a) != escape_part(b)


def test_huge_values_are_hashed_to_a_bounded_length_that_escaping_cannot_forge() -> None:
    """A megabyte user id costs a fixed-size key, and its marker is outside the escaped alphabet."""
    escaped = escape_part("x" * 1_000_000)
    assert escaped.startswith("~h") and len(escaped) == 66
    assert escape_part("~h" + "0" * 64).startswith("%7E")
    assert escape_part(ANONYMOUS) != ANONYMOUS


def test_bucket_and_its_metrics_share_a_cluster_hash_tag() -> None:
    """One script touches a bucket and the metrics of its shard: both must hash to one slot."""
    space = KeySpace("app", 8)
    bucket, shard = space.bucket("user%3A1")
    metrics = space.metrics(shard, 123)
    tag = bucket[bucket.index("{") : bucket.index("}") + 1]
    assert tag == f"{{s{shard}}}"
    assert metrics.startswith(f"app:{tag}:")
    assert bucket.startswith("app:")
