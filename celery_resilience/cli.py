"""``celery -A proj resilience ...``: what the defences see, and the breakers' controls.

    celery -A proj resilience status [--json]
    celery -A proj resilience open NAME      # force a breaker open until closed
    celery -A proj resilience close NAME     # close it (also resets its window and trips)
    celery -A proj resilience reset NAME     # the same as close, for a breaker that tripped
    celery -A proj resilience disable NAME   # let every call through, record nothing

Registered under the ``celery.commands`` entry point group; the app is the one named by
``-A``, and ``Resilience(app)`` is what its module already calls.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .breakers.machine import BreakerState, effective_state
from .errors import StoreUnavailable
from .extension import Resilience
from .load.fairness import FAIR_FIELDS
from .load.signals import Severity, queue_severity, severity_rank
from .monitoring.summary import MetricsReader, MinuteSummary
from .providers.blind import hint
from .providers.fair_share import KIND
from .providers.learned import READ
from .store import masked_url

__all__ = ["resilience", "status_report"]

_T = TypeVar("_T")


def status_report(app: Any) -> dict[str, Any]:
    """Everything the status command shows, as one JSON-ready object; raises
    ``StoreUnavailable`` when the store does not answer."""
    ext = Resilience.of(app)
    store = ext.store
    now = store.now()
    queues, levels = _queues(ext)
    # The headline is the worst the cluster is in: its workers' health or its fullest queue.
    worst_queue = max(levels, key=lambda q: severity_rank(levels[q]), default=None)
    if worst_queue is not None and levels[worst_queue] is Severity.NORMAL:
        worst_queue = None
    factors = ext.load.factors(worst_queue)
    reader = MetricsReader(store)
    current = reader.current_minute()
    health, upcoming = ext.load.health, ext.load.upcoming
    return {
        "breakers": _breakers(ext, now),
        "queues": queues,
        "learned_budgets": _learned_budgets(ext),
        "blind_budgets": _blind_budgets(reader.minute(current), reader.minute(current - 1)),
        "fair_budgets": _fair_budgets(ext),
        "tiers": _tiers(ext, factors.product),
        "severity": ext.load.severity(worst_queue).value,
        "severity_queue": worst_queue,
        "anonymous_calls": ext.settings.admission.anonymous_calls,
        "factors": {**dataclasses.asdict(factors), "product": factors.product},
        "workers": None if health is None else dataclasses.asdict(health),
        "prediction": None if upcoming is None else dataclasses.asdict(upcoming),
        "this_minute": _minute(reader.minute(current)),
        "last_minute": _minute(reader.minute(current - 1)),
        "recent_alerts": [json.loads(raw) for raw in store.recent_alerts(10)],
        "load_correlation": reader.load_correlation(),
        "at": now,
    }


def _learned_budgets(ext: Resilience) -> dict[str, dict[str, Any]]:
    """Each learned unit's shared rate, as a count per its period (what the provider allows)."""
    found: dict[str, dict[str, Any]] = {}
    for name, budget in sorted(ext.quota.providers.items()):
        for unit, unit_budget in budget.units:
            if unit_budget.learned:
                per_second = ext.store.learn(name, unit, READ, unit_budget.rate.per_second, 0.0)
                period = unit_budget.rate.period
                found.setdefault(name, {})[unit] = {"count": per_second * period, "period": period}
    return found


def _blind_budgets(*minutes: MinuteSummary) -> dict[str, dict[str, Any]]:
    """Token budgets whose calls no response settled, this minute and the last, and the fix."""
    found: dict[str, dict[str, Any]] = {}
    for summary in minutes:
        for streamed, counts in (
            (False, summary.provider_unsettled),
            (True, summary.provider_unsettled_streams),
        ):
            for provider, calls in counts.items():
                entry = found.setdefault(provider, {"unsettled_calls": 0.0, "fix": []})
                entry["unsettled_calls"] += calls
                if hint(provider, streamed) not in entry["fix"]:
                    entry["fix"].append(hint(provider, streamed))
    return found


def _breakers(ext: Resilience, now: float) -> dict[str, Any]:
    """Each breaker as the next call finds it (an open one whose time is up: half-open)."""
    breakers = {}
    for name, policy in sorted(ext.settings.breakers.policies.items()):
        view = ext.breakers.read(name)
        state = effective_state(view.state, view.open_until, now)
        breakers[name] = {
            "state": state.value,
            "generation": view.generation,
            "open_until": view.open_until or None,
            "open_for": max(0.0, view.open_until - now) if state is BreakerState.OPEN else None,
            "trips": view.trips,
            "calls_in_window": view.calls,
            "weight_in_window": view.weight,
            "failure_threshold": policy.failure_threshold,
            "probes_held": view.probes,
        }
    return breakers


