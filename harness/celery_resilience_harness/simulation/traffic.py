"""What simulated users send: who, when, and the text of each request.

Arrivals are a Poisson process per phase, drawn from a seeded generator, so a scenario
sends the same requests before and after. Texts repeat with variations, as real
support messages do, which is what gives a semantic cache something to find; and some
are near misses of others (another intent, object, role, tense or a negation) whose right
answer differs, so that a cache serving them would be counted wrong.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .fake_provider import choose_from_instructions
from .scenarios import Scale, Scenario

__all__ = ["Arrival", "arrivals", "user_id", "tenant_of", "right_answer", "model_answer", "TASK_KINDS"]

TASK_KINDS = ("classify", "prioritise")

# Each text with the answer a capable model gives it: the right answer, against which
# every answer the pipeline returned is scored. Classification follows the message's
# meaning; urgency also follows its deadline (two days or fewer is urgent).
_MESSAGES = (
    ("My invoice for {month} was charged twice, please refund", "billing"),
    ("The app crashes with an error when I upload {thing}", "bug"),
    ("Please add support for {thing} in the editor, it would be great", "feature"),
    ("Someone is phishing our {team} team, password reset emails look fake", "security"),
    ("How do I export {thing} to a spreadsheet?", "question"),
    ("Our subscription price changed in {month} without notice", "billing"),
    ("Login fails with a 500 error since {month}", "bug"),
    ("Is there a way to share {thing} with the {team} team?", "question"),
    ("We think an API key leaked in a public repository, {team} needs help", "security"),
    ("Feature request: dark mode for {thing}", "feature"),
    # Near misses of the texts above, whose answer differs: another intent on the same
    # object, another object for the same verb, a role swapped. A cache that served the
    # first text's answer to one of these would be wrong, and the report would say so.
    ("Exporting {thing} to a spreadsheet crashes the app", "bug"),
    ("My invoice for {month} fails to load with an error", "bug"),
    ("Someone outside shared our {thing} with the {team} team without permission", "security"),
    ("How can I export {thing} to a spreadsheet?", "question"),
)
_TITLES = (
    ("Production outage in {region}: checkout is down", "p0"),
    ("Customer {name} is blocked on {thing}", "p1"),
    ("Update the {thing} documentation in {days} days", "p2|p3"),
    ("Security review of {thing} before launch in {days} days", "p1|p2"),
    ("Refactor the {thing} module", "p3"),
    ("Urgent: {name} reports data loss in {thing}", "p0"),
    ("Prepare the {month} billing report", "p2"),
    ("Investigate slow {thing} for {name} today", "p1"),
    # Near misses of the titles above: another tense, a negation, another object.
    ("Production outage in {region}: write the postmortem for last week's checkout outage", "p2"),
    ("Not urgent: {name} reports a typo in {thing}", "p3"),
    ("Customer {name} asks about pricing for {thing}", "p2"),
)
_URGENT_DAYS = 2
_FILL = {
    "month": ("January", "March", "June", "September", "November"),
    "thing": ("invoices", "reports", "dashboards", "attachments", "projects", "the calendar"),
    "team": ("finance", "support", "sales", "engineering"),
    "region": ("eu-west", "us-east", "ap-south"),
    "name": ("Acme", "Globex", "Initech", "Umbrella", "Hooli"),
    "days": ("1", "2", "5", "14"),
}


@dataclass(frozen=True)
class Arrival:
    at: float  # wall seconds after the run starts
    user: str
    kind: str
    text: str
    phase: int
    tenant: str = ""  # named only where the scenario groups users into tenants


def user_id(index: int) -> str:
    """One user in twenty is on the enterprise tier, three on pro, the rest on free."""
    slot = index % 20
    tier = "enterprise" if slot == 0 else "pro" if slot in (1, 2, 3) else "free"
    return f"{tier}-{index:04d}"


def tenant_of(index: int, users: int, weights: tuple[float, ...]) -> str:
    """The tenant of user ``index`` of ``users``, split by ``weights`` in order ("" without)."""
    if not weights:
        return ""
    bound = 0.0
    for number, weight in enumerate(weights):
        bound += weight
        if index < round(users * bound / sum(weights)):
            return f"tenant-{number}"
    return f"tenant-{len(weights) - 1}"


def arrivals(scenario: Scenario, scale: Scale, seed: int = 1) -> list[Arrival]:
    rng = random.Random(seed)
    out: list[Arrival] = []
    start = 0.0
    for number, phase in enumerate(scenario.phases):
        users = scale.users(phase.users)
        per_second = users * phase.per_user / 60.0 * scale.speedup  # wall-clock rate
        end = start + scale.wall(phase.minutes * 60.0)
        moment = start + rng.expovariate(per_second)
        while moment < end:
            kind = TASK_KINDS[0] if rng.random() < 0.6 else TASK_KINDS[1]
            index = rng.randrange(users)
            tenant = tenant_of(index, users, phase.tenants)
            # Between tenants, every user is on the free tier: tiers would otherwise decide
            # who is served (the first twenty users hold the enterprise and pro ones).
            user = f"free-{index:04d}" if tenant else user_id(index)
            out.append(Arrival(moment, user, kind, _text(rng, kind), number, tenant))
            moment += rng.expovariate(per_second)
        start = end
    return out


def _text(rng: random.Random, kind: str) -> str:
    template, _ = rng.choice(_MESSAGES if kind == "classify" else _TITLES)
    return template.format(**{key: rng.choice(values) for key, values in _FILL.items()})


def _pattern(template: str) -> re.Pattern[str]:
    """The template as a regular expression, each ``{field}`` a named group."""
    parts = re.split(r"\{(\w+)\}", template)  # text, field, text, field, ..., text
    pieces = [f"(?P<{part}>.+?)" if index % 2 else re.escape(part) for index, part in enumerate(parts)]
    return re.compile("".join(pieces) + "$")


_KNOWN = {
    kind: [(_pattern(template), answer) for template, answer in templates]
    for kind, templates in (("classify", _MESSAGES), ("prioritise", _TITLES))
}


def right_answer(kind: str, text: str) -> str | None:
    """What a capable model answers to ``text`` (None: not a text this traffic sends)."""
    for pattern, answer in _KNOWN[kind]:
        found = pattern.match(text)
        if found is None:
            continue
        if "|" in answer:
            urgent, later = answer.split("|")
            return urgent if int(found.group("days")) <= _URGENT_DAYS else later
        return answer
    return None


def model_answer(system: str, user: str) -> str:
    """The stand-in model behind the fake providers: the right answer to the traffic's texts,
    by the task its instructions name; to anything else, ``choose_from_instructions``."""
    kind = "classify" if system.startswith("Route") else "prioritise" if system.startswith("Rate") else None
    known = right_answer(kind, user) if kind is not None else None
    return known if known is not None else choose_from_instructions(system, user)
