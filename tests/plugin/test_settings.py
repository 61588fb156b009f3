"""Every resilience_* setting is validated at start-up, and errors name the setting."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_resilience import ConfigurationError, Resilience
from celery_resilience.admission.strategies import Criticality, StrategyKind
from celery_resilience.load.signals import Severity
from celery_resilience.settings import ResilienceSettings

TIERS = {
    "free": {"rate": "60/m", "burst": 10, "grace": 5},
    "enterprise": {"rate": "6000/m", "burst": 1000, "grace": 100, "minimum_guaranteed": "600/m"},
}


def settings(**conf: Any) -> ResilienceSettings:
    return ResilienceSettings.from_conf({f"resilience_{k}": v for k, v in conf.items()})


def test_defaults_need_no_configuration() -> None:
    """With nothing set, the embedded store and one standard tier apply."""
    s = settings()
    assert s.store_url == "memory://"
    assert s.admission.default_tier == "standard"
    assert s.admission.tiers["standard"].limit.rate.per_second == 10
    assert s.admission.fail_open
    assert s.admission.request_types["batch"] is Criticality.SHEDDABLE


def test_the_design_example_configuration_is_accepted() -> None:
    """The configuration users copy from the design document validates."""
    s = settings(tiers=TIERS, default_tier="free", store_url="redis://localhost:6379/1")
    assert s.admission.tiers["enterprise"].minimum_guaranteed is not None
    assert s.admission.tiers["free"].limit.burst == 10
    assert s.admission.tiers["free"].limit.grace_period == 60


def test_store_defaults_to_a_redis_broker() -> None:
    """A Redis broker doubles as the store unless told otherwise; other brokers get the embedded one."""
    assert ResilienceSettings.from_conf({}, broker_url="redis://h:6379/0").store_url == "redis://h:6379/0"
    assert ResilienceSettings.from_conf({}, broker_url="amqp://guest@h//").store_url == "memory://"


def test_default_strategy_table_is_the_reference_policy() -> None:
    """The default strategy table is the reference's, with sheddable work refused first under load."""
    table = settings(tiers=TIERS, default_tier="free").admission.strategies
    c = Criticality.SHEDDABLE_PLUS
    assert str(table.choose(Severity.CRITICAL, "enterprise", "default", c)) == "delay(5s)"
    assert str(table.choose(Severity.CRITICAL, "free", "default", c)) == "reject_with_backoff(30s)"
    assert (
        str(table.choose(Severity.HIGH, "free", "critical_business", Criticality.CRITICAL_PLUS))
        == "delay(2s)"
    )
    assert str(table.choose(Severity.HIGH, "free", "default", c)) == "queue_with_timeout(10s)"
    assert str(table.choose(Severity.NORMAL, "free", "batch", Criticality.SHEDDABLE)) == "delay(1s)"
    shed = table.choose(Severity.HIGH, "enterprise", "batch", Criticality.SHEDDABLE)
    assert shed.kind is StrategyKind.REJECT_WITH_BACKOFF


