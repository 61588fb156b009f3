"""Whether an old answer fits a new question: the facts that decide an answer must agree.

Similarity finds candidates; it cannot judge them. With any embedder, "raise the limit"
and "lower the limit", or "two nights" and "five nights", score as close as real
paraphrases do. So a cached answer is served only when the two questions agree on what
determines the answer, read from the text itself:

- opposites: WordNet's antonym pairs (``antonyms.txt``, with a few of the trade's own such
  as online / offline), compared on word stems, so "cheapest" opposes "expensive";
- negation: one question negated and the other not ("not", "never", and words the
  lexicon opposes to their own root: "impossible", "unable");
- numbers, in digits or in words ("2", "two"), and units (km / miles, GB / MB);
- names, whatever their case: words capitalised inside a sentence (not "I"), quoted
  strings, identifiers with digits, and the known names of ``entities.txt`` (programming
  languages, products, places) written in lower case;
- time expressions (today / tomorrow, last week / this week, weekdays, months);
- superlatives, which pick different things (cheapest / best / most expensive);
- how much of the new question's content the old one covers, and the answer's age.

Each disagreement multiplies the score down; the cache serves above its ``quality``.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

from .alignment import lemmas, matches_any
from .similarity import content_words, words

__all__ = ["Facts", "facts", "opposed", "quality"]

_WORD = re.compile(r"[A-Za-z0-9_']+")
_DIGITS = re.compile(r"(?<![A-Za-z])[-+]?\d+(?:[.,]\d+)?")
_QUOTED = re.compile(r"[\"`]([^\"`]{2,})[\"`]|(?<![A-Za-z])'([^']{2,})'(?![A-Za-z])")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")

_NEGATIONS = frozenset(
    """not no never none nothing nobody neither nor without cannot can't don't doesn't didn't
    isn't aren't wasn't weren't won't wouldn't shouldn't couldn't hasn't haven't""".split()  # noqa: SIM905
)
# Opposites of the trade that a general lexicon does not hold.
_TRADE_OPPOSITES = [
    ("online", "offline"), ("upload", "download"), ("import", "export"), ("input", "output"),
    ("push", "pull"), ("lock", "unlock"), ("connect", "disconnect"), ("min", "max"),
    ("minimum", "maximum"), ("enabled", "disabled"), ("available", "unavailable"),
    ("valid", "invalid"), ("success", "failure"), ("pass", "fail"), ("inside", "outside"),
    ("above", "below"), ("over", "under"), ("before", "after"), ("more", "less"),
    ("most", "least"), ("best", "worst"), ("urgent", "trivial"), ("yes", "no"),
    ("true", "false"), ("in", "out"),
    # Directions: any word of one family opposes any of the other.
    *[(up, down) for up in ("raise", "increase", "grow", "expand", "extend", "boost", "upgrade")
      for down in ("lower", "decrease", "reduce", "shrink", "cut", "downgrade")],
]  # fmt: skip
_UNITS = {
    "km": "km", "kilometer": "km", "kilometre": "km", "mile": "mile", "mi": "mile",
    "meter": "m", "metre": "m", "cm": "cm", "mm": "mm", "ft": "ft", "foot": "ft",
    "feet": "ft", "inch": "inch", "kg": "kg", "kilogram": "kg", "gram": "g",
    "lb": "lb", "lbs": "lb", "pound": "lb", "oz": "oz", "ounce": "oz", "liter": "l",
    "litre": "l", "ml": "ml", "gallon": "gallon", "kb": "kb", "mb": "mb", "gb": "gb",
    "tb": "tb", "celsius": "celsius", "fahrenheit": "fahrenheit", "usd": "usd",
    "dollar": "usd", "eur": "eur", "euro": "eur", "gbp": "gbp", "%": "percent",
    "percent": "percent", "minute": "minute", "hour": "hour", "hr": "hour", "day": "day", "night": "night",
    "week": "week", "month": "month", "year": "year", "mph": "mph", "kph": "kph",
}  # fmt: skip
_ONES = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12,
}  # "one" is as often a pronoun ("which one"): it is read as a number after another  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_WEEKDAYS = frozenset(
    {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "weekend", "weekday"}
)
# Not "may": it is more often the verb.
_MONTHS = frozenset(
    {"january", "february", "march", "april", "june", "july", "august", "september", "october",
     "november", "december"}
)  # fmt: skip
_PERIODS = {"week", "month", "year", "quarter", "weekend", "day", "night", "morning", "evening",
            "summer", "winter", "spring", "autumn", "fall", *_WEEKDAYS, *_MONTHS}  # fmt: skip
_DAYS = {
    "today": "day+0",
    "tonight": "night+0",
    "tomorrow": "day+1",
    "yesterday": "day-1",
    "recently": "past",
    "soon": "future",
}  # fmt: skip  (now is the default)
_RELATIVE_SIGN = {"this": "+0", "current": "+0", "coming": "+1", "next": "+1", "last": "-1",
                  "previous": "-1", "past": "-1"}  # fmt: skip


@cache
def _opposites() -> dict[str, frozenset[str]]:
    """Each word's opposites: WordNet's antonym pairs and the trade's own."""
    text = (resources.files("celery_resilience.fallbacks") / "antonyms.txt").read_text()
    pairs = [tuple(line.split()) for line in text.splitlines() if line and not line.startswith("#")]
    table: dict[str, set[str]] = {}
    for a, b in [*pairs, *_TRADE_OPPOSITES]:
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return {word: frozenset(others) for word, others in table.items()}


