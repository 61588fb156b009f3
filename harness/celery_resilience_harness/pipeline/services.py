"""What the pipeline's tasks talk to: two AI providers, a database, and the rules that
answer when neither provider can."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import openai

__all__ = [
    "CATEGORIES",
    "PRIORITIES",
    "DatabaseBusy",
    "Database",
    "Providers",
    "classify_by_keywords",
    "prioritise_by_rules",
    "tier_of",
]

CATEGORIES = ("bug", "billing", "security", "feature", "question")
PRIORITIES = ("p0", "p1", "p2", "p3")


class DatabaseBusy(Exception):
    """No connection within the pool's timeout: the database is saturated."""


class Providers:
    """OpenAI-compatible clients for the primary and the secondary provider.

    ``max_retries`` is the SDK's own retry loop: 0 under celery-resilience (the task's
    retries are the one loop), the SDK's default of 2 in the plain pipeline.
    """

    def __init__(self, services_url: str, *, max_retries: int, timeout: float) -> None:
        self.clients = {
            name: openai.OpenAI(
                base_url=f"{services_url}/{name}/v1",
                api_key="sk-simulation",
                max_retries=max_retries,
                timeout=timeout,
            )
            for name in ("primary", "secondary")
        }

    def ask(self, provider: str, instructions: str, text: str) -> str:
        completion = self.clients[provider].chat.completions.create(
            model="gpt-4o-mini" if provider == "primary" else "claude-compatible",
            messages=[{"role": "system", "content": instructions}, {"role": "user", "content": text}],
            max_tokens=8,
        )
        return (completion.choices[0].message.content or "").strip()

    def classify(self, provider: str, text: str) -> str:
        answer = self.ask(provider, f"Route this message. Answer with one of: {', '.join(CATEGORIES)}", text)
        return answer if answer in CATEGORIES else "question"

    def prioritise(self, provider: str, title: str) -> str:
        answer = self.ask(provider, f"Rate the urgency. Answer with one of: {', '.join(PRIORITIES)}", title)
        return answer if answer in PRIORITIES else "p2"


class Database:
    """The application database, reached over HTTP: a connection is held for a whole
    request, the way an ORM session per task holds one."""

    def __init__(self, services_url: str, *, timeout: float = 30.0) -> None:
        self.url = f"{services_url}/db"
        self.http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=256))

    def open(self) -> Session:
        reply = self.http.post(f"{self.url}/connect")
        if reply.status_code == 503:
            raise DatabaseBusy(reply.json()["error"]["message"])
        reply.raise_for_status()
        return Session(self.http, self.url, int(reply.json()["connection"]))

    @contextmanager
    def connection(self, session: Session | None = None) -> Iterator[Session]:
        """A session for the block, closed after it (``session``: one opened already)."""
        session = session if session is not None else self.open()
        try:
            yield session
        finally:
            session.close()

    def pool_usage(self) -> float:
        """Share of the database's connections in use (the health probe)."""
        stats = self.http.get(f"{self.url}/stats").json()
        return min(1.0, float(stats["usage"]))


class Session:
    def __init__(self, http: httpx.Client, url: str, connection: int) -> None:
        self.http = http
        self.url = url
        self.connection = connection

    def query(self) -> None:
        self.http.post(f"{self.url}/query", json={"connection": self.connection}).raise_for_status()

    def close(self) -> None:
        with suppress(httpx.HTTPError):  # the server reaps idle connections
            self.http.post(f"{self.url}/close", json={"connection": self.connection})


def tier_of(user_id: str) -> str | None:
    """``resilience_tier_resolver``: the simulation's user ids start with their tier."""
    prefix = user_id.split("-", 1)[0]
    return prefix if prefix in ("free", "pro", "enterprise") else None


_KEYWORDS = {
    "security": ("password", "breach", "leak", "phishing", "vulnerab", "2fa", "hacked"),
    "billing": ("invoice", "refund", "charge", "payment", "subscription", "price"),
    "bug": ("error", "crash", "broken", "fails", "exception", "bug", "500"),
    "feature": ("would be great", "please add", "feature", "support for", "wish"),
}


def classify_by_keywords(text: str) -> str:
    """The rule-based fallback for classification: the first category whose keywords appear."""
    lowered = text.lower()
    for category, words in _KEYWORDS.items():
        if any(word in lowered for word in words):
            return category
    return "question"


_DAYS = re.compile(r"\bin (\d+) days?\b")


def prioritise_by_rules(title: str) -> str:
    """The rule-based fallback for prioritisation: outages and security first, then deadlines."""
    lowered = title.lower()
    if any(word in lowered for word in ("outage", "down", "breach", "data loss")):
        return "p0"
    if any(word in lowered for word in ("customer", "blocker", "today", "urgent")):
        return "p1"
    days = _DAYS.search(lowered)
    if days is not None:
        return "p1" if int(days.group(1)) <= 2 else "p2"
    return "p3"
