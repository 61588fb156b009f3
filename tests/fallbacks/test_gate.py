"""The quality gate, category by category: what decides an answer must agree, paraphrase may differ."""

from __future__ import annotations

import pytest

from celery_resilience.fallbacks.gate import facts, quality

SERVED = 0.6  # the cache's default quality


def served(question: str, cached: str) -> bool:
    return quality(question, cached) > SERVED


def test_the_pronoun_i_is_not_a_name() -> None:
    """'How do I ...' against a question without 'I' keeps its full quality."""
    assert facts("How do I reset my password?").names == frozenset()
    assert served("How do I reset my password?", "What's the way to reset my password?")


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("Book two nights in Paris", "Book five nights in Paris"),
        ("Is 20 enough?", "Is twenty five enough?"),
        ("Order a dozen eggs", "Order three hundred eggs"),
    ],
)
def test_different_numbers_in_digits_or_words_are_refused(question: str, cached: str) -> None:
    """Numbers are read in digits and in words, and any difference refuses the answer."""
    assert not served(question, cached)


def test_the_same_number_in_digits_and_in_words_agrees() -> None:
    """'2' and 'two' are the same number."""
    assert facts("Book 2 nights").numbers == facts("Book two nights").numbers == frozenset({2.0})


@pytest.mark.parametrize(
    ("question", "cached"),
    [("How far is 5 km?", "How far is 5 miles?"), ("Is 8 GB enough?", "Is 8 MB enough?")],
)
def test_different_units_are_refused(question: str, cached: str) -> None:
    """The same number in other units is another question."""
    assert not served(question, cached)


def test_a_negation_on_one_side_only_is_refused() -> None:
    """One question negated and the other not."""
    assert not served("Can I cancel my order?", "Can I not cancel my order?")


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("How do I raise the limit?", "How do I lower the limit?"),
        ("What is the cheapest plan?", "What is the most expensive plan?"),
        ("Is the server down?", "Is the server up?"),
        ("How do I increase my quota?", "How do I decrease my quota?"),
        ("Is the shop open?", "Is the shop closed?"),
    ],
)
def test_opposites_from_the_lexicon_are_refused(question: str, cached: str) -> None:
    """WordNet's antonyms, compared on stems: raise/lower, cheapest/expensive."""
    assert quality(question, cached) == 0.0


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("How do I install python packages?", "How do I install javascript packages?"),
        ("Do you ship to canada?", "Do you ship to mexico?"),
        ("Is it faster on linux?", "Is it faster on windows?"),
        ("What does the 'retry' flag do?", "What does the 'timeout' flag do?"),
    ],
)
def test_different_names_in_any_case_are_refused(question: str, cached: str) -> None:
    """Known names count in lower case too, as quoted strings do."""
    assert not served(question, cached)


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("What were sales last week?", "What were sales this week?"),
        ("Is the store open today?", "Is the store open tomorrow?"),
        ("Any meetings on Monday?", "Any meetings on Friday?"),
        ("What happened in january?", "What happened in october?"),
    ],
)
def test_different_times_are_refused(question: str, cached: str) -> None:
    """Relative days and periods, weekdays and months."""
    assert not served(question, cached)


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("How do I reset my password?", "how can I reset my password"),
        ("Do you ship to Canada?", "Do you deliver to Canada?"),
        ("Is the server down?", "is the server down right now?"),
        ("May I change my plan next month?", "Can I change my plan next month?"),
        ("Which one is better, python or java?", "Which is better: python or java?"),
    ],
)
def test_paraphrases_keep_their_quality(question: str, cached: str) -> None:
    """Wording may change; the facts that decide the answer do not."""
    assert served(question, cached)


def test_another_request_sharing_only_its_context_is_refused() -> None:
    """Most of the new question's content missing from the cached one: another question."""
    assert (
        quality("rotate the api key for the billing portal", "close the account for the billing portal")
        == 0.0
    )


def test_negating_prefixes_count_as_negation() -> None:
    """'impossible' negates as 'not possible' does, by the lexicon's own antonym of its root."""
    assert facts("Is it impossible to cancel my order?").negated
    assert not served("Can I cancel my order?", "Is it impossible to cancel my order?")


def test_superlatives_pick_different_things() -> None:
    """The cheapest plan and the best plan are different answers."""
    assert not served("Tell me about your cheapest plan", "Tell me about your best plan")
