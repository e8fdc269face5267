"""Retrieval quality metrics over ranked document ids (one entry per retrieved passage)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence


def first_hit_rank(ranked_docs: Sequence[str], positives: Collection[str], k: int) -> int | None:
    """1-based rank of the first passage whose document is positive, within the top k."""
    for rank, doc in enumerate(ranked_docs[:k], start=1):
        if doc in positives:
            return rank
    return None


def recall_at(ranked_docs: Sequence[str], positives: Collection[str], k: int) -> float:
    """1.0 when any of the top k passages comes from a positive document (hit rate)."""
    return 1.0 if first_hit_rank(ranked_docs, positives, k) is not None else 0.0


def mrr_at(ranked_docs: Sequence[str], positives: Collection[str], k: int) -> float:
    rank = first_hit_rank(ranked_docs, positives, k)
    return 0.0 if rank is None else 1.0 / rank


def ndcg_at(ranked_docs: Sequence[str], positives: Collection[str], k: int) -> float:
    """Binary-relevance nDCG@k at document level: a positive document earns gain once, at its
    first passage; the ideal ranking puts min(k, |positives|) positive documents first."""
    if not positives:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for rank, doc in enumerate(ranked_docs[:k], start=1):
        if doc in positives and doc not in seen:
            seen.add(doc)
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(k, len(positives)) + 1))
    return dcg / ideal


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