BAD_CONFIGURATIONS: list[tuple[dict[str, Any], str, str]] = [
    ({"tiers": {"free": {"rate": "sixty per minute"}}}, "resilience_tiers['free']['rate']", "600/m"),
    ({"tiers": {"free": {"rate": "60/fortnight"}}}, "resilience_tiers['free']['rate']", "unit"),
    ({"tiers": {"free": {"rate": "0/m"}}}, "resilience_tiers['free']['rate']", "above zero"),
    ({"tiers": {"free": {"rate": "60/m", "burst": -5}}}, "resilience_tiers['free']['burst']", "integer >= 1"),
    ({"tiers": {"free": {"rate": "60/m", "burst": 2.5}}}, "resilience_tiers['free']['burst']", "integer"),
    ({"tiers": {"free": {"rate": "60/m", "grace": -1}}}, "resilience_tiers['free']['grace']", ">= 0"),
    ({"tiers": {"free": {"burst": 5}}}, "resilience_tiers['free']['rate']", "rate"),
    ({"tiers": {"free": {"rate": "60/m", "brust": 5}}}, "resilience_tiers['free']['brust']", "one of"),
    (
        {"tiers": {"free": {"rate": "60/m", "minimum_guaranteed": "600/m"}}},
        "resilience_tiers['free']['minimum_guaranteed']",
        "at most",
    ),
    (
        {"tiers": {"free": {"rate": "60/m", "maximum_burst": "6/m"}}},
        "resilience_tiers['free']['maximum_burst']",
        "at least",
    ),
    ({"tiers": ["free"]}, "resilience_tiers", "mapping"),
    ({"tiers": {"free tier": {"rate": "60/m"}}}, "resilience_tiers", "names of letters"),
    ({"request_types": {"chat:fast": "critical"}}, "resilience_request_types", "names of letters"),
    ({"tiers": {}}, "resilience_tiers", "at least one tier"),
    ({"tiers": TIERS, "default_tier": "gold"}, "resilience_default_tier", "configured tiers"),
    ({"tiers": TIERS}, "resilience_default_tier", "configured tiers"),
    (
        {"throttle_strategies": [{"strategy": "pause", "seconds": 1}]},
        "resilience_throttle_strategies[0]['strategy']",
        "delay",
    ),
    (
        {"throttle_strategies": [{"strategy": "delay", "seconds": -1}]},
        "resilience_throttle_strategies[0]['seconds']",
        "> 0",
    ),
    (
        {"throttle_strategies": [{"severity": "high", "strategy": "delay", "seconds": 1}]},
        "resilience_throttle_strategies",
        "no conditions",
    ),
    (
        {
            "throttle_strategies": [
                {"severity": "extreme", "strategy": "delay", "seconds": 1},
                {"strategy": "delay", "seconds": 1},
            ]
        },
        "resilience_throttle_strategies[0]['severity']",
        "names among",
    ),
    (
        {
            "throttle_strategies": [
                {"tier": "gold", "strategy": "delay", "seconds": 1},
                {"strategy": "delay", "seconds": 1},
            ]
        },
        "resilience_throttle_strategies[0]['tier']",
        "names among",
    ),
    ({"throttle_strategies": "delay"}, "resilience_throttle_strategies", "list of rules"),
    ({"request_types": {"chat": "important"}}, "resilience_request_types['chat']", "criticality"),
    ({"default_request_type": "chat"}, "resilience_default_request_type", "request type"),
    ({"criticality_reserve": {"sheddable": 1.5}}, "resilience_criticality_reserve['sheddable']", "[0, 1)"),
    ({"admission_on_store_failure": "ajar"}, "resilience_admission_on_store_failure", "'open' or 'closed'"),
    ({"store_url": "mysql://db"}, "resilience_store_url", "redis://"),
    ({"store_timeout": "fast"}, "resilience_store_timeout", "seconds"),
    ({"store_timeout": 0}, "resilience_store_timeout", "> 0"),
    ({"key_prefix": "app{1}"}, "resilience_key_prefix", "braces"),
    ({"key_shards": 0}, "resilience_key_shards", "integer between"),
    ({"max_throttle_delay": True}, "resilience_max_throttle_delay", "seconds"),
    ({"tier_resolver": "no.such.module.resolve"}, "resilience_tier_resolver", "importable"),
    ({"tier_resolver": 42}, "resilience_tier_resolver", "callable"),
    ({"teirs": TIERS}, "resilience_teirs", "did you mean resilience_tiers"),
    (
        {"breakers": {"openai": {"failure_threshold": 0}}},
        "resilience_breakers['openai']['failure_threshold']",
        "> 0",
    ),
    (
        {"breakers": {"openai": {"half_open_probes": 0}}},
        "resilience_breakers['openai']['half_open_probes']",
        ">= 1",
    ),
    (
        {"breakers": {"openai": {"half_open_probes": 1.5}}},
        "resilience_breakers['openai']['half_open_probes']",
        "integer",
    ),
    ({"breakers": {"openai": {"window": "1m"}}}, "resilience_breakers['openai']['window']", "a number"),
    ({"breakers": {"openai": {"jitter": 2}}}, "resilience_breakers['openai']['jitter']", "[0, 1]"),
    (
        {"breakers": {"openai": {"recovery_timeout": 60, "max_recovery_timeout": 10}}},
        "resilience_breakers['openai']['max_recovery_timeout']",
        "at least recovery_timeout",
    ),
    ({"breakers": {"openai": {"treshold": 5}}}, "resilience_breakers['openai']['treshold']", "one of"),
    ({"breakers": {"open ai": {}}}, "resilience_breakers", "names of letters"),
    ({"breakers": {"openai": 5}}, "resilience_breakers['openai']", "mapping of breaker options"),
    ({"error_weights": {"timeouts": 1.0}}, "resilience_error_weights", "categories among"),
    ({"error_weights": {"timeout": -1}}, "resilience_error_weights['timeout']", ">= 0"),
    ({"error_rules": ["no.such.rule"]}, "resilience_error_rules[0]", "importable"),
    ({"error_rules": "os.path.basename"}, "resilience_error_rules", "a list"),
    ({"providers": {"openai": {"rate": "lots"}}}, "resilience_providers['openai']['rate']", "600/m"),
    (
        {"providers": {"openai": "1000/m"}},
        "resilience_providers['openai']",
        "{'requests': '500/m', 'tokens': '200000/m'}",
    ),
    (
        {"queue_thresholds": {"celery": {"high": 5000, "critical": 1000}}},
        "resilience_queue_thresholds['celery']['critical']",
        "more than high",
    ),
    ({"queue_thresholds": {"celery": {"high": 100}}}, "resilience_queue_thresholds['celery']", "exactly"),
    (
        {"queue_thresholds": {"celery": {"high": -1, "critical": 5}}},
        "resilience_queue_thresholds['celery']['high']",
        ">= 1",
    ),
    ({"depth_interval": 0}, "resilience_depth_interval", "> 0"),
    ({"heartbeat_interval": "5s"}, "resilience_heartbeat_interval", "seconds"),
    ({"resource_thresholds": [[0.9, 3]]}, "resilience_resource_thresholds", "pairs in (0, 1]"),
    (
        {"severity_thresholds": {"high": 0.9, "critical": 0.8}},
        "resilience_severity_thresholds['critical']",
        "more than high",
    ),
    ({"severity_thresholds": {"high": 0.8}}, "resilience_severity_thresholds", "'critical'"),
    (
        {"severity_thresholds": {"high": 0, "critical": 0.9}},
        "resilience_severity_thresholds['high']",
        "(0, 1]",
    ),
    (
        {"providers": {"openai": {"rate": "10/m", "burst": 10}}},
        "resilience_providers['openai']['burst']",
        "no burst: a unit is a sliding window",
    ),
    ({"providers": {"openai": {"rate": "0.5/m"}}}, "resilience_providers['openai']['rate']", "at least one"),
    ({"health_probes": {"db": "no.such.probe"}}, "resilience_health_probes['db']", "importable"),
    ({"prediction": {"spike": 0.5}}, "resilience_prediction['spike']", "> 1"),
    ({"prediction": {"enabled": "yes"}}, "resilience_prediction['enabled']", "True or False"),
    ({"fallbacks": {"ai.ask": "template"}}, "resilience_fallbacks['ai.ask']", "a list of steps"),
    ({"fallbacks": {"ai.ask": [42]}}, "resilience_fallbacks['ai.ask']", "steps that are"),
    ({"fallbacks": ["template"]}, "resilience_fallbacks", "a mapping"),
    ({"templates": {"ai.ask": 5}}, "resilience_templates", "template string"),
    (
        {"fallback_policy": {"content_policy": ["everything"]}},
        "resilience_fallback_policy['content_policy']",
        "kinds among",
    ),
    ({"fallback_policy": {"typo": ["template"]}}, "resilience_fallback_policy", "categories among"),
    ({"semantic_cache": {"similarity": 1.5}}, "resilience_semantic_cache['similarity']", "(0, 1]"),
    ({"semantic_cache": {"ttl": -1}}, "resilience_semantic_cache['ttl']", "> 0"),
    ({"semantic_cache": {"max_error": 2}}, "resilience_semantic_cache['max_error']", "(0, 1]"),
    ({"semantic_cache": {"shadow_share": -0.1}}, "resilience_semantic_cache['shadow_share']", "[0, 1]"),
    ({"semantic_cache": {"judge": 3}}, "resilience_semantic_cache['judge']", "cached and the fresh answer"),
    (
        {"semantic_cache": {"embedder": "no.such.embedder"}},
        "resilience_semantic_cache['embedder']",
        "importable",
    ),
    ({"semantic_cache": {"size": 10}}, "resilience_semantic_cache", "keys among"),
    ({"alerts": {"throttled": {"threshold": 5}}}, "resilience_alerts", "rules among"),
    ({"alerts": {"grace_usage": {"level": "loud"}}}, "resilience_alerts['grace_usage']['level']", "one of"),
    ({"alerts": {"grace_usage": {"cooldown": -1}}}, "resilience_alerts['grace_usage']['cooldown']", ">= 0"),
    ({"alert_interval": 0}, "resilience_alert_interval", "> 0"),
    ({"sentry_dsn": "not a dsn"}, "resilience_sentry_dsn", "Sentry DSN"),
]


