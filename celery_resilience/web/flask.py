"""Flask: ``init_app(app, user_id=..., tier=..., tenant=...)``.

``user_id``, ``tier`` and ``tenant`` are called with no argument inside the request (read
``flask.request`` or ``flask.g``) and return the caller's user id, tier and tenant (or
None; the tenant defaults to the user). The
caller is set before each request and cleared when it is torn down.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, g

from ..admission.caller import caller

__all__ = ["init_app"]

Reader = Callable[[], "str | int | None"]


def init_app(app: Flask, user_id: Reader, tier: Reader | None = None, tenant: Reader | None = None) -> None:
    def enter() -> None:
        chosen = tier() if tier is not None else None
        context = caller(
            user_id=user_id(),
            tier=None if chosen is None else str(chosen),
            tenant=tenant() if tenant is not None else None,
        )
        context.__enter__()
        g.celery_resilience_caller = context

    def leave(error: BaseException | None) -> None:
        context = g.pop("celery_resilience_caller", None)
        if context is not None:
            context.__exit__(None, None, None)

    app.before_request(enter)
    app.teardown_request(leave)
