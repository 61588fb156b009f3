"""The work of one request, the same under both apps: open a database session, read,
ask the provider, write the answer. The apps differ only in what surrounds it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .services import Database, Providers, Session

__all__ = ["classify_content", "prioritise_task"]

OpenSession = Callable[[], Session]


def classify_content(
    providers: Providers, database: Database, open_session: OpenSession, provider: str, text: str
) -> dict[str, Any]:
    with database.connection(open_session()) as session:
        label = providers.classify(provider, text)
        session.query()  # store the routing decision
    return {"label": label, "provider": provider}


def prioritise_task(
    providers: Providers, database: Database, open_session: OpenSession, provider: str, title: str
) -> dict[str, Any]:
    with database.connection(open_session()) as session:
        priority = providers.prioritise(provider, title)
        session.query()  # store the priority
    return {"priority": priority, "provider": provider}
