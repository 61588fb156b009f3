"""Similar questions: the embedder and the cosine that find a cached answer's candidates.

Similarity finds candidates; it cannot judge them ("Is the server down?" and "Is the
server up?" score above 0.7): ``gate.quality`` does, from what decides the answer.

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

from .alignment import index_term

__all__ = [
    "Vector",
    "Embedder",
    "HashingEmbedder",
    "cosine",
    "features",
    "content_words",
    "words",
]

Vector = Mapping[int, float]
Embedder = Callable[[str], "Vector | Sequence[float]"]

_WORD = re.compile(r"[A-Za-z0-9_']+")
_STOPWORDS = frozenset(
    """a an the is are was were be been being am do does did to of in on at for with by from as
    and or it its this that these those i you he she we they me my your our their what which
    who whom how why when where can could should would will shall may might must please""".split()  # noqa: SIM905
)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in _STOPWORDS}


def features(text: str, dimensions: int = 1 << 20) -> Counter[int]:
    """Hashed word unigrams and bigrams of ``text`` with their counts, each word in the one
    form its inflections share ("servers" as "server"), so that inflection costs nothing."""
    tokens = [index_term(word) for word in words(text)]
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
