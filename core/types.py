"""Value types that cross package boundaries (no behaviour, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ParsedElement:
    """One element of a parsed document, as `ingest` hands it on.

    `category` is unstructured's element type (Title, NarrativeText, ListItem, Table, ...).
    `text` is the element's plain text; for tables it is the table rendered as text with its
    header row kept. `page` is 1-based or None when the format has no pages. `level` is the
    heading depth for titles when known (0 = top).
    """

    category: str
    text: str
    page: int | None = None
    level: int | None = None
    html: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedDocument:
    """The result of parsing one file."""

    elements: list[ParsedElement]
    media_type: str
    page_count: int | None = None
    strategy: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ElementSpan:
    """Where a chunk's text came from: element index and [start, end) char offsets in it."""

    element: int
    start: int
    end: int


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it has a database id."""

    ordinal: int
    text: str
    token_count: int
    heading_path: list[str]
    page_start: int | None
    page_end: int | None
    spans: list[ElementSpan]
    kind: str = "text"  # "text" | "table"


@dataclass(frozen=True)
class Passage:
    """A retrieved passage with provenance, as ranking hands it to answering.

    A passage is one chunk or several adjacent chunks of one document merged; `chunk_id` is the
    best-ranked of them, `chunk_ids` all of them in document order. `scores` holds each
    ranker's raw score (dense cosine, BM25) and `score` the fused one. `duplicate_chunk_ids`
    are lower-ranked chunks collapsed into this passage as near-duplicates. `title` is the
    document's title, or its file name when it has none; `filename` is always the file name.
    """

    chunk_id: int
    document_id: int
    library_id: int
    text: str
    title: str
    heading_path: list[str]
    page_start: int | None
    page_end: int | None
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    chunk_ids: list[int] = field(default_factory=list)
    library_name: str = ""
    duplicate_chunk_ids: list[int] = field(default_factory=list)
    filename: str = ""


@dataclass(frozen=True)
class DocFilter:
    """Which documents of one library a caller may read, when that is not all of them.

    A grant may be narrowed to a folder or a single document, so a library can be partly
    readable. `allow=True`: only the documents in `document_ids`; `allow=False`: every document
    except those. Retrieval applies it before ranking, like the library list itself.
    """

    document_ids: frozenset[int]
    allow: bool

    def permits(self, document_id: int) -> bool:
        return (document_id in self.document_ids) == self.allow
