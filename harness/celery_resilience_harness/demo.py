"""The embedded demo: a burst from users of two tiers, on nothing but this process.

Memory broker, ``MemoryStore`` and a worker thread in the same process, so a newcomer
sees admission control work before installing anything. Three phases: a
burst under normal, high and critical load (the severity that backpressure will
report), and a table of what was admitted, graced, delayed, queued and rejected, with
the accounting that shows nothing was lost.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.exceptions import TaskRevokedError

from celery_resilience import Resilience, ResilientTask, Throttled
from celery_resilience.load.signals import Severity

__all__ = ["main", "build_app", "run_demo"]

USERS = (("alice", "free"), ("bob", "free"), ("acme", "enterprise"))
OUTCOMES = ("allow", "allow_with_grace", "delay", "queue_with_timeout", "rejected", "expired")
COLUMNS = ("admitted", "graced", "delayed", "queued", "rejected", "expired")


class SwitchableSeverity:
    """Stands in for backpressure: the demo sets the load severity by hand."""

    def __init__(self) -> None:
        self.value = Severity.NORMAL

    def severity(self, queue: str | None) -> Severity:
        return self.value


def build_app(severity: SwitchableSeverity) -> tuple[Celery, ResilientTask]:
    app = Celery("demo", broker="memory://localhost/", backend="cache+memory://", set_as_current=False)
    app.conf.update(
        resilience_store_url="memory://",
        resilience_tiers={
            "free": {"rate": "60/m", "burst": 4, "grace": 2},
            "enterprise": {"rate": "600/m", "burst": 10, "grace": 3, "minimum_guaranteed": "120/m"},
        },
        resilience_default_tier="free",
        # Short pacing horizon so the demo finishes in seconds: beyond it, callers back off.
        resilience_max_throttle_delay=4,
        worker_hijack_root_logger=False,
    )
    Resilience(app, severity=severity)

    @app.task(base=ResilientTask, bind=True, name="demo.answer", request_type="interactive")
    def answer(self: ResilientTask, prompt: str) -> str:
        return str(self.resilience_context.get("decision", "unknown"))

    return app, answer


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, user: str, outcome: str) -> None:
        self.outcomes.setdefault(user, Counter())[outcome] += 1


def send_burst(task: ResilientTask, per_user: int, tally: Tally) -> list[tuple[str, Any]]:
    pending = []
    for index in range(per_user):
        for user, tier in USERS:
            tally.sent[user] += 1
            try:
                result = task.apply_async((f"request {index}",), user_id=user, tier=tier)
            except Throttled:
                tally.add(user, "rejected")
            else:
                pending.append((user, result))
    return pending


def collect(pending: list[tuple[str, Any]], tally: Tally) -> None:
    for user, result in pending:
        try:
            tally.add(user, result.get(timeout=60, disable_sync_subtasks=False))
        except TaskRevokedError:
            tally.add(user, "expired")


def print_table(title: str, tally: Tally) -> None:
    print(f"\n{title}")
    print(f"  {'user':<10} {'tier':<10} {'sent':>5} " + " ".join(f"{c:>8}" for c in COLUMNS) + "  accounted")
    for user, tier in USERS:
        counts = tally.outcomes.get(user, Counter())
        cells = " ".join(f"{counts[o]:>8}" for o in OUTCOMES)
        print(f"  {user:<10} {tier:<10} {tally.sent[user]:>5} {cells}  {sum(counts.values()):>9}")


def run_demo(per_user: int = 12) -> dict[str, Tally]:
    severity = SwitchableSeverity()
    app, task = build_app(severity)
    phases: dict[str, Tally] = {}
    with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING"):
        for name, level in (
            ("normal load", Severity.NORMAL),
            ("high load", Severity.HIGH),
            ("critical load", Severity.CRITICAL),
        ):
            severity.value = level
            tally = Tally()
            started = time.monotonic()
            collect(send_burst(task, per_user, tally), tally)
            phases[name] = tally
            print_table(
                f"Burst of {per_user} requests per user under {name} "
                f"(finished in {time.monotonic() - started:.1f}s)",
                tally,
            )
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="celery-resilience demo", description=__doc__)
    parser.add_argument("--per-user", type=int, default=12, help="requests each user sends per phase")
    args = parser.parse_args(argv)
    print("celery-resilience demo: embedded broker, MemoryStore, one in-process worker")
    print("tiers: free 60/m burst 4 grace 2; enterprise 600/m burst 10 grace 3")
    phases = run_demo(args.per_user)
    sent = sum(sum(t.sent.values()) for t in phases.values())
    accounted = sum(sum(c.total() for c in t.outcomes.values()) for t in phases.values())
    print(
        f"\n{sent} requests sent, {accounted} accounted for: "
        f"{'nothing lost' if sent == accounted else f'{sent - accounted} LOST'}"
    )
    return 0 if sent == accounted else 1
