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
renews the others that were used (``due``), and with them the used leases ending on the
next line, whose new tokens wait as their successors (spent once the lease ends or runs
out, and no later than a window after they were minted): leases taken half a window
apart come to end together, and a process's hot keys cost one round trip per window
between them, not one per key nor one per half window.

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
    used: int = 0  # admissions made from it (or the lease it succeeded), not yet reported
    successor: int = 0  # tokens renewed before it ended, to spend once it ends or runs out
    successor_deadline: float = 0.0
    renewing: bool = False  # renewed before its end, the answer not yet in

    def promote(self) -> None:
        self.remaining = self.size = self.successor
        self.deadline = self.successor_deadline
        self.successor = 0

    def wanted(self) -> bool:
        """Worth renewing: it admitted since it was minted, or has admissions to report."""
        return self.used > 0 or self.remaining < self.size


class Renewal(NamedTuple):
    """A used lease to renew (that ended, or ends on the next line), and its admissions to
    report with the renewal; when it was asked for, and of which table."""

    bucket_key: str
    policy: AdmitPolicy
    shard: int
    used: int
    asked_at: float
    generation: int


class Leases:
    def __init__(self, window: float, monotonic: Callable[[], float]) -> None:
        self._window = window
        self._half = window / 2
        self._monotonic = monotonic
        self._leases: dict[tuple[str, AdmitPolicy], _Lease] = {}
        # The keys whose leases end on each grid line, in the order the lines come.
        self._ending: dict[int, list[tuple[str, AdmitPolicy]]] = {}
        self._generation = 0  # changes when the table is emptied: later answers have no lease
        self._lock = threading.Lock()
        _all_leases.add(self)

    def use(self, bucket_key: str, policy: AdmitPolicy) -> tuple[bool, int]:
        """Admit from the key's lease: ``(True, 0)`` when it had a token left; otherwise
        ``(False, n)`` with the ``n`` admissions of a spent lease, now to be reported."""
        with self._lock:
            lease = self._leases.get((bucket_key, policy))
            if lease is None:
                return False, 0
            now = self._monotonic()
            if lease.remaining > 0 and now < lease.deadline:
                lease.remaining -= 1
                lease.used += 1
                return True, 0
            if lease.successor and now < lease.successor_deadline:
                lease.promote()  # listed under its successor's line already
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
        the renewal; those over and unused just leave. When there are any, the used leases
        ending on the next line come along (they stay, marked as renewing)."""
        renewals: list[Renewal] = []
        with self._lock:
            if not self._ending:
                return renewals
            now = self._monotonic()
            now_line = math.floor(now / self._half)
            for line in sorted(self._ending):
                if line > now_line + 1 or len(renewals) >= MAX_RENEWALS or (line > now_line and not renewals):
                    break
                keys = self._ending[line]
                kept = [key for key in keys if self._settle(key, line * self._half, now, renewals)]
                if kept:
                    self._ending[line] = kept
                else:
                    del self._ending[line]
        return renewals

    def _settle(self, key: tuple[str, AdmitPolicy], end: float, now: float, renewals: list[Renewal]) -> bool:
        """One lease listed as ending at ``end``: renewed into ``renewals`` if due; whether it
        stays listed there."""
        lease = self._leases.get(key)
        if lease is None or lease.deadline != end:
            return False  # spent and gone, or renewed since: listed under another line
        room = len(renewals) < MAX_RENEWALS
        if now < end:  # ending on the next line: along, if used
            if room and not lease.successor and not lease.renewing and lease.wanted():
                renewals.append(Renewal(key[0], key[1], lease.shard, lease.used, now, self._generation))
                lease.used, lease.renewing = 0, True
            return True
        if lease.successor and now < lease.successor_deadline:
            lease.promote()  # listed under its successor's line already
            return False
        if lease.renewing or not room:
            return True  # its answer is on its way; or renewed by the next round trip
        del self._leases[key]
        if lease.wanted():
            renewals.append(Renewal(key[0], key[1], lease.shard, lease.used, now, self._generation))
        return False

    def renewed(self, renewals: list[Renewal], leased: list[int]) -> None:
        """The store's answers: the tokens it spared for each renewal (0 when none) become a
        lease, or the successor of a lease still running."""
        with self._lock:
            if renewals and renewals[0].generation != self._generation:
                return  # a drain emptied the table since they were asked for
            for renewal, tokens in zip(renewals, leased, strict=True):
                key = (renewal.bucket_key, renewal.policy)
                lease = self._leases.get(key)
                if lease is not None:
                    lease.renewing = False
                line = math.floor((renewal.asked_at + self._window) / self._half)
                end = line * self._half
                if not tokens or (lease is None and len(self._leases) >= _MAX_LEASES):
                    continue  # none spared; or no room for them: they go unspent
                if lease is None:
                    self._leases[key] = _Lease(tokens, end, renewal.shard, tokens)
                elif lease.successor or lease.deadline >= end:
                    continue  # a publish's own round trip leased it since: these go unspent
                else:
                    lease.successor, lease.successor_deadline = tokens, end
                self._ending.setdefault(line, []).append(key)

    def renewal_failed(self, renewals: list[Renewal]) -> None:
        """Renewals went unanswered: the leases still running end as they would have."""
        with self._lock:
            for renewal in renewals:
                lease = self._leases.get((renewal.bucket_key, renewal.policy))
                if lease is not None:
                    lease.renewing = False

    def give_back(self, bucket_key: str, policy: AdmitPolicy) -> bool:
        """Undo one admission made from the key's lease (its publish failed); False when the
        lease is gone (its admissions were reported: the bucket takes the token back)."""
        with self._lock:
            lease = self._leases.get((bucket_key, policy))
            # Only to a lease that gave a token: one its predecessor gave must not live on.
            if lease is None or lease.used <= 0 or lease.remaining >= lease.size:
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
        self._generation += 1
        return spent

    def _forget(self) -> None:
        self._leases.clear()
        self._ending.clear()
        self._generation += 1
        self._lock = threading.Lock()


_all_leases: weakref.WeakSet[Leases] = weakref.WeakSet()


def _forget_in_child() -> None:
    for leases in list(_all_leases):
        leases._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
