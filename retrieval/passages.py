"""From ranked chunks to passages: merge neighbours of one document, collapse near-duplicates.

Pure functions over `RankedChunk` values (a hit joined with its stored chunk), so they are
tested without indexes or a database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from core.types import Passage

MERGE_MAX_CHUNKS = 3
DUPLICATE_JACCARD = 0.85
_SHINGLE = 5
_NOISE = re.compile(r"[\W_]+", re.UNICODE)


@dataclass(frozen=True)
class RankedChunk:
    chunk_id: int
    document_id: int
    library_id: int
    ordinal: int
    text: str
    title: str
    heading_path: list[str]
    page_start: int | None
    page_end: int | None
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    library_name: str = ""
    filename: str = ""


def join_overlapping(first: str, second: str, max_overlap: int = 2000) -> str:
    """`first` + `second` without the text they share (chunks overlap by a few sentences)."""
    limit = min(len(first), len(second), max_overlap)
    for k in range(limit, 0, -1):
        if first.endswith(second[:k]):
            return first + second[k:]
    sep = "" if first.endswith(("\n", " ")) or not first else "\n"
    return first + sep + second


def _first_page(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _last_page(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _merge_run(run: list[RankedChunk]) -> Passage:
    run = sorted(run, key=lambda c: c.ordinal)
    best = max(run, key=lambda c: c.score)
    text = run[0].text
    for chunk in run[1:]:
        text = join_overlapping(text, chunk.text)
    scores: dict[str, float] = {}
    for chunk in run:
        for name, value in chunk.scores.items():
            scores[name] = max(scores.get(name, value), value)
    return Passage(
        chunk_id=best.chunk_id,
        chunk_ids=[c.chunk_id for c in run],
        document_id=best.document_id,
        library_id=best.library_id,
        library_name=best.library_name,
        text=text,
        title=best.title,
        filename=best.filename,
        heading_path=list(run[0].heading_path),
        page_start=_first_page([c.page_start for c in run]),
        page_end=_last_page([c.page_end for c in run]),
        score=best.score,
        scores=scores,
    )


def merge_adjacent(
    ranked: Sequence[RankedChunk], max_chunks: int = MERGE_MAX_CHUNKS
) -> list[Passage]:
    """Passages in rank order; chunks of one document with consecutive ordinals that were both
    retrieved become one passage (at most `max_chunks` long), ranked where its best chunk was."""
    by_doc: dict[int, dict[int, RankedChunk]] = {}
    for chunk in ranked:
        by_doc.setdefault(chunk.document_id, {})[chunk.ordinal] = chunk
    taken: set[int] = set()
    out: list[Passage] = []
    for chunk in ranked:
        if chunk.chunk_id in taken:
            continue
        ordinals = by_doc[chunk.document_id]
        run = [chunk]
        lo = hi = chunk.ordinal
        while len(run) < max_chunks:
            before, after = ordinals.get(lo - 1), ordinals.get(hi + 1)
            # Extend towards the better-scored neighbour first.
            options = [c for c in (before, after) if c is not None and c.chunk_id not in taken]
            if not options:
                break
            nxt = max(options, key=lambda c: c.score)
            run.append(nxt)
            lo, hi = min(lo, nxt.ordinal), max(hi, nxt.ordinal)
            taken.add(nxt.chunk_id)
        taken.add(chunk.chunk_id)
        out.append(_merge_run(run))
    return out


def normalize_for_comparison(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _NOISE.sub("", text)


def shingles(text: str, size: int = _SHINGLE) -> frozenset[str]:
    norm = normalize_for_comparison(text)
    if len(norm) <= size:
        return frozenset([norm]) if norm else frozenset()
    return frozenset(norm[i : i + size] for i in range(len(norm) - size + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 1.0 if a == b else 0.0
    return len(a & b) / len(a | b)


def collapse_near_duplicates(
    passages: Sequence[Passage], threshold: float = DUPLICATE_JACCARD
) -> list[Passage]:
    """Drop passages whose text nearly repeats a better-ranked one (character 5-gram Jaccard ≥
    `threshold`, or one contained in the other); the kept passage lists the dropped ones'
    chunk ids in `duplicate_chunk_ids`."""
    kept: list[tuple[Passage, frozenset[str], str]] = []
    for passage in passages:
        sh = shingles(passage.text)
        norm = normalize_for_comparison(passage.text)
        for i, (other, other_sh, other_norm) in enumerate(kept):
            contained = bool(norm) and (norm in other_norm or other_norm in norm)
            if contained or jaccard(sh, other_sh) >= threshold:
                kept[i] = (
                    replace(
                        other,
                        duplicate_chunk_ids=[*other.duplicate_chunk_ids, *passage.chunk_ids],
                    ),
                    other_sh,
                    other_norm,
                )
                break
        else:
            kept.append((passage, sh, norm))
    return [p for p, _, _ in kept]
