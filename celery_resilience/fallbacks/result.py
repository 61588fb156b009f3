"""``FallbackResult``: an answer that did not come from the primary, saying where it came from.

Callers must be able to tell a provider's answer from a template, so every fallback
answer carries its kind, its confidence and its source. It is registered with kombu's
JSON serializer, so ``result.get()`` gives callers the object back, not a bare dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kombu.utils.json import register_type

__all__ = ["FallbackResult", "FallbackKind", "DEFAULT_CONFIDENCE"]


class FallbackKind:
    ALTERNATIVE_PROVIDER = "alternative_provider"
    CACHED_SIMILAR = "cached_similar"
    RULE_BASED = "rule_based"
    TEMPLATE = "template"


# The reference's confidences; a cached answer's is its quality score.
DEFAULT_CONFIDENCE = {
    FallbackKind.ALTERNATIVE_PROVIDER: 1.0,
    FallbackKind.RULE_BASED: 0.4,
    FallbackKind.TEMPLATE: 0.2,
}


@dataclass(frozen=True)
class FallbackResult:
    """The answer (``value``), the kind of fallback that produced it, how far to trust it,
    which step (``source``), why the primary was not used (``reason``), what was tried
    before (``attempts``: ``[{"step": ..., "error": ...}]``), and, for a cached answer, the
    question it answered (``question``), so that an application can say "the answer to a
    similar question: ..." instead of passing it off as an answer to this one."""

    value: Any
    kind: str
    confidence: float
    source: str
    reason: str = ""
    attempts: list[dict[str, str]] = field(default_factory=list)
    question: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FallbackResult:
        return cls(**data)


register_type(
    FallbackResult, "celery_resilience.fallback_result", FallbackResult.to_json, FallbackResult.from_json
)
