"""A BERT-style ONNX model with its tokenizer, run with onnxruntime on a fixed thread count:
the engine under the bundled English embedder and reranker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class OnnxBert:
    def __init__(self, model_dir: Path, *, threads: int = 1, max_length: int = 512):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model, vocab = model_dir / "model.onnx", model_dir / "tokenizer.json"
        for needed in (model, vocab):
            if not needed.is_file():
                raise FileNotFoundError(f"model file missing: {needed}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer: Any = Tokenizer.from_file(str(vocab))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        self.threads = threads
        self.max_length = max_length

    def run(self, batch: Sequence[str] | Sequence[tuple[str, str]]) -> np.ndarray:
        """The model's first output for a batch of texts or (query, passage) pairs."""
        enc = self.tokenizer.encode_batch(list(batch))
        feed: dict[str, np.ndarray] = {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        }
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)
