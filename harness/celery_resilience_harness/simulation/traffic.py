"""What simulated users send: who, when, and the text of each request.

Arrivals are a Poisson process per phase, drawn from a seeded generator, so a scenario
sends the same requests before and after. Texts repeat with variations, as real
support messages do, which is what gives a semantic cache something to find.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .scenarios import Scale, Scenario

__all__ = ["Arrival", "arrivals", "user_id", "TASK_KINDS"]

TASK_KINDS = ("classify", "prioritise")

_MESSAGES = (
    "My invoice for {month} was charged twice, please refund",
    "The app crashes with an error when I upload {thing}",
    "Please add support for {thing} in the editor, it would be great",
    "Someone is phishing our {team} team, password reset emails look fake",
    "How do I export {thing} to a spreadsheet?",
    "Our subscription price changed in {month} without notice",
    "Login fails with a 500 error since {month}",
    "Is there a way to share {thing} with the {team} team?",
    "We think an API key leaked in a public repository, {team} needs help",
    "Feature request: dark mode for {thing}",
)
_TITLES = (
    "Production outage in {region}: checkout is down",
    "Customer {name} is blocked on {thing}",
    "Update the {thing} documentation in {days} days",
    "Security review of {thing} before launch in {days} days",
    "Refactor the {thing} module",
    "Urgent: {name} reports data loss in {thing}",
    "Prepare the {month} billing report",
    "Investigate slow {thing} for {name} today",
)
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


def user_id(index: int) -> str:
    """One user in twenty is on the enterprise tier, three on pro, the rest on free."""
    slot = index % 20
    tier = "enterprise" if slot == 0 else "pro" if slot in (1, 2, 3) else "free"
    return f"{tier}-{index:04d}"


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
            out.append(Arrival(moment, user_id(rng.randrange(users)), kind, _text(rng, kind), number))
            moment += rng.expovariate(per_second)
        start = end
    return out


def _text(rng: random.Random, kind: str) -> str:
    template = rng.choice(_MESSAGES if kind == "classify" else _TITLES)
    return template.format(**{key: rng.choice(values) for key, values in _FILL.items()})
