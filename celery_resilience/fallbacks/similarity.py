"""Similar questions and whether an old answer fits a new one: pure functions.

Similarity finds candidates; it cannot judge them. "Is the server down?" and "Is the
server up?" share most of their words and score above 0.7, yet the answer to one is
wrong for the other. So a cached answer is served only when an independent quality
score also passes. That score ignores similarity and looks at what similarity blurs:
- opposite words (up/down, enable/disable, ...);
- a negation present in one question and not the other;
- different numbers;
- different names (capitalised words, quoted strings, identifiers with digits);
- how much of the new question's content the old one covers;
- how old the answer is.

The default embedder hashes word unigrams and bigrams into a sparse vector: no
download, no model, no numpy. Any callable returning a sparse or dense vector can
replace it.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Vector",
    "Embedder",
    "HashingEmbedder",
    "cosine",
    "quality",
    "features",
    "content_words",
]

Vector = Mapping[int, float]
Embedder = Callable[[str], "Vector | Sequence[float]"]

_WORD = re.compile(r"[A-Za-z0-9_']+")
_NUMBER = re.compile(r"(?<![A-Za-z])[-+]?\d+(?:[.,]\d+)?%?")
_QUOTED = re.compile(r"[\"'`]([^\"'`]{2,})[\"'`]")
_STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did to of in on at for with by from as
    and or it its this that these those i you he she we they me my your our their what which
    who whom how why when where can could should would will shall may might must please""".split()  # noqa: SIM905
)
_NEGATIONS = frozenset(
    {
        "not",
        "no",
        "never",
        "none",
        "nothing",
        "nobody",
        "neither",
        "nor",
        "without",
        "cannot",
        "can't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "won't",
        "wouldn't",
        "shouldn't",
        "couldn't",
        "hasn't",
        "haven't",
    }
)
_OPPOSITES = [
    ("up", "down"),
    ("on", "off"),
    ("yes", "no"),
    ("true", "false"),
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("increase", "decrease"),
    ("open", "closed"),
    ("open", "close"),
    ("start", "stop"),
    ("pass", "fail"),
    ("online", "offline"),
    ("available", "unavailable"),
    ("success", "failure"),
    ("high", "low"),
    ("more", "less"),
    ("before", "after"),
    ("in", "out"),
    ("add", "remove"),
    ("include", "exclude"),
    ("accept", "reject"),
    ("allow", "deny"),
    ("min", "max"),
    ("minimum", "maximum"),
    ("first", "last"),
    ("buy", "sell"),
    ("win", "lose"),
    ("valid", "invalid"),
    ("above", "below"),
    ("over", "under"),
    ("inside", "outside"),
    ("upload", "download"),
    ("import", "export"),
    ("input", "output"),
    ("push", "pull"),
    ("lock", "unlock"),
    ("connect", "disconnect"),
    ("positive", "negative"),
    ("best", "worst"),
    ("urgent", "trivial"),
    ("safe", "unsafe"),
    ("legal", "illegal"),
    ("possible", "impossible"),
]
_OPPOSITE_OF: dict[str, set[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE_OF.setdefault(_a, set()).add(_b)
    _OPPOSITE_OF.setdefault(_b, set()).add(_a)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOPWORDS}


def features(text: str, dimensions: int = 1 << 20) -> Counter[int]:
    """Hashed word unigrams and bigrams of ``text`` with their counts."""
    tokens = words(text)
    grams = tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]
    return Counter(zlib.crc32(gram.encode()) % dimensions for gram in grams)


@dataclass(frozen=True)
class HashingEmbedder:
    """Sparse, L2-normalised, sublinear-tf vectors of hashed unigrams and bigrams."""

    dimensions: int = 1 << 20

    def __call__(self, text: str) -> Vector:
        counts = features(text, self.dimensions)
        weights = {index: 1.0 + math.log(count) for index, count in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        return {index: w / norm for index, w in weights.items()}


def cosine(a: Vector | Sequence[float], b: Vector | Sequence[float]) -> float:
    """Cosine similarity of two vectors (sparse mappings or dense sequences), in [-1, 1]."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        small, large = (a, b) if len(a) <= len(b) else (b, a)
        dot = sum(value * large.get(index, 0.0) for index, value in small.items())
        norm_a = math.sqrt(sum(v * v for v in a.values()))
        norm_b = math.sqrt(sum(v * v for v in b.values()))
    else:
        dense_a = list(a.values()) if isinstance(a, Mapping) else list(a)
        dense_b = list(b.values()) if isinstance(b, Mapping) else list(b)
        dot = sum(x * y for x, y in zip(dense_a, dense_b, strict=False))
        norm_a = math.sqrt(sum(x * x for x in dense_a))
        norm_b = math.sqrt(sum(y * y for y in dense_b))
    return dot / (norm_a * norm_b) if norm_a and norm_b else 0.0


def _numbers(text: str) -> set[str]:
    return {n.replace(",", ".").lstrip("+") for n in _NUMBER.findall(text)}


def _names(text: str) -> set[str]:
    found = {q.lower() for q in _QUOTED.findall(text)}
    tokens = _WORD.findall(text)
    for position, token in enumerate(tokens):
        if (token[:1].isupper() and position > 0) or (
            any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
        ):
            found.add(token.lower())
    return found


def quality(question: str, cached_question: str, age: float = 0.0, max_age: float = 86400.0) -> float:
    """How well an answer to ``cached_question`` (``age`` seconds old) fits ``question``, in [0, 1].

    It never looks at similarity: a pair that passes similarity must still agree on
    polarity, negation, numbers and names, cover the question's content, and be fresh.
    """
    if age >= max_age:
        return 0.0
    new_words, old_words = set(words(question)), set(words(cached_question))
    only_new, only_old = new_words - old_words, old_words - new_words
    if any(_OPPOSITE_OF.get(word, set()) & only_old for word in only_new):
        return 0.0
    score = 1.0
    if (len(new_words & _NEGATIONS) % 2) != (len(old_words & _NEGATIONS) % 2):
        score *= 0.2
    if _numbers(question) != _numbers(cached_question):
        score *= 0.3
    if _names(question) != _names(cached_question):
        score *= 0.4
    wanted = content_words(question)
    if wanted:
        covered = len(wanted & content_words(cached_question)) / len(wanted)
        score *= 0.5 + 0.5 * covered
    score *= 1.0 - 0.5 * (age / max_age)
    return score
