"""Django: ``celery_resilience.web.django.ResilienceMiddleware`` in ``MIDDLEWARE``.

Settings (each a callable taking the request, or its dotted path):

- ``RESILIENCE_USER_ID``: the caller's user id; by default the authenticated user's
  primary key, and no user for an anonymous request;
- ``RESILIENCE_TIER``: the caller's tier; by default none, so the Celery app's
  ``resilience_tier_resolver`` (or default tier) decides;
- ``RESILIENCE_TENANT``: the caller's tenant (the organisation whose share of a fair
  queue the work draws on); by default none: the user.

Works in sync and async (ASGI) deployments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from ..admission.caller import caller

__all__ = ["ResilienceMiddleware"]

Reader = Callable[[HttpRequest], "str | int | None"]


def authenticated_user(request: HttpRequest) -> str | None:
    """The authenticated user's primary key; None for an anonymous request."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


def _setting(name: str, default: Reader | None) -> Reader | None:
    value = getattr(settings, name, None)
    if value is None:
        return default
    found = import_string(value) if isinstance(value, str) else value
    if not callable(found):
        raise TypeError(f"{name} must be a callable taking the request, or its dotted path, not {value!r}")
    reader: Reader = found
    return reader


class ResilienceMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.user_id = _setting("RESILIENCE_USER_ID", authenticated_user)
        self.tier = _setting("RESILIENCE_TIER", None)
        self.tenant = _setting("RESILIENCE_TENANT", None)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def _caller(self, request: HttpRequest) -> caller:
        user_id = self.user_id(request) if self.user_id is not None else None
        tier = self.tier(request) if self.tier is not None else None
        tenant = self.tenant(request) if self.tenant is not None else None
        return caller(user_id=user_id, tier=None if tier is None else str(tier), tenant=tenant)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self._async:
            return self._acall(request)
        with self._caller(request):
            return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        with self._caller(request):
            return await self.get_response(request)
