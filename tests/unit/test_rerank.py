"""The bundled English cross-encoder and reranker specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.rerank import load_reranker


def test_bundled_english_reranker_orders_by_relevance() -> None:
    reranker = load_reranker("ms-marco-en")
    assert reranker is not None and reranker.languages == ("en",)
    scores = reranker.score(
        "When should the pump seal be replaced?",
        [
            "The canteen opens at 11:30.",
            "Replace the shaft seal of the pump every six months.",
            "Lock your screen when you leave your desk.",
        ],
    )
    assert len(scores) == 3 and scores[1] == max(scores) and scores[1] > scores[0] + 3
    assert reranker.score("q", []) == []
    assert load_reranker("ms-marco-en") is reranker  # loaded once per process


def test_reranker_specs() -> None:
    assert load_reranker("") is None
    with pytest.raises(ValueError, match="unknown reranker"):
        load_reranker("magic")
    with pytest.raises(FileNotFoundError):
        load_reranker("onnx:/nonexistent")


def test_a_local_sentence_transformers_cross_encoder_loads(tmp_path: Path) -> None:
    # A cross-encoder directory as sentence-transformers saves one: MiniLM with a fresh
    # one-logit head (untrained, so only loading and scoring are checked here).
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from retrieval.embedders import _minilm_dir

    src = str(_minilm_dir())
    AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=1, local_files_only=True
    ).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(src, local_files_only=True).save_pretrained(tmp_path)
    reranker = load_reranker(f"st:{tmp_path}")
    assert reranker is not None and reranker.languages == ("zh", "en")
    scores = reranker.score("pump seal", ["Replace the pump seal.", "The canteen opens."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    # batch size changes the kernels: equal up to float rounding
    assert reranker.score("pump seal", ["Replace the pump seal."]) == pytest.approx(
        scores[:1], abs=1e-5
    )
