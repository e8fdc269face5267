"""Retrieval metrics (pure)."""

from __future__ import annotations

import math

import pytest

from retrieval.metrics import mrr_at, ndcg_at, percentile, recall_at


def test_recall_and_mrr() -> None:
    ranked = ["x", "y", "p1", "p1", "p2"]
    assert recall_at(ranked, {"p1", "p2"}, 2) == 0.0
    assert recall_at(ranked, {"p1", "p2"}, 3) == 1.0
    assert mrr_at(ranked, {"p1"}, 10) == pytest.approx(1 / 3)
    assert mrr_at(ranked, {"zz"}, 10) == 0.0


def test_ndcg_counts_each_positive_document_once() -> None:
    # p1 at ranks 1 and 2: only the first earns gain; ideal has both positives first.
    got = ndcg_at(["p1", "p1", "p2"], {"p1", "p2"}, 10)
    ideal = 1 + 1 / math.log2(3)
    assert got == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert ndcg_at(["p1", "p2"], {"p1", "p2"}, 10) == pytest.approx(1.0)
    assert ndcg_at(["x"], {"p1"}, 10) == 0.0


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([], 95) == 0.0
    assert percentile([7.0], 95) == 7.0
