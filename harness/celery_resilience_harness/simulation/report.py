"""The reference's before/after table, built from measurements, and the JSON report."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .measures import RunSummary
from .scenarios import Scale

__all__ = ["reference_table", "detail_table", "errors_table", "write_json", "render"]

Pair = Mapping[str, RunSummary]  # "before" / "after"


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}s"


def _change(before: float, after: float, unit: str = "") -> str:
    if before == 0:
        return "-" if after == 0 else f"+{after:.0f}{unit}"
    return f"{100 * (after - before) / before:+.0f}%"


Row = tuple[str, str, str, str]
Describe = Callable[[RunSummary], str]
Compare = Callable[[RunSummary, RunSummary], str]

# Per scenario: the reference's row, what each run says, and the change between them.
_SCENARIO_ROWS: tuple[tuple[str, str, Describe, Compare], ...] = (
    (
        "surge",
        "Monday morning surge (300 users)",
        lambda r: f"{_pct(r.answered_share)} answered, {r.failed} failed",
        lambda b, a: f"availability {_pct(b.answered_share)} -> {_pct(a.answered_share)}",
    ),
    (
        "outage",
        "Provider outage",
        lambda r: f"{r.downtime:.0f}s without service",
        lambda b, a: f"{_change(b.downtime, a.downtime)} downtime",
    ),
    (
        "db-spike",
        "Database connection spike",
        lambda r: f"{r.failed} failed, {r.db_refused} connections refused",
        lambda b, a: f"{_change(b.failed, a.failed)} failures",
    ),
    (
        "overload",
        "Sustained overload (2x, then 0.5x)",
        lambda r: f"{_pct(r.answered_share)} answered, {r.outcomes.get('primary', 0)} by the provider",
        lambda b, a: f"availability {_pct(b.answered_share)} -> {_pct(a.answered_share)}",
    ),
    (
        "noisy-tenant",
        "A noisy tenant (1 of 5 sends 10x)",
        lambda r: (
            f"quiet tenants {_pct(r.tenant_fairness.get('quiet_served_share', 0.0))} by the provider, "
            f"Jain {r.tenant_fairness.get('jain', 1.0):.2f}"
        ),
        lambda b, a: (
            f"Jain {b.tenant_fairness.get('jain', 1.0):.2f} -> {a.tenant_fairness.get('jain', 1.0):.2f}"
        ),
    ),
)


def reference_table(results: Mapping[str, Pair]) -> list[Row]:
    """Rows of (what, before, after, change), for the scenarios that ran."""
    rows: list[Row] = [
        (title, describe(results[name]["before"]), describe(results[name]["after"]),
         compare(results[name]["before"], results[name]["after"]))
        for name, title, describe, compare in _SCENARIO_ROWS
        if name in results
    ]  # fmt: skip
    befores = [pair["before"] for pair in results.values()]
    afters = [pair["after"] for pair in results.values()]
    success_b, success_a = _success(befores), _success(afters)
    rows.append(
        (
            "User experience under load",
            f"{_pct(success_b)} success, p99 {_worst_p99(befores)}",
            f"{_pct(success_a)} success, p99 {_worst_p99(afters)}",
            f"success {_pct(success_b)} -> {_pct(success_a)}",
        )
    )
    if "outage" in results:
        b, a = results["outage"]["before"], results["outage"]["after"]
        rows.append(
            (
                "Recovery after the provider returns",
                _secs(b.recovery),
                _secs(a.recovery),
                "-" if b.recovery is None or a.recovery is None else _change(b.recovery, a.recovery, "s"),
            )
        )
    alerts_b = sum(r.alerts for r in befores)
    alerts_a = sum(r.alerts for r in afters)
    rows.append(
        (
            "Events sent to Sentry",
            f"{alerts_b} ({sum(r.alert_issues for r in befores)} issues)",
            f"{alerts_a} ({sum(r.alert_issues for r in afters)} issues)",
            _change(alerts_b, alerts_a),
        )
    )
    rows.append(
        (
            "Handled errors counted, not sent",
            "-",
            str(round(sum(r.plugin.get("handled", 0) for r in afters))),
            "-",
        )
    )
    rows.append(
        ("Tasks lost", str(sum(r.tasks_lost for r in befores)), str(sum(r.tasks_lost for r in afters)), "-")
    )
    rows.append(("Fallback answers right", _fallbacks_right(befores), _fallbacks_right(afters), "-"))
    return rows


_SCORED_KINDS = (
    ("cache", "fallback:cached_similar"),
    ("rules", "fallback:rule_based"),
    ("template", "fallback:template"),
)


def _right(runs: Sequence[RunSummary], kind: str) -> tuple[int, int]:
    tallies = [r.right_answers.get(kind, [0, 0]) for r in runs]
    return sum(t[0] for t in tallies), sum(t[1] for t in tallies)


def _fallbacks_right(runs: Sequence[RunSummary]) -> str:
    """Each kind of fallback answer's share matching what the provider answers to that text."""
    parts = []
    for name, kind in _SCORED_KINDS:
        right, scored = _right(runs, kind)
        if scored:
            parts.append(f"{name} {_pct(right / scored)} of {scored}")
    return ", ".join(parts) or "-"


def _success(runs: Sequence[RunSummary]) -> float:
    return sum(r.answered for r in runs) / max(1, sum(r.requests for r in runs))