def _queues(ext: Resilience) -> tuple[dict[str, Any], dict[str, Severity]]:
    """Each queue with thresholds: its depth, severity and the factor for publishes to it;
    each fair queue: its fair order (``_fair``)."""
    queues: dict[str, dict[str, Any]] = {}
    levels: dict[str, Severity] = {}
    for queue, thresholds in sorted(ext.settings.load.queue_thresholds.items()):
        depth = ext.depths.depth(queue) if ext.depths is not None else None
        levels[queue] = queue_severity(depth, thresholds)
        queues[queue] = {
            "depth": depth,
            "high": thresholds.high,
            "critical": thresholds.critical,
            "severity": levels[queue].value,
            "factor": ext.load.factors(queue).product,
        }
    for queue, policy in sorted(ext.settings.load.fair_queues.items()):
        entry = queues.setdefault(
            queue, {"depth": ext.depths.depth(queue) if ext.depths is not None else None}
        )
        fair = _fair(ext.store.fair_status(queue))
        entry["fair"] = {"saturated_from_depth": policy.depth, "max_delay": policy.max_delay, **fair}
    return queues, levels


def _fair_budgets(ext: Resilience) -> dict[str, dict[str, Any]]:
    """Each budget shared in fair shares: the calls that waited for their tenant's turn and
    those over their tenant's share, as ``_fair`` counts a fair queue's."""
    providers = sorted(ext.fair_shares.providers)
    return {provider: _fair(ext.store.fair_status(provider, KIND)) for provider in providers}


def _fair(status: dict[str, float]) -> dict[str, Any]:
    """Fair order's counters (in all and per tenant, as the keys spell tenants), the
    service rate the tags use, and the tenants with work booked."""
    tenants: dict[str, dict[str, float]] = {}
    for name, value in status.items():
        counter, colon, tenant = name.partition(":")
        if colon and counter in FAIR_FIELDS:
            tenants.setdefault(tenant, {field: 0.0 for field in FAIR_FIELDS})[counter] = value
    return {
        "capacity_per_second": status.get("capacity", 0.0),
        "tenants_booked": int(status.get("tenants", 0.0)),
        **{field: status.get(field, 0.0) for field in FAIR_FIELDS},
        "tenants": tenants,
    }


def _tiers(ext: Resilience, multiplier: float) -> dict[str, Any]:
    """Each tier's limits as configured, and its rate now (the factors, then the clamp)."""
    tiers = {}
    for name, tier in sorted(ext.settings.admission.tiers.items()):
        effective = tier.limit.rate.per_second * multiplier
        if tier.minimum_guaranteed is not None:
            effective = max(effective, tier.minimum_guaranteed.per_second)
        if tier.maximum_burst is not None:
            effective = min(effective, tier.maximum_burst.per_second)
        tiers[name] = {
            "rate": str(tier.limit.rate),
            "burst": tier.limit.burst,
            "grace": tier.limit.grace,
            "effective_per_minute": round(effective * 60, 3),
        }
    return tiers


def _minute(summary: MinuteSummary) -> dict[str, Any]:
    return {
        **dataclasses.asdict(summary),
        "grace_usage": summary.grace_share,
        "average_sojourn": summary.average_sojourn,
    }


