"""A static paraphrase-aware embedder for the semantic cache: WordLlama (l2_supercat, 256
dimensions), token vectors averaged, on numpy.

Where MiniLM runs a transformer (tens of milliseconds a text), WordLlama looks each
token's vector up and averages them: a tenth of a millisecond, and still "ship" and
"deliver" land close. The weights and the tokenizer ship in its registry package
(``wordllama``, 19 MB); they are loaded from the package's own folder with downloads
disabled, so nothing is fetched at run time. Install the extra:
``pip install celery-resilience[wordllama]``, and name it:
``resilience_semantic_cache = {"embedder": "wordllama"}``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError

__all__ = ["WordLlamaEmbedder"]


def _import_wordllama() -> ModuleType | None:
    """The package, imported on first use, None without the extra. Its import calls
    ``logging.basicConfig``: an application that merely imports this library must not find
    its root logger configured (a worker's or a CLI's output would change), so the import
    waits for the embedder to be chosen, and what it added to the root logger is undone."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return importlib.import_module("wordllama")
    except ImportError:
        return None
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


class WordLlamaEmbedder:
    """L2-normalised 256-dimension averages of WordLlama's token vectors."""

    name = "wordllama-l2-supercat-256"

    def __init__(self, setting: str = "resilience_semantic_cache['embedder']") -> None:
        wordllama = _import_wordllama()
        if wordllama is None:
            expected = "the wordllama extra installed (pip install 'celery-resilience[wordllama]')"
            raise ConfigurationError(setting, expected, "wordllama")
        # The package's folder holds weights/ and tokenizers/, the layout its loader reads
        # from a cache folder: given as the cache, nothing is looked for on the network.
        folder = Path(str(wordllama.__file__)).parent
        self._model: Any = wordllama.WordLlama.load(cache_dir=folder, disable_download=True)
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[float]:
        with self._lock:
            vector = self._model.embed([text], norm=True)[0]
        return [float(value) for value in vector]
