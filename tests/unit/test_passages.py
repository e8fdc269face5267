"""Passage assembly: merging adjacent chunks and collapsing near-duplicates (pure)."""

from __future__ import annotations

from retrieval.passages import (
    RankedChunk,
    collapse_near_duplicates,
    join_overlapping,
    merge_adjacent,
)


def _chunk(cid: int, doc: int, ordinal: int, text: str, score: float, **kw: object) -> RankedChunk:
    return RankedChunk(
        chunk_id=cid,
        document_id=doc,
        library_id=1,
        ordinal=ordinal,
        text=text,
        title=f"doc{doc}.pdf",
        heading_path=["Intro"],
        page_start=kw.get("page_start", ordinal + 1),  # type: ignore[arg-type]
        page_end=kw.get("page_end", ordinal + 1),  # type: ignore[arg-type]
        score=score,
        scores={"dense": score, "bm25": 10 * score},
    )


def test_join_overlapping_removes_the_shared_text() -> None:
    assert join_overlapping("one two three four", "three four five") == "one two three four five"
    assert join_overlapping("alpha.", "beta.") == "alpha.\nbeta."
    assert join_overlapping("第一段。第二段。", "第二段。第三段。") == "第一段。第二段。第三段。"


def test_adjacent_chunks_of_one_document_become_one_passage() -> None:
    ranked = [
        _chunk(11, 1, 4, "The pump seal wears out. Replace it", 0.9),
        _chunk(20, 2, 0, "Unrelated document.", 0.8),
        _chunk(10, 1, 3, "Maintenance. The pump seal wears out.", 0.5),
        _chunk(13, 1, 6, "Far away in the same document.", 0.4),
    ]
    out = merge_adjacent(ranked)
    assert [p.chunk_ids for p in out] == [[10, 11], [20], [13]]
    merged = out[0]
    assert merged.chunk_id == 11  # the best-ranked chunk names the passage
    assert merged.text == "Maintenance. The pump seal wears out. Replace it"
    assert (merged.page_start, merged.page_end) == (4, 5)
    assert merged.score == 0.9
    assert merged.scores == {"dense": 0.9, "bm25": 9.0}


def test_merging_stops_at_the_limit() -> None:
    ranked = [_chunk(i, 1, i, f"part {i}.", 1.0 - i / 10) for i in range(6)]
    out = merge_adjacent(ranked, max_chunks=3)
    assert [p.chunk_ids for p in out] == [[0, 1, 2], [3, 4, 5]]


def test_pages_unknown_stay_unknown() -> None:
    ranked = [_chunk(1, 1, 0, "a", 0.5, page_start=None, page_end=None)]
    (p,) = merge_adjacent(ranked)
    assert p.page_start is None and p.page_end is None


def test_near_duplicates_collapse_into_the_better_ranked_passage() -> None:
    text = "Employees may claim hotel costs of up to 600 yuan per night in tier-one cities."
    ranked = [
        _chunk(1, 1, 0, text, 0.9),
        _chunk(2, 2, 0, "Something else entirely about pumps and seals.", 0.8),
        _chunk(3, 3, 0, text.upper().replace(" ", "  ") + "!", 0.7),  # same text, other form
        _chunk(4, 4, 0, "员工出差住宿费用：一线城市每晚不超过600元。", 0.6),
        _chunk(5, 5, 0, "员工出差住宿费用:一线城市每晚不超过600元", 0.5),  # half-width punctuation
    ]
    out = collapse_near_duplicates(merge_adjacent(ranked))
    assert [p.chunk_id for p in out] == [1, 2, 4]
    assert out[0].duplicate_chunk_ids == [3]
    assert out[2].duplicate_chunk_ids == [5]


def test_different_passages_are_kept() -> None:
    ranked = [
        _chunk(1, 1, 0, "Replace the seal of pump XR-7731 every six months.", 0.9),
        _chunk(2, 2, 0, "Replace the filter of pump XR-7731 every twelve months.", 0.8),
    ]
    assert len(collapse_near_duplicates(merge_adjacent(ranked))) == 2
