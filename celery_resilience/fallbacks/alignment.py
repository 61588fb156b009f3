"""Whether two questions say the same thing: every word that carries meaning aligned.

Similarity and the fact checks of ``gate`` let through what differs in a way no list
foresees: another object ("replace an iPhone battery" / "... screen"), another intent
("book a meeting room" / "cancel a meeting room booking"), roles swapped ("from savings
to checking" / "from checking to savings"). So, without evidence of its own, an entry
answers only a question that says the same thing:

- every content word of each question aligned with one of the other: the same lemma
  (case folded, inflection undone: "dogs" / "dog", "paid" / "pay"), or WordNet synonyms
  in a frequent sense of both ("buy" / "purchase");
- the same roles: a word after "from" in one is after "from" in the other, an owner
  ("the admin's files") stays the owner, and the words no preposition governs keep
  their order ("yen ... pound" / "pound ... yen");
- the same tense (did / will).

Anything else is a difference; ``gate.quality`` refuses it unless the entry's evidence
covers it.

An acronym is the words it stands for: ``spelled_out`` writes "ETA" as "estimated time of
arrival" when the other question says so, before either reads the pair.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

__all__ = [
    "Reading",
    "read",
    "aligned",
    "unaligned",
    "matches",
    "matches_any",
    "lemmas",
    "index_term",
    "spelled_out",
]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# Words that carry no meaning of their own in a question: articles, pronouns, auxiliaries,
# politeness and the scaffolding of asking ("could you tell me how ...").
_FILLERS = frozenset(
    """a an the i me my mine myself you your yours we us our ours it its this that these those
    there here is are am was were be been being do does did done doing have has had having can
    could should would shall may might must will please hi hello hey thanks thank tell explain
    show know wondering want wanted like just really actually so also kindly anyone someone
    what which how why when where who whom whose way possible able help go going get got
    s re ve ll d m t some any allowed okay ok exactly usually currently steps instructions""".split()  # noqa: SIM905
)
# Words that keep their meaning but not their place: prepositions and conjunctions mark the
# role of the words that follow them; they are compared as roles, not as words.
_MARKERS = frozenset(
    """from to into onto in on at for with by of over under about before after between than
    per via through toward towards against without within during and or but""".split()  # noqa: SIM905
)
# Conjunctions that open a clause: its words keep the clause's role until it ends.
_CLAUSES = frozenset({"if", "unless", "while", "until", "since", "as", "because", "whether"})
# A word after one of these is a noun, whatever else it can be ("for a return").
_DETERMINERS = frozenset({"a", "an", "the", "my", "your", "our", "their", "his", "her", "its", "this"})
# Prepositions that place a thing rather than give it a role: "in Excel", "on Excel".
_PLACES = dict.fromkeys(("in", "on", "at", "within", "inside", "during"), "in")
_PAST = frozenset({"did", "was", "were", "had", "didn't", "wasn't", "weren't", "hadn't"})
_FUTURE = frozenset({"will", "shall", "won't", "ll", "gonna"})
_CONTRACTIONS = {"n't": "not", "'s": "poss", "'re": "re", "'ve": "ve", "'ll": "ll", "'d": "d", "'m": "m"}
_CLAUSE = re.compile(r"[,;:]")
# Contractions whose stem is not the word: "can't" is "can not", "won't" "will not".
_WHOLE = {
    "can't": ("can", "not"),
    "cannot": ("can", "not"),
    "won't": ("will", "not"),
    "shan't": ("shall", "not"),
}
_SUFFIXES = (
    ("iest", "y"), ("ier", "y"), ("ies", "y"), ("ied", "y"), ("est", ""), ("er", ""),
    ("est", "e"), ("er", "e"), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"),
    ("es", ""), ("s", ""), ("ly", ""),
)  # fmt: skip


_RAW_TOKEN = re.compile(r"[A-Za-z0-9]+")
_DIGIT_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip


@cache
def _forms() -> dict[str, str]:
    """Irregular forms and their lemma (WordNet's exception lists)."""
    return dict(_pairs("forms.txt"))


@cache
def _verbs() -> frozenset[str]:
    """Lemmas used more often as verbs than as nouns (WordNet's tagged senses)."""
    text = (resources.files("celery_resilience.fallbacks") / "verbs.txt").read_text()
    return frozenset(line for line in text.splitlines() if line and line[0] != "#")


def is_verb(word: str) -> bool:
    return bool(lemmas(word) & _verbs())


@cache
def _synonyms() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {}
    for a, b in _pairs("synonyms.txt"):
        table.setdefault(a, set()).add(b)
        table.setdefault(b, set()).add(a)
    return {word: frozenset(others) for word, others in table.items()}


def _pairs(name: str) -> list[tuple[str, str]]:
    text = (resources.files("celery_resilience.fallbacks") / name).read_text()
    return [(line.split()[0], line.split()[1]) for line in text.splitlines() if line and line[0] != "#"]


@lru_cache(maxsize=16384)
def lemmas(word: str) -> frozenset[str]:
    """The forms a word may be inflected from: "dogs" dog, "cancelled" cancel, "paid" pay."""
    irregular = _forms().get(word)
    found = {word} if irregular is None else {word, irregular}
    for suffix, replacement in _SUFFIXES:
        root = word[: -len(suffix)] + replacement
        if word.endswith(suffix) and len(root) >= 3:
            found.add(root)
            if len(root) > 3 and root[-1] == root[-2]:  # cancelled -> cancell -> cancel
                found.add(root[:-1])
    return frozenset(found)


def index_term(word: str) -> str:
    """The one form a word is indexed under, shared by its inflections: "dogs" and "dog" are
    both found under "dog", "cancelled" and "canceled" under "cancel"."""
    return min(lemmas(word.lower()), key=lambda form: (len(form), form))


@lru_cache(maxsize=16384)
def _meanings(word: str) -> frozenset[str]:
    """The word's lemmas and their synonyms: two words align when these meet."""
    forms = lemmas(word)
    synonyms = _synonyms()
    return forms.union(*(synonyms.get(form, frozenset()) for form in forms))


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    role: str  # the preposition or conjunction that governs it, "poss" for an owner, "" for none
    position: int
    # Whether its place tells its role: not a verb (they move with the voice: "can my order
    # be delivered" / "can you deliver my order"), an adverb, a "how" word, or governed.
    free: bool = False


@dataclass(frozen=True, slots=True)
class Reading:
    """A question as alignment sees it: its content words with their roles, and its tense."""

    words: tuple[Word, ...]
    tense: frozenset[str]


@lru_cache(maxsize=8192)
def read(text: str) -> Reading:
    words: list[Word] = []
    tense: set[str] = set()
    role = clause = ""  # the preposition governing the phrase, the conjunction the clause
    tokens = list(_tokens(text))
    for index, token in enumerate(tokens):
        if token == ",":  # a clause ends: so does the role its words were given
            role = clause = ""
            continue
        before = tokens[index - 1] if index else ""
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token == "to" and is_verb(following):  # an infinitive: "how to transfer"
            role = ""
            continue
        if before not in _DETERMINERS and before not in _MARKERS and token not in _FILLERS and is_verb(token):
            role = ""  # a verb starts a phrase of its own: "over 100ml be packed"
        if token in _PAST:
            tense.add("past")
        elif token in _FUTURE:
            tense.add("future")
        if token == "poss":
            if words:
                last = words[-1]
                words[-1] = Word(last.text, "poss", last.position)
            continue
        if token in _CLAUSES:
            clause, role = token, ""
            continue
        if token in _MARKERS:
            role = _PLACES.get(token, token)
            continue
        if token not in _FILLERS:
            free = (
                not (role or clause) and before != "how" and not token.endswith("ly") and not is_verb(token)
            )
            words.append(Word(token, role or clause, len(words), free))
    return Reading(tuple(words), frozenset(tense))


def _tokens(text: str) -> Iterable[str]:
    """Lower-case words, contractions split ("what's" what is; "admin's" admin, owner),
    and a "," wherever the text breaks a clause (a comma, a colon, a semicolon)."""
    for index, piece in enumerate(_CLAUSE.split(text.lower().replace("\u2019", "'"))):
        if index:
            yield ","
        for raw in _TOKEN.findall(piece):
            ending = next((e for e in _CONTRACTIONS if raw.endswith(e) and len(raw) > len(e)), None)
            if raw in _WHOLE:
                yield from _WHOLE[raw]
            elif ending is None:
                yield raw
            else:
                yield raw[: -len(ending)]
                yield _CONTRACTIONS[ending]


@lru_cache(maxsize=8192)
def _senses(words: frozenset[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The lemmas and the meanings (lemmas and their synonyms) of a set of words."""
    forms = frozenset().union(*(lemmas(word) for word in words))
    return forms, frozenset().union(*(_meanings(word) for word in words))


def matches_any(word: str, words: frozenset[str]) -> bool:
    """Whether ``word`` aligns with one of ``words``: ``matches`` against each, at once."""
    forms, meanings = _senses(words)
    return bool(lemmas(word) & meanings) or bool(_meanings(word) & forms)


def matches(a: str, b: str) -> bool:
    """Whether two words align: one lemma ("dogs" / "dog") or synonyms ("buy" / "purchase")."""
    return (
        a == b
        or bool(lemmas(a) & lemmas(b))
        or bool(_meanings(a) & lemmas(b))
        or bool(lemmas(a) & _meanings(b))
    )


def unaligned(new: Reading, old: Reading) -> list[str]:
    """Why the two readings do not say the same thing; empty when they do."""
    return list(_differences(new, old))


@lru_cache(maxsize=16384)
def aligned(question: str, cached_question: str) -> bool:
    """Whether the two questions say the same thing, word for word in meaning (stopping at
    the first difference: a lookup asks this of every candidate that passed the rest)."""
    return next(_differences(read(question), read(cached_question)), None) is None


def _differences(new: Reading, old: Reading) -> Iterator[str]:
    pairs: list[tuple[Word, Word]] = []
    for word in new.words:
        other = next((o for o in old.words if matches(word.text, o.text)), None)
        if other is None:
            yield f"{word.text!r} has no counterpart"
        else:
            pairs.append((word, other))
    for word in old.words:
        if not any(matches(word.text, w.text) for w in new.words):
            yield f"{word.text!r} is not asked"
    for word, other in pairs:
        # A place stays the place with or without its preposition ("in Mexico City" / "Mexico
        # City tap water"); any other role must be the same.
        if word.role != other.role and {word.role, other.role} != {"in", ""}:
            yield f"{word.text!r} plays another role"
    # The order that tells who does what to whom: that of the words whose place tells it.
    free = [(w.position, o.position) for w, o in pairs if w.free and o.free]
    ordered = [old_position for _, old_position in sorted(free)]
    if any(a > b for a, b in itertools.pairwise(ordered)):
        yield "the words no preposition governs come in another order"
    if new.tense != old.tense and new.tense and old.tense:
        yield "another tense"


@lru_cache(maxsize=8192)
def spelled_out(question: str, cached_question: str) -> tuple[str, str]:
    """The pair with each acronym of one written as the words of the other it stands for:
    "What's the ETA?" / "the estimated time of arrival", "2FA" / "two-factor
    authentication", "COD" / "cash on delivery". Only words the other question lacks
    spell it, all of them in a row, so that an acronym never stands for words both share."""
    if not _acronyms(question) and not _acronyms(cached_question):
        return question, cached_question  # most pairs: a lookup asks this of every candidate
    return _spelled(question, cached_question), _spelled(cached_question, question)


@lru_cache(maxsize=8192)
def _acronyms(text: str) -> tuple[re.Match[str], ...]:
    """The tokens of ``text`` that may be acronyms, last first."""
    found = [match for match in _RAW_TOKEN.finditer(text) if _may_abbreviate(match.group())]
    return tuple(reversed(found))


def _spelled(text: str, other: str) -> str:
    mine = {token.lower() for token in _RAW_TOKEN.findall(text)}
    theirs = [(m.group().lower(), m.start(), m.end()) for m in _RAW_TOKEN.finditer(other)]
    lacking = {token for token, _, _ in theirs if token not in _FILLERS and token not in _MARKERS} - mine
    for match in _acronyms(text):
        acronym = match.group()
        if acronym.lower() in lacking:
            continue
        for start in range(len(theirs)):
            end = _initials(acronym.lower(), 0, theirs, start, lacking, start)
            if end is not None:
                words = other[theirs[start][1] : theirs[end][2]]
                text = text[: match.start()] + words + text[match.end() :]
                break
    return text


def _may_abbreviate(token: str) -> bool:
    """Whether a word may be an acronym: written in capitals or with a digit ("ETA", "2FA").
    A word in lower case is a word: "cab" never stands for "call about billing"."""
    lower = token.lower()
    if not 2 <= len(token) <= 6 or lower in _FILLERS or lower in _MARKERS or token.isdigit():
        return False
    return sum(c.isupper() for c in token) >= 2 or any(c.isdigit() for c in token)


def _initials(
    acronym: str, letter: int, tokens: list[tuple[str, int, int]], index: int, lacking: set[str], start: int
) -> int | None:
    """Where a run of ``tokens`` from ``index`` whose initials spell ``acronym[letter:]``
    ends: each word the other question lacks gives its first letter (a number word its
    digit), a preposition between them ("of", "on") may give its own or not, an article none."""
    if letter == len(acronym):
        last = tokens[index - 1][0]
        return index - 1 if last in lacking and index - start >= 2 else None
    if index == len(tokens):
        return None
    token = tokens[index][0]
    initial = _DIGIT_WORDS.get(token, token[0])
    if token in lacking:
        if initial != acronym[letter]:
            return None
        return _initials(acronym, letter + 1, tokens, index + 1, lacking, start)
    if index == start or not (token in _MARKERS or token in _FILLERS):
        return None
    if token in _MARKERS and initial == acronym[letter]:
        end = _initials(acronym, letter + 1, tokens, index + 1, lacking, start)
        if end is not None:
            return end
    return _initials(acronym, letter, tokens, index + 1, lacking, start)