@pytest.mark.parametrize(("conf", "setting", "expected"), BAD_CONFIGURATIONS)
def test_wrong_settings_fail_naming_the_setting(conf: dict[str, Any], setting: str, expected: str) -> None:
    """Each wrong configuration raises ConfigurationError naming the setting and what was expected."""
    with pytest.raises(ConfigurationError) as caught:
        settings(**conf)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(f"{setting}: expected")
    assert expected in str(caught.value)


def test_resilience_app_raises_at_start_up() -> None:
    """The error surfaces at Resilience(app), before any task is sent."""
    app = Celery("bad", broker="memory://", set_as_current=False)
    app.conf.resilience_tiers = {"free": {"rate": "60/m", "burst": -1}}
    with pytest.raises(ConfigurationError, match=r"resilience_tiers\['free'\]\['burst'\]"):
        Resilience(app)


def test_breaker_settings_fill_in_defaults() -> None:
    """A breaker needs only its name; the probe lease outlives the call timeout."""
    s = settings(breakers={"openai": {}, "slow": {"call_timeout": 40}}, error_weights={"other": 0.0})
    assert (
        s.breakers.policies["openai"].failure_threshold == 5.0
        and s.breakers.policies["openai"].probe_lease == 60.0
    )
    assert s.breakers.policies["slow"].probe_lease == 80.0
    assert s.breakers.classifier(ValueError()).weight == 0.0


