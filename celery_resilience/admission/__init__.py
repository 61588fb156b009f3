"""Admission control at enqueue time: per user, tier and request type.

- ``bucket``: the algorithm (token bucket, grace, paced reservations, leases), pure;
- ``strategies``: criticality classes and the throttling table, pure;
- ``plan``: what one decision needs, worked out from the settings, pure;
- ``settings``: ``resilience_tiers``, request types, the table, leases;
- ``gate``: ``Admission``, the decision as a process makes it; ``leases``: hot keys;
- ``port``: what it needs of the store.
"""

from .gate import Admission, Verdict
from .plan import CallContext
from .strategies import Criticality, StrategyKind

__all__ = ["Admission", "Verdict", "CallContext", "Criticality", "StrategyKind"]
