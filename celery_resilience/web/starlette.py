"""Starlette and FastAPI: ``app.add_middleware(ResilienceMiddleware, user_id=..., tier=...)``.

``user_id``, ``tier`` and ``tenant`` take the ``Request`` and return the caller's user
id, tier and tenant (or None; the tenant defaults to the user). An ASGI middleware: the
endpoint, ``async def`` or sync (run in a thread with a copy of the context), publishes
inside the request's ``caller``.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..admission.caller import caller

__all__ = ["ResilienceMiddleware"]

Reader = Callable[[Request], "str | int | None"]


class ResilienceMiddleware:
    def __init__(
        self, app: ASGIApp, user_id: Reader, tier: Reader | None = None, tenant: Reader | None = None
    ) -> None:
        self.app = app
        self.user_id = user_id
        self.tier = tier
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        tier = self.tier(request) if self.tier is not None else None
        tenant = self.tenant(request) if self.tenant is not None else None
        with caller(user_id=self.user_id(request), tier=None if tier is None else str(tier), tenant=tenant):
            await self.app(scope, receive, send)