def test_fallback_chains_by_task_then_breaker_then_the_tasks_own() -> None:
    """resilience_fallbacks overrides a task's chain by task name first, then by breaker name."""
    s = settings(
        fallbacks={"ai.ask": ["template"], "openai": ["cached_similar"]},
        fallback_policy={"content_policy": ["provider", "template"]},
    )
    chains = s.fallbacks
    assert chains.chain_for("ai.ask", "openai", ["ai.other"]) == ("template",)
    assert chains.chain_for("ai.summarise", "openai", ["ai.other"]) == ("cached_similar",)
    assert chains.chain_for("ai.summarise", "anthropic", ["ai.other"]) == ("ai.other",)
    assert chains.policy["content_policy"] == ("provider", "template")
    assert "provider" not in chains.policy["bad_request"]


def test_tier_resolver_accepts_a_dotted_path() -> None:
    """A resolver named by dotted path is imported once at start-up."""
    s = settings(tier_resolver="os.path.basename")
    assert s.admission.tier_resolver is not None and s.admission.tier_resolver("a/free") == "free"


def test_settings_are_immutable() -> None:
    """One frozen object per app: nothing can change a limit behind the validator's back."""
    s = settings(tiers=TIERS, default_tier="free")
    with pytest.raises(AttributeError):
        s.admission.default_tier = "enterprise"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.admission.tiers["gold"] = s.admission.tiers["free"]  # type: ignore[index]


def test_every_setting_is_in_the_settings_reference() -> None:
    """A setting users cannot look up is a setting they cannot trust: each has its heading."""
    from pathlib import Path

    from celery_resilience.settings import known_settings

    reference = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    assert [name for name in sorted(known_settings()) if f"### `{name}`" not in reference] == []


def test_resource_adaptation_can_be_turned_off() -> None:
    """No resource steps leave rates alone; no severity thresholds leave severity to the queues."""
    s = settings(resource_thresholds=[], severity_thresholds={})
    assert s.load.resource_steps == () and s.load.severity_thresholds is None
    assert settings().load.severity_thresholds == (0.8, 0.9)
