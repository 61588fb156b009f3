"""How loaded the cluster is, and how much to scale admission by.

- ``signals``: severity and factors from resources, probes, breakers and queues, pure;
- ``prediction``: demand predicted from past weeks, pure;
- ``queue_depth``: queue depth through kombu; ``heartbeat``: what a worker uses;
- ``monitor``: ``LoadMonitor``, the severity and multiplier admission asks for;
- ``settings``: backpressure, worker health, prediction; ``port``: the store.
"""

from .monitor import LoadMonitor
from .signals import HealthSnapshot, LoadFactors, Severity

__all__ = ["LoadMonitor", "HealthSnapshot", "LoadFactors", "Severity"]
