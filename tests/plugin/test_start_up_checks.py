"""What is wrong in a configuration fails at start-up (``Resilience(app)`` or the app's
finalize), naming the setting or the task and what was expected."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from celery_resilience import AITask, ConfigurationError, Resilience, ResilientTask


def app_with(**conf: Any) -> Celery:
    app = Celery("checks", broker="memory://", set_as_current=False)
    app.conf.update({f"resilience_{k}": v for k, v in conf.items()})
    return app


def test_a_misspelt_built_in_fallback_step_is_refused() -> None:
    """'cache_similar' would never answer: it is neither a task nor the built-in step."""
    app = app_with(fallbacks={"ai.ask": ["ai.other", "cache_similar"]})
    with pytest.raises(ConfigurationError) as caught:
        Resilience(app)
    assert caught.value.setting == "resilience_fallbacks['ai.ask']"
    assert "did you mean 'cached_similar'?" in str(caught.value)


def test_a_task_naming_an_unknown_breaker_fails_when_the_app_is_finalized() -> None:
    """``breaker="opneai"`` fails at finalize, naming the task and the breakers there are."""
    app = app_with(breakers={"openai": {}})
    Resilience(app)

    @app.task(base=AITask, breaker="opneai", name="ai.ask", shared=False)
    def ask(prompt: str) -> str:
        return prompt

    with pytest.raises(ConfigurationError) as caught:
        app.finalize()
    assert caught.value.setting == "ai.ask.breaker"
    assert "did you mean 'openai'?" in str(caught.value) and "'opneai'" in str(caught.value)


def test_an_app_finalized_before_the_plugin_has_its_tasks_checked_by_it() -> None:
    """Tasks bound before ``Resilience(app)`` (the app finalized first) are checked when it starts."""
    app = app_with(breakers={"openai": {}})

    @app.task(base=AITask, breaker="opneai", name="ai.early", shared=False)
    def early(prompt: str) -> str:
        return prompt

    app.finalize()
    with pytest.raises(ConfigurationError) as caught:
        Resilience(app)
    assert caught.value.setting == "ai.early.breaker"


@pytest.mark.parametrize(
    ("attributes", "setting", "expected"),
    [
        ({"provider": "opneai"}, "checks.late.provider", "resilience_providers"),
        ({"fallbacks": ["templat"]}, "checks.late.fallbacks", "did you mean 'template'?"),
        ({"cache_prompt": "question"}, "checks.late.cache_prompt", "parameters of the task ['prompt']"),
        ({"request_type": "bacth"}, "checks.late.request_type", "did you mean 'batch'?"),
    ],
)
def test_a_task_defined_after_finalize_is_checked_as_it_is_defined(
    attributes: dict[str, Any], setting: str, expected: str
) -> None:
    """Tasks bound to a finalized app are checked at once: the decorator raises."""
    app = app_with(providers={"openai": {"rate": "10/s"}})
    Resilience(app)
    app.finalize()
    with pytest.raises(ConfigurationError) as caught:

        @app.task(base=AITask, name="checks.late", shared=False, **attributes)
        def late(prompt: str) -> str:
            return prompt

    assert caught.value.setting == setting and expected in str(caught.value)


def test_a_misspelt_setting_under_djangos_namespace_is_refused() -> None:
    """``CELERY_RESILIENCE_TEIRS`` (read through ``namespace="CELERY"``) is a typo, not ignored."""

    django_settings = SimpleNamespace(
        CELERY_BROKER_URL="memory://",
        CELERY_RESILIENCE_TIERS={"free": {"rate": "60/m"}},
        CELERY_RESILIENCE_TEIRS={"free": {"rate": "6/m"}},
    )

    app = Celery("django", set_as_current=False)
    app.config_from_object(django_settings, namespace="CELERY")
    with pytest.raises(ConfigurationError) as caught:
        Resilience(app)
    assert caught.value.setting == "CELERY_RESILIENCE_TEIRS"
    assert "did you mean CELERY_RESILIENCE_TIERS?" in str(caught.value)

    del django_settings.CELERY_RESILIENCE_TEIRS
    app = Celery("django", set_as_current=False)
    app.config_from_object(django_settings, namespace="CELERY")
    assert str(Resilience(app).settings.admission.tiers["free"].limit.rate) == "60/m"


def test_a_per_request_type_limit_for_a_request_type_that_does_not_exist_is_refused() -> None:
    """A limit keyed by 'bacth' could never apply."""
    app = app_with(tiers={"free": {"rate": "60/m", "request_types": {"bacth": {"rate": "6/m"}}}})
    with pytest.raises(ConfigurationError) as caught:
        Resilience(app)
    assert caught.value.setting == "resilience_tiers['free']['request_types']"
    assert "'bacth'" in str(caught.value)


def test_an_empty_tier_on_a_call_is_the_callers_error() -> None:
    """``tier=""`` is neither the default tier nor passed to the resolver: it is refused."""
    app = app_with()
    Resilience(app)

    @app.task(base=ResilientTask, name="t.work", shared=False)
    def work() -> None:
        return None

    with pytest.raises(ValueError, match="tier must be a non-empty name or None, got ''"):
        work.apply_async(user_id="u", tier="")


def test_an_unreachable_store_at_start_up_is_one_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    """A store URL on a closed port: one error naming the URL (password masked) and the policy."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = app_with(store_url=f"redis://:s3cret@127.0.0.1:{port}/0", store_timeout=0.2)
    with caplog.at_level(logging.ERROR, "celery_resilience"):
        Resilience(app)
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert f"redis://:***@127.0.0.1:{port}/0 is unreachable" in errors[0]
    assert "admission fails open" in errors[0] and "s3cret" not in errors[0]