@cache
def _entities() -> frozenset[str]:
    """Known names written in lower case as often as not: languages, products, places."""
    text = (resources.files("celery_resilience.fallbacks") / "entities.txt").read_text()
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def opposed(new_only: set[str], old_only: set[str]) -> bool:
    """A word only in one question is the opposite of a word only in the other."""
    table = _opposites()
    old_stems = set().union(*(lemmas(word) for word in old_only)) if old_only else set()
    for word in new_only:
        for form in lemmas(word):
            if table.get(form, frozenset()) & old_stems:
                return True
    return False


# The share of the new question's content words the cached one must have.
MIN_COVERED = 0.5

_NEGATING_PREFIXES = ("un", "im", "in", "il", "ir", "non", "dis")


def _negating(word: str) -> bool:
    """A negation, or a word the lexicon opposes to its own root: impossible, unable."""
    if word in _NEGATIONS:
        return True
    opposites = _opposites().get(word, frozenset())
    return any(word.startswith(prefix) and word[len(prefix) :] in opposites for prefix in _NEGATING_PREFIXES)


def _degrees(tokens: list[str]) -> frozenset[str]:
    """Superlatives, which pick different things: cheapest, best, most expensive."""
    found = set()
    for index, token in enumerate(tokens):
        if token in ("most", "least") and index + 1 < len(tokens):
            found.add(f"{token} {tokens[index + 1]}")
        elif token in ("best", "worst") or (
            token.endswith("est") and len(token) > 5 and token not in _NOT_SUPERLATIVE
        ):
            found.add(token)
    return frozenset(found)


_NOT_SUPERLATIVE = frozenset(
    {
        "interest",
        "request",
        "suggest",
        "latest",
        "honest",
        "contest",
        "digest",
        "invest",
        "forest",
        "harvest",
        "protest",
        "modest",
        "manifest",
    }
)


def _numbers(text: str, tokens: list[str]) -> frozenset[float]:
    """Every number, in digits or in words: "2", "two" and "a couple" differ; "2" and "two" do not."""
    found = {float(n.replace(",", ".")) for n in _DIGITS.findall(text)}
    value: float | None = None
    current = 0.0
    for token in [*tokens, ""]:
        if token in _ONES:
            current += _ONES[token]
            value = current
        elif token in _SCALES and value is not None:
            current = max(current, 1.0) * _SCALES[token]
            value = current
        elif token == "and" and value is not None:
            continue
        else:
            if value is not None:
                found.add(value)
            value, current = None, 0.0
    return frozenset(found)


