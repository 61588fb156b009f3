"""Who is calling, set once per request instead of passed to every publish.

``with caller(user_id="u1", tier="pro"): ask.delay("hi")`` admits ``ask`` for ``u1``. The
context lives in a ``contextvars`` variable, so it follows the request through ``await``
in asyncio code and stays out of other requests. A thread started inside it does not
see it unless the context is copied into it (``contextvars.copy_context().run(...)``, or
``asyncio.to_thread``, which copies it). Nested contexts refine the outer one: what the
inner one names wins, what it leaves out is inherited. Keywords passed to the publish
itself win over both.

``caller`` also decorates a function (sync or ``async``): each call runs inside it.

``tenant`` names whose share of a saturated queue the work draws on (fair queueing):
the organisation behind the user, set by the server once per request (a middleware), not
by the publish, so that a tenant cannot split its work over names to gain a larger
share. Left out, the tenant is the user.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Caller", "caller", "current_caller"]

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Caller:
    """The caller's identity as far as it is known; None leaves a field to the defaults."""

    user_id: str | None = None
    tier: str | None = None
    request_type: str | None = None
    tenant: str | None = None

    def refined_by(self, inner: Caller) -> Caller:
        return Caller(
            inner.user_id if inner.user_id is not None else self.user_id,
            inner.tier if inner.tier is not None else self.tier,
            inner.request_type if inner.request_type is not None else self.request_type,
            inner.tenant if inner.tenant is not None else self.tenant,
        )


_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "celery_resilience_caller", default=None
)


# The caller set by the innermost ``caller(...)`` around this code, if any: the variable's
# own getter, since every publish asks.
current_caller: Callable[[], Caller | None] = _current.get


class caller:
    """Sets the caller for everything published inside it (see the module's docstring)."""

    def __init__(
        self,
        user_id: str | int | None = None,
        tier: str | None = None,
        request_type: str | None = None,
        tenant: str | int | None = None,
    ):
        for keyword, named in (("user_id", user_id), ("tenant", tenant)):
            if named is not None and not isinstance(named, str | int):
                raise TypeError(f"{keyword} must be a string or an integer, got {type(named).__name__}")
        for keyword, given in (("tier", tier), ("request_type", request_type)):
            if given is not None and (not isinstance(given, str) or not given):
                raise ValueError(f"{keyword} must be a non-empty name or None, got {given!r}")
        self.value = Caller(
            None if user_id is None else str(user_id),
            tier,
            request_type,
            None if tenant is None else str(tenant),
        )
        self._tokens: list[contextvars.Token[Caller | None]] = []

    def __enter__(self) -> Caller:
        outer = _current.get()
        value = self.value if outer is None else outer.refined_by(self.value)
        self._tokens.append(_current.set(value))
        return value

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        _current.reset(self._tokens.pop())

    def __call__(self, function: _F) -> _F:
        """Run each call of ``function`` (a coroutine function too) inside this context."""
        value = self.value
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with caller(value.user_id, value.tier, value.request_type, value.tenant):
                    return await function(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with caller(value.user_id, value.tier, value.request_type, value.tenant):
                return function(*args, **kwargs)

        return run  # type: ignore[return-value]
