"""The alignment that decides whether two questions say the same thing, on examples of each kind."""

from __future__ import annotations

import pytest

from celery_resilience.fallbacks.alignment import aligned, index_term, lemmas, read, spelled_out, unaligned


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("how do i feed my dogs", "How do I feed my dog?"),  # inflection, case
        ("Does UBER refund cancelled trips?", "does uber refund canceled trips"),  # names in any case
        ("Where can I purchase a bus pass?", "Where can I buy a bus pass?"),  # WordNet synonyms
        (
            "How do I pause notifications in Slack?",
            "In Slack, how do I pause notifications?",
        ),  # a place moved
        ("Can my parcel be delivered to a locker?", "Can you deliver my parcel to a locker?"),  # the voice
        ("Tell me how to export a report to Excel.", "How do I export a report to Excel?"),  # scaffolding
        ("Is there a fee if I move my flight?", "If I move my flight, is there a fee?"),  # a clause moved
        ("Why can't I log in to the portal?", "Why cannot I log in to the portal?"),  # contractions
    ],
)
def test_the_same_question_aligns(question: str, cached: str) -> None:
    """Rewordings that keep every word's meaning and role align."""
    assert aligned(question, cached), unaligned(read(question), read(cached))


@pytest.mark.parametrize(
    ("question", "cached", "reason"),
    [
        ("How do I reset my router password?", "How do I reset my router?", "'password' has no"),
        ("How do I replace a laptop keyboard?", "How do I replace a laptop battery?", "has no counterpart"),
        ("How do I cancel a table booking?", "How do I make a table booking?", "has no counterpart"),
        ("How do I wire money from savings to checking?", "How do I wire money from checking to savings?",
         "another role"),
        ("Can the tenant read the landlord's notes?", "Can the landlord read the tenant's notes?",
         "another role"),
        ("How many euros is one dollar?", "How many dollars is one euro?", "another order"),
        ("When did the store open?", "When will the store open?", "another tense"),
        ("Why didn't the refund arrive?", "Why won't the refund arrive?", "another tense"),
        ("Can I travel without a visa?", "Can I travel with a visa?", "another role"),
        ("Which plans are not refundable?", "Which plans are refundable?", "'not' has no"),
        ("Which items are non-returnable?", "Which items are returnable?", "'non' has no"),
    ],
)  # fmt: skip
def test_a_difference_does_not_align_and_says_why(question: str, cached: str, reason: str) -> None:
    """Another object, intent, role, order, tense or negation is a difference, named."""
    reasons = unaligned(read(question), read(cached))
    assert reasons and any(reason in r for r in reasons), reasons


def test_inflections_share_one_index_term() -> None:
    """What a question is indexed under is shared by its inflections, so either finds the other."""
    assert index_term("dogs") == index_term("dog") == "dog"
    assert index_term("cancelled") == index_term("canceled") == index_term("cancel") == "cancel"
    assert index_term("Booking") == index_term("book")
    assert "pay" in lemmas("paid") and "child" in lemmas("children")


def test_hostile_text_reads_without_error() -> None:
    """Punctuation, quotes and unicode read as words or nothing, never as an error."""
    for text in ("", "???", "'; DROP TABLE x; --", "caf\u00e9 \u2019s", "a" * 10_000, "to to to from"):
        read(text)
        assert aligned(text, text)


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("What's the ETA for my order?", "What is the estimated time of arrival for my order?"),
        ("Can I pay with COD?", "Can I pay with cash on delivery?"),  # a preposition gives its letter
        ("How do I turn on 2FA?", "How do I turn on two-factor authentication?"),  # a digit, a number word
        ("Change the HVAC filter", "Change the heating, ventilation and air conditioning filter"),
    ],
)
def test_an_acronym_aligns_with_the_words_it_stands_for(question: str, cached: str) -> None:
    """An acronym written out in the other question reads as those words, either way round."""
    assert not aligned(question, cached)
    assert aligned(*spelled_out(question, cached))
    assert aligned(*spelled_out(cached, question))


@pytest.mark.parametrize(
    ("question", "cached"),
    [
        ("How do I book a cab?", "How do I book a call about billing?"),  # lower case: a word
        ("Is the UK office open?", "Is the UK office under kitchen renovation?"),  # UK asked in both
        ("What does the ETA say?", "What does the estimated time say?"),  # the letters run out
        ("Do you ship to the UK?", "Do you ship to the United States?"),  # other initials
    ],
)
def test_words_that_do_not_spell_an_acronym_stay_as_written(question: str, cached: str) -> None:
    """Only capitals or digits abbreviate, and only words the other question lacks spell them."""
    assert spelled_out(question, cached) == (question, cached)
