"""The README's main job runs on the embedded default and accounts for every request."""

from __future__ import annotations

from celery_resilience_harness.__main__ import main
from celery_resilience_harness.demo import run_demo


def test_demo_accounts_for_every_request_and_shows_each_outcome() -> None:
    """Every request sent is admitted, graced, delayed, queued, rejected or expired: none lost."""
    phases = run_demo(per_user=8)
    seen = set()
    for tally in phases.values():
        for user, sent in tally.sent.items():
            assert sum(tally.outcomes[user].values()) == sent
            seen |= {o for o, n in tally.outcomes[user].items() if n}
    assert {"allow", "allow_with_grace", "delay", "queue_with_timeout", "rejected"} <= seen
    # Under critical load, free users over their limit are refused, never paced (how many are
    # over depends on how much their bucket refilled between phases); enterprise is not refused.
    critical = phases["critical load"]
    alice = critical.outcomes["alice"]
    assert alice["delay"] == alice["queue_with_timeout"] == 0
    assert alice["rejected"] >= 4
    assert critical.outcomes["acme"]["rejected"] == 0


def test_command_line_knows_its_commands(capsys: object) -> None:
    """An unknown command is an error with the usage; no command prints the usage."""
    assert main(["frobnicate"]) == 2
    assert main([]) == 2
