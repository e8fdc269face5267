"""Reciprocal rank fusion with per-ranker weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]],
    weights: Mapping[str, float] | None = None,
    k: int = RRF_K,
) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = Σ_r weight_r / (k + rank_r(id)), rank from 1.

    Ties break by the id's best rank in any list, then by id, so the order is deterministic.
    """
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for name, ids in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 0.0)
        if weight <= 0:
            continue
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best[item] = min(best.get(item, rank), rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], best[kv[0]], kv[0]))
