"""The bundled English cross-encoder and reranker specs."""

from __future__ import annotations

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