def _print_status(report: dict[str, Any]) -> None:
    where = f" (queue {report['severity_queue']})" if report["severity_queue"] else ""
    click.echo(
        f"severity {report['severity']}{where}   adaptive factor {report['factors']['product']:.2f}   "
        f"at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(report['at']))} UTC"
    )
    click.echo(f"calls naming no user: {report['anonymous_calls']} (resilience_anonymous_calls)")
    click.echo("\nbreakers")
    for name, b in report["breakers"].items():
        extra = f"   open for {b['open_for']:.0f}s more" if b["open_for"] else ""
        click.echo(
            f"  {name:<20} {b['state']:<12} weight {b['weight_in_window']:.1f}/{b['failure_threshold']:g}"
            f" over {b['calls_in_window']} calls   trips {b['trips']}{extra}"
        )
    click.echo("\ntiers")
    for name, t in report["tiers"].items():
        click.echo(
            f"  {name:<20} {t['rate']:>10}  now {t['effective_per_minute']:g}/m   burst {t['burst']}"
            f"   grace {t['grace']}"
        )
    if report["queues"]:
        click.echo("\nqueues")
        for name, q in report["queues"].items():
            line = f"  {name:<20} depth {q['depth']}"
            if "severity" in q:
                limits = f"(high {q['high']}, critical {q['critical']})"
                line += f"   {q['severity']} {limits}   factor {q['factor']:.2f}"
            if "fair" in q:
                fair = q["fair"]
                line += (
                    f"   fair: {fair['delayed']:g} held back ({fair['delay_total']:.1f}s), "
                    f"{fair['tenants_booked']} tenants booked, {fair['capacity_per_second']:.1f} tasks/s"
                )
            click.echo(line)
    for name, fair in report["fair_budgets"].items():
        click.echo(
            f"\nfair budget {name}: {fair['delayed']:g} calls waited for their turn "
            f"({fair['delay_total']:.1f}s), {fair['over_share']:g} over their tenant's share, "
            f"{fair['tenants_booked']} tenants booked"
        )
    for name, blind in report["blind_budgets"].items():
        click.echo(
            f"\nblind budget {name}: {blind['unsettled_calls']:g} calls unsettled; " + "; ".join(blind["fix"])
        )
    factors = ", ".join(f"{k} {v:.2f}" for k, v in report["factors"].items() if k != "product")
    click.echo(f"\nfactors   {factors}")
    for label, key in (("this minute", "this_minute"), ("last minute", "last_minute")):
        m = report[key]
        click.echo(
            f"{label:<13} {m['requests']:g} requests: {m['admitted']:g} admitted, {m['graced']:g} graced, "
            f"{m['throttled']:g} throttled; fallbacks {_counts(m['fallbacks'])}; "
            f"trips {_counts(m['breaker_trips'])}; closes {_counts(m['breaker_closes'])}"
        )
        for queue, waited in sorted(m["average_sojourn"].items()):
            click.echo(f"  queue {queue}: waited {waited:.1f}s on average, {m['sheds'].get(queue, 0):g} shed")


def _counts(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {count:g}" for name, count in sorted(values.items())) or "none"


def _app(ctx: click.Context) -> Any:
    return ctx.obj.app


def _breaker(ctx: click.Context, name: str) -> None:
    known = Resilience.of(_app(ctx)).settings.breakers.policies
    if name not in known:
        raise click.BadParameter(
            f"no breaker named {name!r}; configured: {', '.join(sorted(known)) or 'none'}"
        )


def _answered(ctx: click.Context, action: Callable[[], _T]) -> _T:
    """Run ``action`` against the store; an unreachable store is one clear line and exit 1."""
    try:
        return action()
    except StoreUnavailable as error:
        url = masked_url(Resilience.of(_app(ctx)).settings.store_url)
        click.echo(f"error: the resilience store at {url} is unreachable: {error}", err=True)
        ctx.exit(1)
    raise AssertionError("not reached")  # ctx.exit raises


@click.group(name="resilience")
def resilience() -> None:
    """Admission, breakers, backpressure and fallbacks of this app."""


@resilience.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--watch", is_flag=True, help="Refresh in place until interrupted, like watch(1).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="With --watch: stop after this many refreshes."
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, watch: bool, interval: float, count: int | None) -> None:
    """Breakers, tiers and their effective rates, queue depths, severity, adaptive factors."""
    if not watch:
        report = _answered(ctx, lambda: status_report(_app(ctx)))
        if as_json:
            click.echo(json.dumps(report, default=str, sort_keys=True))
        else:
            _print_status(report)
        return
    shown = 0
    try:
        while count is None or shown < count:
            if shown:
                time.sleep(interval)
            click.clear()
            click.echo(f"every {interval:g}s (Ctrl-C to stop)\n")
            try:
                _print_status(status_report(_app(ctx)))
            except StoreUnavailable as error:  # keep watching: it may come back
                url = masked_url(Resilience.of(_app(ctx)).settings.store_url)
                click.echo(f"error: the resilience store at {url} is unreachable: {error}")
            shown += 1
    except KeyboardInterrupt:
        pass


def _force(ctx: click.Context, name: str, state: BreakerState) -> None:
    _breaker(ctx, name)
    view = _answered(ctx, lambda: Resilience.of(_app(ctx)).breakers.force(name, state))
    click.echo(f"breaker {name!r} is now {view.state.value} (generation {view.generation})")


def _breaker_command(command: str, state: BreakerState, help_text: str) -> None:
    @resilience.command(name=command, help=help_text)
    @click.argument("name")
    @click.pass_context
    def act(ctx: click.Context, name: str) -> None:
        _force(ctx, name, state)


_breaker_command("open", BreakerState.FORCED_OPEN, "Force breaker NAME open until an operator closes it.")
_breaker_command("close", BreakerState.CLOSED, "Close breaker NAME (its window and trip count start again).")
_breaker_command(
    "reset", BreakerState.CLOSED, "Reset breaker NAME to closed, forgetting its failures and trips."
)
_breaker_command("disable", BreakerState.DISABLED, "Let every call through breaker NAME, recording nothing.")
