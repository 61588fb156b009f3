"""When a cached entry may answer: its own evidence, gathered while the provider was healthy.

No similarity threshold suits every entry: "How do I cancel my subscription?" and "How
do I pause my subscription?" score as close as real paraphrases do, and no gate knows
that cancelling and pausing are answered differently. The provider does. While it
answers, a share of its answers (``shadow_share``) is also looked up in the cache: every
entry the gate would let answer is judged against the provider's answer, a label that
costs nothing, since the call was made anyway. Each entry keeps its last ``KEEP``
judgements as (similarity, agreed).

An entry then serves a question only while its estimated error at that question's
similarity stays within ``max_error``. The estimate assumes only that a closer question
is no likelier to need another answer:

- a disagreement at a similarity at least as high as the question's counts against it;
- an agreement at a similarity no higher than the question's counts for it;
- a prior stands in for what is unknown, by whether the question says the same thing as
  the entry's (``alignment.aligned``). Both priors are the gate's error measured on 430
  near misses written apart from it (``benchmarks/data/written``: the test half and the
  held-out set), never on the pairs it was tuned on:

  - the same thing: ``PRIOR_ERROR``, 1.0 % (4 of the 430 served), weighing as much as
    ``PRIOR_WEIGHT`` (10) judgements;
  - anything else (another object, intent, role, tense, a word the lexicon does not
    pair): ``DIFFERENT_PRIOR_ERROR``, 45 % (192 of the 430 would pass the rest of the
    gate), weighing as much as one judgement (``DIFFERENT_PRIOR_WEIGHT``).

So an entry never judged serves the same question under the default bound of 2 %, and
nothing else; one disagreement at or above a question's similarity stops it serving
there until about 45 agreements below that similarity outweigh it. A question that
differs is served once about 22 agreements at or below its similarity, and no
disagreement above, bring the estimate under the bound: evidence, not the gate, decides
the looser matches. A bound below the prior (``max_error < 0.010``) serves only entries
whose agreements have brought the estimate under it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .gate import quality
from .similarity import HashingEmbedder, cosine, words

__all__ = [
    "Judgement",
    "KEEP",
    "PRIOR_ERROR",
    "PRIOR_WEIGHT",
    "DIFFERENT_PRIOR_ERROR",
    "DIFFERENT_PRIOR_WEIGHT",
    "estimated_error",
    "same_answer",
    "parse_evidence",
]

Judgement = tuple[float, bool]
"""One comparison: the question's similarity to the entry, and whether the answers agreed."""

KEEP = 64
PRIOR_ERROR = 0.010
PRIOR_WEIGHT = 10.0
DIFFERENT_PRIOR_ERROR = 0.45
DIFFERENT_PRIOR_WEIGHT = 1.0
# Long answers agree when they say the same things in other words: similar enough, and
# no fact of one (a number, a name, a negation) contradicted by the other.
_LONG_ANSWER_WORDS = 8
_ANSWER_SIMILARITY = 0.5
_ANSWER_QUALITY = 0.6
_SPACE = re.compile(r"\s+")
# Similarities come back from the store rounded (Lua keeps 14 digits): the same question
# must compare as equally similar.
_SAME = 1e-9
_embed = HashingEmbedder()


def estimated_error(evidence: Iterable[Judgement], similarity: float, same: bool = True) -> float:
    """The entry's estimated chance of a wrong answer to a question this similar to it, which
    says the same thing (``same``, the alignment of ``alignment.aligned``) or differs."""
    wrong = right = 0
    for seen, agreed in evidence:
        if agreed and seen <= similarity + _SAME:
            right += 1
        elif not agreed and seen >= similarity - _SAME:
            wrong += 1
    prior, weight = (PRIOR_ERROR, PRIOR_WEIGHT) if same else (DIFFERENT_PRIOR_ERROR, DIFFERENT_PRIOR_WEIGHT)
    return (wrong + prior * weight) / (wrong + right + weight)


def same_answer(cached: Any, fresh: Any) -> bool:
    """The default judge: equal values, texts equal but for case and spacing, or long texts
    saying the same things; mappings and lists compared part by part."""
    if isinstance(cached, Mapping) and isinstance(fresh, Mapping):
        return cached.keys() == fresh.keys() and all(same_answer(cached[k], fresh[k]) for k in cached)
    if _is_list(cached) and _is_list(fresh):
        pairs = zip(cached, fresh, strict=False)
        return len(cached) == len(fresh) and all(same_answer(a, b) for a, b in pairs)
    if isinstance(cached, str) and isinstance(fresh, str):
        return _same_text(cached, fresh)
    numbers = isinstance(cached, int | float) and isinstance(fresh, int | float)
    if numbers and (isinstance(cached, float) or isinstance(fresh, float)):
        return math.isclose(cached, fresh)
    return bool(cached == fresh)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _same_text(a: str, b: str) -> bool:
    plain_a, plain_b = _SPACE.sub(" ", a).strip().casefold(), _SPACE.sub(" ", b).strip().casefold()
    if plain_a.rstrip(".!") == plain_b.rstrip(".!"):
        return True
    if min(len(words(a)), len(words(b))) < _LONG_ANSWER_WORDS:
        return False
    return (
        cosine(_embed(a), _embed(b)) >= _ANSWER_SIMILARITY
        and quality(a, b) > _ANSWER_QUALITY
        and quality(b, a) > _ANSWER_QUALITY
    )


def parse_evidence(raw: str | bytes | None) -> tuple[Judgement, ...]:
    """Judgements as the store keeps them: a JSON list of [similarity, 0 or 1]."""
    if not raw:
        return ()
    return tuple((float(seen), bool(agreed)) for seen, agreed in json.loads(raw))
