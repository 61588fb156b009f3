"""Write the semantic cache's labelled evaluation set: ``benchmarks/data/cache_pairs.jsonl``.

Each line is a pair of questions: ``cached`` (answered before) and ``asked`` (new), and
``label``: ``paraphrase`` (the cached answer is right for the new question) or
``near_miss`` (it is wrong), with the ``category`` of the edit that made the near miss
(numbers, negation, antonyms, entities, units, time). Generated from templates: each
intent has several phrasings (paraphrases of each other) and slots whose values change
the answer (near misses). Deterministic: ``python benchmarks/cache_pairs.py`` writes the
same file.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "cache_pairs.jsonl"

# intent: (phrasings with {slot}, slot name, values, category of a value change); values
# joined by "|" mean the same (raise|increase): never a near miss of each other.
INTENTS: list[tuple[list[str], str, list[str], str]] = [
    (
        [
            "Do you ship to {v}?",
            "Do you deliver to {v}?",
            "Can you send orders to {v}?",
            "Is shipping to {v} available?",
            "Can I get my order delivered to {v}?",
        ],
        "v",
        ["Canada", "Mexico", "france", "Japan", "germany", "Brazil", "india", "Spain"],
        "entities",
    ),
    (
        [
            "How do I install {v} packages?",
            "How can I install packages for {v}?",
            "What's the command to install {v} packages?",
            "How do I add a {v} package?",
        ],
        "v",
        ["python", "javascript", "Ruby", "rust", "Java", "go", "php", "Kotlin"],
        "entities",
    ),
    (
        [
            "Book {v} nights in Paris",
            "I want to reserve {v} nights in Paris",
            "Can I book {v} nights in Paris?",
            "Reserve a room in Paris for {v} nights",
        ],
        "v",
        ["two", "3", "five", "7", "ten", "4", "twelve", "6"],
        "numbers",
    ),
    (
        [
            "Is {v} GB of storage enough?",
            "Will {v} GB of storage be enough?",
            "Would {v} GB of storage suffice?",
            "Is a {v} GB storage plan enough?",
        ],
        "v",
        ["8", "16", "32", "64", "128", "256", "two", "four"],
        "numbers",
    ),
    (
        [
            "How far is 5 {v}?",
            "What distance is 5 {v}?",
            "How long is 5 {v} to walk?",
            "How much is 5 {v} in steps?",
        ],
        "v",
        ["km", "miles", "feet", "meters"],
        "units",
    ),
    (
        [
            "Is 10 {v} enough for the upload?",
            "Will 10 {v} be enough for the upload?",
            "Does the upload fit in 10 {v}?",
        ],
        "v",
        ["GB", "MB", "TB", "KB"],
        "units",
    ),
    (
        [
            "What were sales {v}?",
            "Show me the sales figures for {v}",
            "How much did we sell {v}?",
            "What did sales look like {v}?",
        ],
        "v",
        [
            "last week",
            "this week",
            "today",
            "yesterday",
            "last month",
            "next month",
            "this year",
            "last year",
        ],
        "time",
    ),
    (
        [
            "Any meetings on {v}?",
            "Do I have meetings on {v}?",
            "What's on my calendar for {v}?",
            "Am I busy on {v}?",
        ],
        "v",
        ["Monday", "tuesday", "Friday", "saturday", "Sunday", "wednesday"],
        "time",
    ),
    (
        [
            "How do I {v} the upload limit?",
            "How can I {v} my upload limit?",
            "What's the way to {v} the upload limit?",
            "Where do I {v} the limit for uploads?",
        ],
        "v",
        ["raise|increase", "lower|decrease|reduce"],
        "antonyms",
    ),
    (
        [
            "What is the {v} plan?",
            "Which plan is the {v}?",
            "Show me the {v} plan",
            "Tell me about your {v} plan",
        ],
        "v",
        ["cheapest", "most expensive", "best", "worst"],
        "antonyms",
    ),
    (
        [
            "Is the {v} server up?",
            "Is {v} up right now?",
            "Check whether the {v} server is up",
            "Is the {v} service up at the moment?",
        ],
        "v",
        ["billing", "email", "search", "login", "payments"],
        "entities",
    ),
    (
        ["Is the shop {v} today?", "Is the store {v} today?", "Will the shop be {v} today?"],
        "v",
        ["open", "closed"],
        "antonyms",
    ),
]
# Phrasings that say the opposite: negated forms of an intent's first phrasing.
NEGATIONS = [
    ("Can I cancel my order?", ["Is it possible to cancel my order?", "How can I cancel my order?",
                                "Could I cancel my order?"],
     ["Can I not cancel my order?", "Why can't I cancel my order?", "Is it impossible to cancel my order?"]),
    ("Does the plan include support?",
     ["Is support included in the plan?", "Does the plan come with support?"],
     ["Does the plan not include support?", "Is support not included in the plan?"]),
    ("Should I restart the worker?", ["Do I need to restart the worker?", "Is restarting the worker needed?"],
     ["Should I not restart the worker?", "Shouldn't I restart the worker?"]),
    ("Is my data encrypted?", ["Is my data stored encrypted?", "Do you encrypt my data?"],
     ["Is my data not encrypted?", "Isn't my data encrypted?"]),
    ("How do I reset my password?", ["What's the way to reset my password?", "How can I reset my password?",
                                     "I forgot my password, how do I reset it?"],
     ["How do I not reset my password?"]),
]  # fmt: skip


def pairs() -> list[dict[str, str]]:
    rng = random.Random(15)
    found: list[dict[str, str]] = []
    for phrasings, _, groups, category in INTENTS:
        for group in groups:
            for a, b in itertools.permutations(phrasings, 2):
                for one, two in itertools.product(group.split("|"), repeat=2):
                    found.append({"cached": a.format(v=one), "asked": b.format(v=two),
                                  "label": "paraphrase", "category": category})  # fmt: skip
        for group, other in itertools.permutations(groups, 2):
            for one, two in itertools.product(group.split("|"), other.split("|")):
                a, b = rng.choice(phrasings), rng.choice(phrasings)
                found.append({"cached": a.format(v=one), "asked": b.format(v=two),
                              "label": "near_miss", "category": category})  # fmt: skip
    for base, paraphrases, negated in NEGATIONS:
        group = [base, *paraphrases]
        for a, b in itertools.permutations(group, 2):
            found.append({"cached": a, "asked": b, "label": "paraphrase", "category": "negation"})
        for a, b in itertools.product(group, negated):
            found.append({"cached": a, "asked": b, "label": "near_miss", "category": "negation"})
            found.append({"cached": b, "asked": a, "label": "near_miss", "category": "negation"})
    return found


def main() -> None:
    found = pairs()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps(pair) + "\n" for pair in found))
    labels = {label: sum(p["label"] == label for p in found) for label in ("paraphrase", "near_miss")}
    print(f"{len(found)} pairs written to {OUT.name}: {labels}")


if __name__ == "__main__":
    main()
