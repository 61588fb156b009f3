"""What answers when the provider cannot: fallback chains and the semantic cache.

- ``chain``: ``FallbackRunner``, a task's chain in order; ``result``: ``FallbackResult``;
- ``cache``: the semantic cache; ``similarity``: the embedder and the quality gate, pure;
- ``settings``: chains, templates, the policy by failure, the cache; ``port``: the store.
"""

from .cache import SemanticCache
from .chain import FallbackRunner
from .result import FallbackKind, FallbackResult

__all__ = ["FallbackRunner", "FallbackResult", "FallbackKind", "SemanticCache"]
