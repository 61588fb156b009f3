"""The semantic cache's entries on Redis: one namespace's hashes, order and term sets under
one hash tag, each operation one script (``cache_put``, ``cache_candidates``,
``cache_judge``) or one command."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redis.commands.core import Script

from ..fallbacks.evidence import Judgement, parse_evidence
from ..fallbacks.port import CANDIDATE_BUDGET, RAREST_TERMS, CacheEntry
from .base import Call
from .keys import KeySpace

__all__ = ["RedisCache"]


class RedisCache:
    """``CacheStore``'s operations for ``RedisStore``, through its error-mapping ``call``."""

    def __init__(
        self,
        client: Any,  # redis.Redis, or a Cluster's client
        keys: KeySpace,
        call: Call,
        now: Callable[[], float],
        load: Callable[[str], str],
    ) -> None:
        self._redis = client
        self._keys = keys
        self._call = call
        self._now = now
        self._put: Script = client.register_script(load("cache_put"))
        self._candidates: Script = client.register_script(load("cache_candidates"))
        self._judge: Script = client.register_script(load("cache_judge"))

    def cache_put(self, namespace: str, entry: CacheEntry, max_entries: int, ttl: float) -> int:
        entries, order, evidence, term_prefix = self._keys.cache(namespace)
        now = repr(self._now())
        args = [now, repr(ttl), max_entries, entry.id, entry.to_json(), term_prefix, *entry.terms]
        return int(self._call(self._put, keys=[entries, order, evidence], args=args))

    def cache_candidates(self, namespace: str, terms: list[str], limit: int, ttl: float) -> list[CacheEntry]:
        entries, order, evidence, term_prefix = self._keys.cache(namespace)
        scratch = f"{term_prefix}~scratch:{uuid.uuid4().hex}"
        reply = self._call(
            self._candidates,
            keys=[entries, order, evidence, scratch, *(term_prefix + term for term in sorted(set(terms)))],
            args=[limit, repr(self._now()), repr(ttl), RAREST_TERMS, CANDIDATE_BUDGET],
        )
        pairs = zip(reply[0::2], reply[1::2], strict=True)
        return [CacheEntry.from_json(raw, parse_evidence(seen)) for raw, seen in pairs]

    def cache_touch(self, namespace: str, entry_id: str) -> None:
        _, order, _, _ = self._keys.cache(namespace)
        self._call(self._redis.zadd, order, {entry_id: self._now()}, xx=True)

    def cache_judge(self, namespace: str, judged: Sequence[tuple[str, Judgement]], keep: int) -> None:
        entries, _, evidence, _ = self._keys.cache(namespace)
        args: list[Any] = [keep]
        for entry_id, (similarity, agreed) in judged:
            args += [entry_id, repr(similarity), int(agreed)]
        self._call(self._judge, keys=[entries, evidence], args=args)
