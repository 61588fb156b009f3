"""Token leases: tokens a process took from a bucket in advance, to admit hot keys locally.

On an allow, the store may hand over a few extra tokens (``resilience_lease_max_tokens``,
sized so they last about ``resilience_lease_window`` at the key's rate), and the process
admits that key's next requests without a round trip. Leased tokens come out of the
shared bucket, so the cluster never admits more than the limit; they are spent at most
``lease_window`` seconds after they were minted, so over any interval ``T`` a key is
admitted at most ``rate x (T + lease_window) + burst + grace``.

Leases end on a grid of half windows: a lease minted at ``t`` lasts until the last grid
line before ``t + lease_window`` (half a window at least), so the leases a process took
together end together. The round trip of the first key that finds its lease over then
renews the others that were used (``due``): one round trip per window for all of a
process's hot keys, not one per key.

Admissions made from a lease are reported with the key's next round trip (``pending``)
or by ``drain`` (at exit, or when the table is full). Leases never survive a fork: parent
and child would spend the same tokens and report the same admissions.
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from .port import AdmitPolicy

__all__ = ["Leases", "Renewal", "MAX_RENEWALS"]

_MAX_LEASES = 65536
# Renewals riding on one round trip: enough for a process's hot keys, a bounded trip.
MAX_RENEWALS = 32


@dataclass(slots=True)
class _Lease:
    remaining: int
    deadline: float
    shard: int
    size: int
    used: int = 0  # admissions made from it, not yet reported


class Renewal(NamedTuple):
    """A used lease that ended: renew it, and report its admissions with the renewal."""

    bucket_key: str
    policy: AdmitPolicy
    shard: int
    used: int


class Leases:
    def __init__(self, window: float, monotonic: Callable[[], float]) -> None:
        self._window = window
        self._half = window / 2
        self._monotonic = monotonic
        self._leases: dict[tuple[str, AdmitPolicy], _Lease] = {}
        # The keys whose leases end on each grid line, in the order the lines come.
        self._ending: dict[int, list[tuple[str, AdmitPolicy]]] = {}
        self._lock = threading.Lock()
        _all_leases.add(self)

    def use(self, bucket_key: str, policy: AdmitPolicy) -> tuple[bool, int]:
        """Admit from the key's lease: ``(True, 0)`` when it had a token left; otherwise
        ``(False, n)`` with the ``n`` admissions of a spent lease, now to be reported."""
        with self._lock:
            lease = self._leases.get((bucket_key, policy))
            if lease is None:
                return False, 0
            if lease.remaining > 0 and self._monotonic() < lease.deadline:
                lease.remaining -= 1
                lease.used += 1
                return True, 0
            del self._leases[(bucket_key, policy)]
            return False, lease.used

    def take(
        self, bucket_key: str, shard: int, policy: AdmitPolicy, tokens: int
    ) -> dict[tuple[int, str], int]:
        """Keep ``tokens`` leased for the key; when the table is full, it is emptied first and
        the admissions it held are returned, by (shard, tier), for reporting."""
        with self._lock:
            spent = self._drain_locked() if len(self._leases) >= _MAX_LEASES else {}
            line = math.floor((self._monotonic() + self._window) / self._half)
            key = (bucket_key, policy)
            self._leases[key] = _Lease(tokens, line * self._half, shard, tokens)
            self._ending.setdefault(line, []).append(key)
            return spent

    def due(self) -> list[Renewal]:
        """The leases over by now that were used (up to ``MAX_RENEWALS``), to renew with the
        round trip about to be made: they leave the table, their admissions reported with
        the renewal. Those over and unused just leave."""
        renewals: list[Renewal] = []
        with self._lock:
            if not self._ending:
                return renewals
            now_line = math.floor(self._monotonic() / self._half)
            while self._ending and len(renewals) < MAX_RENEWALS:
                line = next(iter(self._ending))
                if line > now_line:
                    break
                keys = self._ending[line]
                while keys and len(renewals) < MAX_RENEWALS:
                    key = keys.pop()
                    lease = self._leases.get(key)
                    if lease is None or lease.deadline != line * self._half:
                        continue  # spent and gone, or renewed since: listed under another line
                    del self._leases[key]
                    if lease.remaining < lease.size:
                        renewals.append(Renewal(key[0], key[1], lease.shard, lease.used))
                if not keys:
                    del self._ending[line]
        return renewals

    def give_back(self, bucket_key: str, policy: AdmitPolicy) -> bool:
        """Undo one admission made from the key's lease (its publish failed); False when the
        lease is gone (its admissions were reported: the bucket takes the token back)."""
        with self._lock:
            lease = self._leases.get((bucket_key, policy))
            if lease is None or lease.used <= 0:
                return False
            lease.used -= 1
            lease.remaining += 1
            return True

    def drain(self) -> dict[tuple[int, str], int]:
        """Drop every lease; the admissions they made, by (shard, tier), for reporting."""
        with self._lock:
            return self._drain_locked()

    def _drain_locked(self) -> dict[tuple[int, str], int]:
        spent: dict[tuple[int, str], int] = {}
        for (_, policy), lease in self._leases.items():
            if lease.used:
                spent[(lease.shard, policy.tier)] = spent.get((lease.shard, policy.tier), 0) + lease.used
        self._leases.clear()
        self._ending.clear()
        return spent

    def _forget(self) -> None:
        self._leases.clear()
        self._ending.clear()
        self._lock = threading.Lock()


_all_leases: weakref.WeakSet[Leases] = weakref.WeakSet()


def _forget_in_child() -> None:
    for leases in list(_all_leases):
        leases._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
