"""Store key layout.

Every key lives under one configurable prefix and carries a Redis Cluster hash
tag naming a shard, so that all keys one atomic script touches (a user's bucket
and the metric counters it updates) hash to the same slot, while the load still
spreads over ``shards`` slots.

User ids and other caller-supplied parts are untrusted: ``escape_part`` maps them
injectively onto a safe alphabet, so ``"a:b"`` and ``"a"`` + ``"b"`` can never name
the same key, no value can open a hash tag or a glob, and huge values are hashed to
a bounded length.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

__all__ = ["KeySpace", "escape_part", "ANONYMOUS"]

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_MAX_ESCAPED = 128

# Escaping never produces "~", so these markers cannot be forged by a user id.
ANONYMOUS = "~anonymous"
_HASHED_MARK = "~h"


def escape_part(value: str) -> str:
    """Injective, Redis-safe spelling of an untrusted key part.

    Characters outside ``[A-Za-z0-9_.-]`` become ``%XX`` per UTF-8 byte (``%`` itself
    included, which keeps the mapping injective). Results longer than 128 bytes are
    replaced by a SHA-256 digest under a marker escaping cannot produce.
    """
    out: list[str] = []
    for char in value:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    escaped = "".join(out)
    if len(escaped) > _MAX_ESCAPED:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{_HASHED_MARK}{digest}"
    return escaped


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Builds every key the plugin writes; the one place that knows their shape."""

    prefix: str
    shards: int

    def shard_of(self, scope: str) -> int:
        return zlib.crc32(scope.encode()) % self.shards

    def shard_of_key(self, key: str) -> int:
        """The shard named by a key's hash tag."""
        return int(key[key.index("{s") + 2 : key.index("}")])

    def _tag(self, shard: int) -> str:
        return f"{self.prefix}:{{s{shard}}}"

    def bucket(self, scope: str) -> tuple[str, int]:
        """Key of the admission bucket for an already escaped scope, and its shard."""
        shard = self.shard_of(scope)
        return f"{self._tag(shard)}:bucket:{scope}", shard

    def metrics(self, shard: int, minute: int, scope: str = "") -> str:
        """Per-minute counters; ``scope`` keeps other families (provider calls) apart."""
        return f"{self._tag(shard)}:metrics{':' + scope if scope else ''}:{minute}"

    def all_metrics(self, minute: int, scope: str = "") -> list[str]:
        return [self.metrics(shard, minute, scope) for shard in range(self.shards)]

    def user_bucket(self, user_id: str | None, tier: str, request_type: str | None) -> tuple[str, int]:
        """A caller's bucket: the user's own (without a user, the tier's anonymous one), per
        request type when ``request_type`` is given (it has a limit of its own)."""
        who = escape_part(user_id) if user_id is not None else f"{ANONYMOUS}.{escape_part(tier)}"
        return self.bucket(who if request_type is None else f"{who}:{escape_part(request_type)}")

    def provider(self, name: str) -> tuple[str, int]:
        """The requests bucket of a provider (escaping never yields '~', so no user id matches)."""
        return self.bucket(f"~provider.{escape_part(name)}")

    def provider_units(self, name: str, units: tuple[str, ...]) -> tuple[list[str], int]:
        """One bucket per unit of a provider's budget, sharing its hash tag: requests keep
        the provider's bucket, other units (fixed names, never a user's) get a suffix."""
        key, shard = self.provider(name)
        return [key if unit == "requests" else f"{key}:{unit}" for unit in units], shard

    def provider_windows(self, name: str, units: tuple[str, ...]) -> tuple[list[str], int]:
        """Each unit's sliding window: a sorted set of its reservations by time, then a
        hash of their costs (two keys per unit, in the units' order, one hash tag)."""
        keys, shard = self.provider_units(name, units)
        return [part for key in keys for part in (f"{key}:window", f"{key}:window:cost")], shard

    def provider_timetable(self, name: str, units: tuple[str, ...]) -> list[str]:
        """The buckets on which queued calls book their turn, one per unit."""
        return [f"{key}:timetable" for key in self.provider_units(name, units)[0]]

    def provider_retries(self, name: str) -> str:
        """A provider's retry budget: first attempts and retries per slice of its window."""
        return f"{self.provider(name)[0]}:retries"

    def provider_learned(self, name: str) -> str:
        """A provider's learned rates, one field per unit."""
        return f"{self.provider(name)[0]}:learned"

    def breaker(self, name: str) -> list[str]:
        """State hash, window hash and probe set of one breaker, sharing one hash tag."""
        base = f"{self.prefix}:{{b.{escape_part(name)}}}:breaker"
        return [base, f"{base}:window", f"{base}:probes"]

    def breaker_channel(self) -> str:
        """Pub/sub channel on which every breaker transition is announced."""
        return f"{self.prefix}:breaker-events"

    def breaker_shard_channel(self, name: str) -> str:
        """Sharded pub/sub channel of one breaker's transitions (a Cluster's): in the slot of
        the breaker's keys, so the script announcing a transition publishes on its own node."""
        return f"{self.prefix}:{{b.{escape_part(name)}}}:events"

    def cache(self, namespace: str) -> tuple[str, str, str, str]:
        """A semantic cache's entries hash, order set, evidence hash and term-set key prefix
        (one hash tag)."""
        base = f"{self.prefix}:{{c.{escape_part(namespace)}}}:cache"
        return f"{base}:entries", f"{base}:order", f"{base}:evidence", f"{base}:t:"

    def fair(self, queue: str, kind: str = "queue") -> list[str]:
        """A fair queue's tenant tags (sorted set by finish tag), its state hash (weights,
        their sum, the mean cost), the workers' service rates and its counters (one hash
        tag); of a provider budget's tenants (``kind="provider"``), apart from any queue's."""
        mark = "fp" if kind == "provider" else "f"
        base = f"{self.prefix}:{{{mark}.{escape_part(queue)}}}:fair"
        return [f"{base}:tags", base, f"{base}:capacity", f"{base}:stats"]

    def tenant(self, tenant: str | None) -> str:
        """A tenant as a member of a fair queue's tags (the anonymous callers: a marker)."""
        return ANONYMOUS if tenant is None else escape_part(tenant)

    def lease(self, name: str) -> str:
        return f"{self.prefix}:{{monitor}}:lease:{escape_part(name)}"

    def cooldown(self, name: str) -> str:
        return f"{self.prefix}:{{monitor}}:cooldown:{escape_part(name)}"

    def alerts(self) -> str:
        """List of the latest alerts sent (JSON), newest first."""
        return f"{self.prefix}:{{monitor}}:alerts"

    def health(self) -> str:
        """Hash of worker name -> its latest heartbeat (JSON)."""
        return f"{self.prefix}:{{health}}:workers"

    def load(self) -> str:
        """Hash of minute -> the cluster's resource use then (for the throttling/load correlation)."""
        return f"{self.prefix}:{{load}}:minutes"

    def demand(self) -> str:
        """Hash of absolute hour -> requests admitted or refused in that hour."""
        return f"{self.prefix}:{{demand}}:hours"

    def pattern(self) -> str:
        """Glob matching every key of this key space, for operators and clean-up."""
        return f"{self.prefix}:*"
