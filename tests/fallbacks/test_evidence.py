"""An entry's estimated error from its judgements, and the default judge of two answers."""

from __future__ import annotations

import pytest

from celery_resilience.fallbacks.evidence import (
    PRIOR_ERROR,
    estimated_error,
    parse_evidence,
    same_answer,
)


def test_an_entry_never_judged_is_estimated_at_the_gates_own_error() -> None:
    """With no evidence the estimate is the prior: within the default bound of 2 %."""
    assert estimated_error((), 0.8) == pytest.approx(PRIOR_ERROR)
    assert estimated_error((), 0.8) <= 0.02


def test_a_disagreement_counts_against_questions_no_closer_than_it() -> None:
    """Wrong at 0.8: a question at 0.7 or 0.8 is refused, one at 0.9 is not affected."""
    evidence = [(0.8, False)]
    assert estimated_error(evidence, 0.7) > 0.02
    assert estimated_error(evidence, 0.8) > 0.02
    assert estimated_error(evidence, 0.9) == pytest.approx(PRIOR_ERROR)


def test_agreements_count_for_questions_at_least_as_close() -> None:
    """Right at 0.6 supports a question at 0.7, says nothing of one at 0.5."""
    evidence = [(0.6, True)] * 5
    assert estimated_error(evidence, 0.7) < PRIOR_ERROR
    assert estimated_error(evidence, 0.5) == pytest.approx(PRIOR_ERROR)


def test_many_agreements_below_outweigh_one_disagreement_above() -> None:
    """One wrong above takes about 45 rights below to bring the estimate back under 2 %."""
    wrong = [(0.9, False)]
    assert estimated_error(wrong + [(0.5, True)] * 40, 0.7) > 0.02
    assert estimated_error(wrong + [(0.5, True)] * 46, 0.7) <= 0.02


def test_evidence_reads_as_the_store_writes_it() -> None:
    """cache_judge.lua's JSON list of [similarity, 0 or 1] reads back as judgements."""
    assert parse_evidence("[[0.712345,1],[0.9,0]]") == ((0.712345, True), (0.9, False))
    assert parse_evidence(None) == () and parse_evidence("") == ()


@pytest.mark.parametrize(
    ("cached", "fresh"),
    [
        ({"label": "billing", "provider": "primary"}, {"provider": "primary", "label": "billing"}),
        ("Billing.", "billing"),
        ("  two   words ", "Two words"),
        (
            "You can cancel at any time from the billing page and keep access until the month ends.",
            "You can cancel any time from the billing page, keeping access until the month ends.",
        ),
        ([1, 2.0], [1, 2]),
    ],
)
def test_answers_saying_the_same_agree(cached: object, fresh: object) -> None:
    """Case, spacing, key order and rewording of a long answer are not disagreements."""
    assert same_answer(cached, fresh)


@pytest.mark.parametrize(
    ("cached", "fresh"),
    [
        ({"label": "billing"}, {"label": "bug"}),
        ("p1", "p2"),
        (
            "You can cancel at any time from the billing page and keep access until the month ends.",
            "You cannot cancel from the billing page and you lose access at once when you try.",
        ),
        (
            "Refunds are paid within 5 days to the card that paid for the order in the first place.",
            "Refunds are paid within 14 days to the card that paid for the order in the first place.",
        ),
        ({"label": "bug"}, {"label": "bug", "extra": 1}),
        ([1, 2], [1]),
    ],
)
def test_answers_saying_otherwise_disagree(cached: object, fresh: object) -> None:
    """Another label, a negation, another number or another shape is a disagreement."""
    assert not same_answer(cached, fresh)
