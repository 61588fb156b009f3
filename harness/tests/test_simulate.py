"""``celery-resilience simulate`` end to end: every request and every task accounted for.

The embedded default runs the surge at a small scale (about 50 s); the real-worker run
drives two ``celery worker`` processes of the example app through Redis in an outage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import REDIS_URL

SMALL = ["--scale", "0.05", "--speedup", "20"]


def simulate(tmp_path: Path, *args: str, timeout: float = 240) -> tuple[dict[str, Any], str, str]:
    """Run ``celery-resilience simulate`` as installed, from an empty directory."""
    out = tmp_path / "report"
    empty = tmp_path / "empty"
    empty.mkdir()
    command = Path(sys.executable).with_name("celery-resilience")
    done = subprocess.run(
        [str(command), "simulate", *args, *SMALL, "--out", str(out)],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), done.stdout, done.stderr


def check_accounting(run: dict[str, Any]) -> None:
    """Each request ended exactly one way; each published task is final, still in the
    broker, or lost, and the lost are counted."""
    assert sum(run["outcomes"].values()) == run["requests"] > 0
    assert run["answered"] == sum(v for k, v in run["outcomes"].items() if k == "primary" or "fallback" in k)
    assert run["tasks_published"] == run["tasks_final"] + run["tasks_in_broker"] + run["tasks_lost"]
    sent = sum(bucket.get("sent", 0) for bucket in run["timeline"])
    assert sent == run["requests"]


def test_the_surge_on_the_embedded_default(tmp_path: Path) -> None:
    """The surge replays on the embedded default, every request and task accounted for."""
    report, printed, progress = simulate(tmp_path, "surge")
    before, after = report["scenarios"]["surge"]["before"], report["scenarios"]["surge"]["after"]
    for run in (before, after):
        check_accounting(run)
    assert after["tasks_lost"] == 0
    # What the protection does, measured: the provider's limit is respected and the
    # surplus is answered by fallbacks instead of failing.
    assert after["provider_429s"] < before["provider_429s"]
    assert after["answered_share"] > before["answered_share"]
    assert sum(v for k, v in after["outcomes"].items() if k.startswith("fallback:")) > 0
    # Admission decided the publishes (whether it throttles any depends on timing at this
    # scale: the example's tiers leave room for a heavy user).
    decided = after["plugin"].get("admitted", 0) + after["plugin"].get("graced", 0)
    assert 0 < decided <= after["tasks_published"] + after["throttled_submits"]
    assert "Monday morning surge" in printed and "Tasks lost" in printed
    # Every answer is scored against the provider's own answer to its text: the
    # provider's are all right, the cached ones are counted as they came out.
    primary_right, primary_scored = after["right_answers"]["primary"]
    assert primary_right == primary_scored > 0
    cached = after["outcomes"].get("fallback:cached_similar", 0)
    assert after["right_answers"].get("fallback:cached_similar", [0, 0])[1] == cached
    assert "Fallback answers right" in printed and "cached right" in printed
    assert (tmp_path / "report" / "chart.png").read_bytes().startswith(b"\x89PNG")
    # The terminal shows the plan, the progress and the tables; the workers' tracebacks go
    # to their logs, and the errors users saw are counted by kind.
    assert "2 runs (each scenario before and after), about 1 min in all" in printed
    assert "Traceback" not in progress and "[surge after] [####################]" in progress
    for run in (before, after):
        assert sum(run["errors_by_kind"].values()) == run["outcomes"].get("error", 0)
    if before["errors_by_kind"]:
        assert "Requests that ended in an error, by kind" in printed
        assert "Traceback" in (tmp_path / "report" / "worker-surge-before.log").read_text()


@pytest.mark.integration
# A scenario run of a minute and a half with worker processes: opt-in (-m slow), as the
# suite's budget asks; the embedded runs above cover the same accounting every time.
@pytest.mark.slow
def test_an_outage_with_real_worker_processes(tmp_path: Path, redis_available: None) -> None:
    """An outage replays against real worker processes, and the breaker's probe closes it again."""
    databases = {"broker": 11, "backend": 12, "store": 13}
    try:
        report, _, progress = simulate(
            tmp_path,
            "outage",
            "--broker", f"{REDIS_URL}/{databases['broker']}",
            "--backend", f"{REDIS_URL}/{databases['backend']}",
            "--store", f"{REDIS_URL}/{databases['store']}",
            "--processes", "2",
            "--no-chart",
        )  # fmt: skip
    finally:
        for db in databases.values():  # the runs' queues, bindings, results and store keys
            client = redis.Redis.from_url(f"{REDIS_URL}/{db}")
            keys = [*client.scan_iter("*sim*"), *client.scan_iter("celery-task-meta-*")]
            if keys:
                client.delete(*keys)
    before, after = report["scenarios"]["outage"]["before"], report["scenarios"]["outage"]["after"]
    for run in (before, after):
        check_accounting(run)
    assert after["tasks_lost"] == 0
    assert after["downtime"] < before["downtime"]
    assert after["outcomes"].get("fallback:alternative_provider", 0) > 0
    assert after["recovery"] is not None  # the breaker probed the provider and closed again
    assert "Traceback" not in progress
    assert (tmp_path / "report" / "worker-outage-before.log").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["surge", "--scale", "2"], "scale must be in (0, 1]"),
        (["surge", "--speedup", "0"], "speedup must be in (0, 60]"),
        (["surge", "--broker", "redis://localhost/0"], "--broker needs --store"),
        (["surge", "--store", "redis://localhost/1"], "--store needs --broker"),
        (["surge", "--external-workers"], "--external-workers needs --broker"),
        (["monday"], "invalid choice: 'monday'"),
    ],
)
def test_bad_options_fail_before_anything_runs_and_say_what_was_expected(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad options fail before anything runs and say what was expected."""
    from celery_resilience_harness.simulation.cli import simulate_main

    with pytest.raises(SystemExit) as stopped:
        simulate_main(args)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # about fifty seconds: two four-minute runs at time x20
def test_a_noisy_tenant_replays_with_every_tenant_counted(tmp_path: Path) -> None:
    """The noisy tenant replays by name, every request under its tenant; after, more answered, more fairly."""
    report, printed, _ = simulate(tmp_path, "noisy-tenant")
    runs = report["scenarios"]["noisy-tenant"]
    before, after = runs["before"], runs["after"]
    for run in (before, after):
        check_accounting(run)
        assert len(run["tenants"]) == 5
        assert sum(t["requests"] for t in run["tenants"].values()) == run["requests"]
        assert set(run["tenant_fairness"]) == {"jain", "quiet_served_share"}
    noisy = max(after["tenants"].values(), key=lambda t: t["requests"])
    assert noisy["requests"] > 0.5 * after["requests"]
    assert after["tasks_lost"] == 0 and after["answered_share"] > before["answered_share"]
    # The primary's budget is shared in fair shares after: the quiet tenants get more of it.
    fair, unfair = after["tenant_fairness"], before["tenant_fairness"]
    assert fair["jain"] > unfair["jain"] + 0.2 and fair["quiet_served_share"] > unfair["quiet_served_share"]
    assert "Tenants (provider answers against max-min fair shares of them)" in printed


@pytest.mark.slow  # about a minute: two five-minute runs at time x20
def test_a_sustained_overload_replays_with_every_request_answered(tmp_path: Path) -> None:
    """The sustained overload replays by name: after, nearly all answered, none refused or lost."""
    report, printed, _ = simulate(tmp_path, "overload")
    before, after = (report["scenarios"]["overload"][run] for run in ("before", "after"))
    for run in (before, after):
        check_accounting(run)
    # Time x20 makes a broker's round trip a large share of a user's patience: a few time out.
    assert after["tasks_lost"] == 0 and after["answered_share"] >= 0.95
    outcomes = (before["outcomes"], after["outcomes"])
    assert after["answered_share"] > before["answered_share"] + 0.2, outcomes
    # What the provider could not take in time was answered by the chain, not refused.
    assert after["outcomes"].get("rejected", 0) == 0
    assert after["outcomes"]["primary"] >= 0.9 * before["outcomes"]["primary"], outcomes
    assert "Sustained overload" in printed