def _units(tokens: list[str], text: str) -> frozenset[str]:
    found = set()
    for token in tokens:
        for form in (token, token[:-1] if token.endswith("s") else token):
            if form in _UNITS:
                found.add(_UNITS[form])
                break
    if "%" in text:
        found.add("percent")
    return frozenset(found)


def _names(text: str, tokens: list[str]) -> frozenset[str]:
    """Quoted strings, words capitalised inside a sentence (not "I"), identifiers with
    digits, and known names in any case."""
    found = {(a or b).lower() for a, b in _QUOTED.findall(text)}
    known = _entities()
    start = True
    for match in _WORD.finditer(text):
        token = match.group()
        lower = token.lower()
        capitalised = token[:1].isupper() and token not in ("I", "I'm", "I've", "I'll", "I'd")
        identifier = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
        if (capitalised and not start) or lower in known or identifier:
            found.add(lower)
        start = bool(_SENTENCE_END.search(text[: match.end() + 1])) if match.end() < len(text) else False
    for a, b in itertools.pairwise(tokens):  # two-word names: "new york", "visual basic"
        if f"{a} {b}" in known:
            found.add(f"{a} {b}")
    return frozenset(found)


def _times(tokens: list[str]) -> frozenset[str]:
    found = set()
    for index, token in enumerate(tokens):
        before = tokens[index - 1] if index else ""
        if token in _DAYS:
            found.add(_DAYS[token])
        elif token in _WEEKDAYS or token in _MONTHS:
            found.add(token + _RELATIVE_SIGN.get(before, ""))
        elif token in _PERIODS and before in _RELATIVE_SIGN:
            found.add(token + _RELATIVE_SIGN[before])
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Facts:
    """What in a question decides its answer."""

    words: frozenset[str]
    negated: bool
    numbers: frozenset[float]
    units: frozenset[str]
    names: frozenset[str]
    times: frozenset[str]
    degrees: frozenset[str]
    content: frozenset[str]


@lru_cache(maxsize=8192)
def facts(text: str) -> Facts:
    """Read once per text: a lookup weighs one question against up to 50 cached ones, and
    the cached ones come back lookup after lookup."""
    tokens = words(text)
    return Facts(
        words=frozenset(tokens),
        negated=sum(_negating(token) for token in set(tokens)) % 2 == 1,
        numbers=_numbers(text, tokens),
        units=_units(tokens, text),
        names=_names(text, tokens),
        times=_times(tokens),
        degrees=_degrees(tokens),
        content=frozenset(content_words(text)),
    )


def _unmatched_names(facts: Facts, other: Facts) -> bool:
    """Whether a name of one question is missing from the other's words (in any inflection)."""
    return any(
        not all(matches_any(part, other.words) for part in name.split())
        for name in facts.names
        if name not in other.words
    )


def quality(question: str, cached_question: str, age: float = 0.0, max_age: float = 86400.0) -> float:
    """How well an answer to ``cached_question`` (``age`` seconds old) fits ``question``, in [0, 1].

    It never looks at similarity: a pair that passes similarity must still agree on the
    facts that decide the answer, cover the question's content, and be fresh.
    """
    if age >= max_age:
        return 0.0
    new, old = facts(question), facts(cached_question)
    if opposed(set(new.words - old.words), set(old.words - new.words)):
        return 0.0
    score = 1.0
    if new.negated != old.negated:
        score *= 0.2
    if new.numbers != old.numbers:
        score *= 0.3
    if new.units != old.units:
        score *= 0.4
    # A name counts as another only when the other question does not have it as a word:
    # "Uber" and "uber", "AirPods" and "airpods" are the same name, whatever their case.
    if _unmatched_names(new, old) or _unmatched_names(old, new):
        score *= 0.4
    if new.times != old.times:
        score *= 0.3
    if new.degrees != old.degrees:
        score *= 0.3
    wanted = new.content
    if wanted:
        exact = wanted & old.content
        inflected = sum(matches_any(word, old.content) for word in wanted - exact)
        covered = (len(exact) + inflected) / len(wanted)
        if covered < MIN_COVERED:
            return 0.0  # mostly another question that shares its context words
        score *= 0.5 + 0.5 * covered
    score *= 1.0 - 0.5 * (age / max_age)
    return score