def _worst_p99(runs: Sequence[RunSummary]) -> str:
    values = [r.latency_p99 for r in runs if r.latency_p99 is not None]
    return f"{max(values):.1f}s" if values else "-"


DETAIL_COLUMNS = (
    "run",
    "requests",
    "answered",
    "primary",
    "provider2",
    "cached",
    "cached right",
    "rules",
    "template",
    "rejected",
    "errors",
    "timeouts",
    "429s",
    "p50",
    "p99",
    "downtime",
    "recovery",
    "unfinished",
    "lost",
    "sentry",
)


def _share_right(summary: RunSummary, kind: str) -> str:
    right, scored = _right([summary], kind)
    return _pct(right / scored) if scored else "-"


def detail_row(summary: RunSummary) -> list[str]:
    o = summary.outcomes
    return [
        f"{summary.scenario} {summary.mode}",
        str(summary.requests),
        _pct(summary.answered_share),
        str(o.get("primary", 0)),
        str(o.get("fallback:alternative_provider", 0)),
        str(o.get("fallback:cached_similar", 0)),
        _share_right(summary, "fallback:cached_similar"),
        str(o.get("fallback:rule_based", 0)),
        str(o.get("fallback:template", 0)),
        str(o.get("rejected", 0)),
        str(o.get("error", 0)),
        str(o.get("timeout", 0)),
        str(summary.provider_429s),
        "-" if summary.latency_p50 is None else f"{summary.latency_p50:.2f}s",
        "-" if summary.latency_p99 is None else f"{summary.latency_p99:.2f}s",
        f"{summary.downtime:.0f}s",
        _secs(summary.recovery) if summary.marks else "-",
        str(summary.tasks_in_broker),
        str(summary.tasks_lost),
        str(summary.alerts),
    ]


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def detail_table(results: Mapping[str, Pair]) -> str:
    rows = [detail_row(pair[mode]) for pair in results.values() for mode in ("before", "after")]
    return _grid(DETAIL_COLUMNS, rows)


def errors_table(results: Mapping[str, Pair]) -> str | None:
    """The requests each run ended in an error, counted by kind (the workers' logs, in the
    report's folder, hold each one's traceback); None when no run had any."""
    rows = [
        [f"{pair[mode].scenario} {mode}", str(count), kind]
        for pair in results.values()
        for mode in ("before", "after")
        for kind, count in pair[mode].errors_by_kind.items()
    ]
    return _grid(("run", "errors", "kind"), rows) if rows else None


def events_table(results: Mapping[str, Pair]) -> str | None:
    """The events each run sent to Sentry, by kind: what someone reading Sentry acts on."""
    rows = [
        [f"{pair[mode].scenario} {mode}", str(count), kind]
        for pair in results.values()
        for mode in ("before", "after")
        for kind, count in sorted(pair[mode].alerts_by_kind.items(), key=lambda item: -item[1])
    ]
    return _grid(("run", "events", "kind"), rows) if rows else None


def tenants_table(results: Mapping[str, Pair]) -> str | None:
    """Per tenant of the runs that group users into tenants: requests, provider answers,
    answers of any kind, and beside each run Jain's index of provider answers over fair
    shares and the quiet tenants' provider answers as a share of their demand."""
    rows = []
    for pair in results.values():
        for mode in ("before", "after"):
            summary = pair[mode]
            fairness = summary.tenant_fairness
            for tenant, counts in summary.tenants.items():
                rows.append([
                    f"{summary.scenario} {mode}",
                    tenant,
                    str(counts.get("requests", 0)),
                    str(counts.get("provider", 0)),
                    str(counts.get("answered", 0)),
                    f"{fairness.get('jain', 1.0):.2f}",
                    _pct(fairness.get("quiet_served_share", 0.0)),
                ])  # fmt: skip
    header = ("run", "tenant", "requests", "provider answers", "answered", "Jain's index", "quiet served")
    return _grid(header, rows) if rows else None


def render(results: Mapping[str, Pair], scale: Scale) -> str:
    header = (
        f"Scale {scale.scale:g} (users, provider limit and pool), time x{scale.speedup:g} "
        f"(a simulated minute lasts {60 / scale.speedup:g}s); patience {scale.wall(scale.patience):g}s. "
        "Durations are wall-clock seconds."
    )
    reference = _grid(
        ("Scenario", "Before (plain Celery)", "After (celery-resilience)", "Change"), reference_table(results)
    )
    errors, events = errors_table(results), events_table(results)
    tail = "" if errors is None else f"\nRequests that ended in an error, by kind:\n\n{errors}\n"
    if events is not None:
        tail += f"\nEvents sent to Sentry, by kind:\n\n{events}\n"
    tenants = tenants_table(results)
    if tenants is not None:
        tail += f"\nTenants (provider answers against max-min fair shares of them):\n\n{tenants}\n"
    return f"{header}\n\n{reference}\n\n{detail_table(results)}\n{tail}"


def write_json(path: Path, results: Mapping[str, Pair], scale: Scale, extra: Mapping[str, Any]) -> None:
    document = {
        "scale": {"scale": scale.scale, "speedup": scale.speedup, "patience": scale.patience},
        **extra,
        "table": [list(row) for row in reference_table(results)],
        "scenarios": {
            name: {mode: summary.as_json() for mode, summary in pair.items()}
            for name, pair in results.items()
        },
    }
    path.write_text(json.dumps(document, indent=2, default=str))
