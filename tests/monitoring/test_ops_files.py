"""The Prometheus rules and the Grafana dashboard shipped in ops/ name only metrics a real scrape
of the exporter returns, and the store going down is itself scraped."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import yaml
from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest

from celery_resilience import Resilience
from celery_resilience.prometheus import register
from celery_resilience.store import Store
from celery_resilience.testing import FakeClock

OPS = Path(__file__).resolve().parents[2] / "ops"
METRIC = re.compile(r"\bresilience_[a-z_]+\b")


def scrape(app: Celery) -> str:
    registry = CollectorRegistry()
    register(app, registry)
    return generate_latest(registry).decode()


def exported_names(store: Store, clock: FakeClock) -> set[str]:
    """The metric names a scrape of a configured app returns."""
    app = Celery("ops", broker="memory://localhost/", set_as_current=False)
    app.conf.resilience_breakers = {"openai": {}}
    Resilience(app, store=store, clock=clock)
    return set(re.findall(r"^# TYPE (\S+) ", scrape(app), re.MULTILINE))


def test_every_rule_names_scraped_metrics_and_says_what_it_means(store: Store, clock: FakeClock) -> None:
    """Each alerting rule has an expression over exported metrics, a severity and a summary."""
    exported = exported_names(store, clock)
    rules = yaml.safe_load((OPS / "prometheus-rules.yml").read_text())["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} >= {
        "ResilienceBreakerOpen",
        "ResilienceThrottlingHigh",
        "ResilienceGraceUsageHigh",
        "ResilienceStoreUnreachable",
    }
    for rule in rules:
        assert set(METRIC.findall(rule["expr"])) <= exported, rule["alert"]
        assert rule["labels"]["severity"] and rule["annotations"]["summary"]


def test_every_dashboard_panel_queries_scraped_metrics(store: Store, clock: FakeClock) -> None:
    """No panel of the Grafana dashboard queries a metric the exporter does not produce."""
    exported = exported_names(store, clock)
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    queried = {
        name for panel in dashboard["panels"] for t in panel["targets"] for name in METRIC.findall(t["expr"])
    }
    assert queried and queried <= exported


def test_a_store_that_does_not_answer_is_scraped_as_down() -> None:
    """With the store unreachable the scrape succeeds, saying resilience_store_up 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Celery("ops-down", broker="memory://localhost/", set_as_current=False)
    app.conf.update(resilience_store_url=f"redis://127.0.0.1:{port}/0", resilience_store_timeout=0.2)
    Resilience(app)
    assert "resilience_store_up 0.0" in scrape(app)
