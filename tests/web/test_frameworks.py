"""Each framework's own test client against the example apps: a request's ``delay()`` is
admitted for the request's user, and a user over the limit gets 429 with Retry-After."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
from celery import signals

# Set only while Django reads it: worker processes later tests start inherit the
# environment, and Celery's Django fixup would try to import the example site there.
_ours = "DJANGO_SETTINGS_MODULE" not in os.environ
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.web.django_site.settings")
django.setup()
if _ours:
    del os.environ["DJANGO_SETTINGS_MODULE"]

from django.test import AsyncClient, Client  # noqa: E402 - after Django is set up
from fastapi.testclient import TestClient  # noqa: E402

from examples.web import fastapi_app, flask_app  # noqa: E402

Post = Callable[[str, dict[str, str]], tuple[int, dict[str, str]]]


def flask_post(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = flask_app.app.test_client().post(path, headers=headers)
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}


def fastapi_post(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = TestClient(fastapi_app.app).post(path, headers=headers)
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}


def django_post(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = Client().post(path, headers=headers)
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}


def django_async_post(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    response = asyncio.run(AsyncClient().post(path, headers=headers))
    return response.status_code, {k.lower(): v for k, v in response.headers.items()}


@pytest.fixture
def published() -> Iterator[list[dict[str, Any]]]:
    """The ``resilience`` header of each message published meanwhile."""
    seen: list[dict[str, Any]] = []

    def capture(headers: dict[str, Any] | None = None, **_: Any) -> None:
        seen.append(dict((headers or {}).get("resilience") or {}))

    signals.before_task_publish.connect(capture, weak=False, dispatch_uid="web-test")
    yield seen
    signals.before_task_publish.disconnect(dispatch_uid="web-test")


@pytest.mark.parametrize("post", [flask_post, fastapi_post, django_post, django_async_post])
def test_a_requests_publishes_are_admitted_for_its_user(post: Post, published: list[dict[str, Any]]) -> None:
    """The middleware names the caller: a free user's third request is refused, a pro user's is not."""
    free, pro = f"free-{uuid.uuid4().hex[:6]}", f"pro-{uuid.uuid4().hex[:6]}"
    statuses = [post("/summarise?text=hi", {"X-User-Id": free})[0] for _ in range(3)]
    status, headers = post("/summarise?text=hi", {"X-User-Id": free})
    assert statuses == [202, 202, 429] and status == 429 and int(headers["retry-after"]) >= 30
    assert post("/summarise?text=hi", {"X-User-Id": pro, "X-Tier": "pro"})[0] == 202
    assert [(h["user_id"], h["tier"]) for h in published] == [(free, "free")] * 2 + [(pro, "pro")]
