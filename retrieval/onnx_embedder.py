"""BERT-style sentence embedders exported to ONNX, run with onnxruntime (no torch).

The bundled one is BAAI/bge-small-en-v1.5 (int8, 384 dims, English): CLS pooling, and queries
(not passages) get bge's retrieval instruction as a prefix. ADR 0004 has its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.embedders import _check_texts, _embed_batched
from retrieval.onnx_bert import OnnxBert

BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "


class OnnxBertEmbedder:
    name: str
    dim: int
    max_tokens: int

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str,
        query_prefix: str = "",
        threads: int = 1,
        batch_size: int = 16,
        max_length: int = 512,
    ) -> None:
        from tokenizers import Tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._model = OnnxBert(model_dir, threads=threads, max_length=max_length)
        self._counter: Any = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._counter.no_truncation()
        self._counter.no_padding()
        self.name = name
        self.query_prefix = query_prefix
        self.threads = threads
        self.batch_size = batch_size
        self.max_tokens = max_length - 2  # [CLS] and [SEP]
        self.dim = int(self._encode(["warm-up"]).shape[1])

    def _encode(self, texts: list[str]) -> np.ndarray:
        """CLS vectors of a batch (normalised by the caller)."""
        hidden = self._model.run(texts)
        return hidden[:, 0] if hidden.ndim == 3 else hidden

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        items = _check_texts(texts)
        return _embed_batched(items, self.dim, batch_size or self.batch_size, self._encode)

    def count_tokens(self, text: str) -> int:
        if not text or text.isspace():
            return 0
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"OnnxBertEmbedder({self.name!r}, threads={self.threads})"
