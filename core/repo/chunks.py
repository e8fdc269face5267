"""Chunk rows: what the per-library indexes are built from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, update
from sqlmodel import Session, col, func, select

from core.models import Chunk, DocStatus, Document, Library, utcnow
from core.types import ChunkDraft

INDEXABLE = (DocStatus.indexing, DocStatus.ready)


def replace_for_document(
    session: Session,
    document: Document,
    drafts: Sequence[ChunkDraft],
    keywords: Sequence[str],
    vectors: np.ndarray,
    vectors_en: Mapping[int, np.ndarray] | None = None,
) -> list[int]:
    """Store a document's chunks (with analyzer tokens and embeddings) in one transaction.

    `vectors_en` maps a draft's position to its English embedder vector (English chunks)."""
    assert document.id is not None
    session.execute(delete(Chunk).where(col(Chunk.document_id) == document.id))
    rows = [
        Chunk(
            document_id=document.id,
            library_id=document.library_id,
            doc_version=document.version,
            ordinal=d.ordinal,
            text=d.text,
            token_count=d.token_count,
            kind=d.kind,
            heading_path=list(d.heading_path),
            page_start=d.page_start,
            page_end=d.page_end,
            spans=[[s.element, s.start, s.end] for s in d.spans],
            keywords=kw,
            embedding=np.asarray(vec, dtype=np.float32).tobytes(),
            embedding_en=_blob(vectors_en.get(i)) if vectors_en else None,
        )
        for i, (d, kw, vec) in enumerate(zip(drafts, keywords, vectors, strict=True))
    ]
    session.add_all(rows)
    session.flush()
    return [r.id for r in rows if r.id is not None]


def _blob(vec: np.ndarray | None) -> bytes | None:
    return None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()


@dataclass(frozen=True)
class IndexableChunk:
    chunk_id: int
    document_id: int
    keywords: str
    english: bool = False


def indexable(session: Session, library_id: int) -> list[IndexableChunk]:
    """Chunks that belong in the library's index: their document is indexing or ready, and
    they are of the document's current version."""
    rows = session.exec(
        select(
            Chunk.id,
            Chunk.document_id,
            Chunk.keywords,
            col(Chunk.embedding_en).is_not(None),
        )
        .join(Document, col(Document.id) == col(Chunk.document_id))
        .where(
            Chunk.library_id == library_id,
            col(Document.status).in_(INDEXABLE),
            col(Chunk.doc_version) == col(Document.version),
        )
        .order_by(col(Chunk.id))
    )
    return [IndexableChunk(int(i), int(d), k, bool(e)) for i, d, k, e in rows if i is not None]


def embeddings(
    session: Session, chunk_ids: Sequence[int], dim: int, *, english: bool = False
) -> np.ndarray:
    """Stored vectors of the chunks, in order: the main embedder's, or with `english` the
    English embedder's."""
    out = np.zeros((len(chunk_ids), dim), dtype=np.float32)
    pos = {cid: i for i, cid in enumerate(chunk_ids)}
    column = Chunk.embedding_en if english else Chunk.embedding
    for start in range(0, len(chunk_ids), 2000):
        batch = list(chunk_ids[start : start + 2000])
        for cid, blob in session.exec(select(Chunk.id, column).where(col(Chunk.id).in_(batch))):
            if blob is not None and cid is not None:
                out[pos[cid]] = np.frombuffer(blob, dtype=np.float32)
    return out


#: Ids per `IN (...)` list: SQLite's default limit on bound parameters is 999.
IN_BATCH = 900


def ids_for_documents(session: Session, document_ids: Iterable[int]) -> list[int]:
    """Ids of every chunk of the documents, ascending: the chunk-level form of a per-document
    permission filter, applied inside the indexes before ranking.

    Chunks of every stored version are included, not only the document's current one: a
    snapshot not yet republished may still hold an older version's chunks, and a deny filter
    must cover those too (an allow filter may: they are the same document's)."""
    wanted = sorted({int(d) for d in document_ids})
    out: list[int] = []
    for start in range(0, len(wanted), IN_BATCH):
        batch = wanted[start : start + IN_BATCH]
        out += [
            int(i)
            for i in session.exec(select(Chunk.id).where(col(Chunk.document_id).in_(batch)))
            if i is not None
        ]
    out.sort()
    return out


def documents_awaiting_index(session: Session, library_id: int) -> list[tuple[int, int]]:
    rows = session.exec(
        select(Document.id, Document.version).where(
            Document.library_id == library_id, Document.status == DocStatus.indexing
        )
    )
    return [(int(i), int(v)) for i, v in rows if i is not None]


def mark_ready(session: Session, docs: Iterable[tuple[int, int]]) -> int:
    """Documents whose chunks are now in a published snapshot become ready."""
    n = 0
    for doc_id, version in docs:
        result = session.execute(
            update(Document)
            .where(
                col(Document.id) == doc_id,
                col(Document.version) == version,
                col(Document.status) == DocStatus.indexing,
            )
            .values(status=DocStatus.ready, progress=1.0, claim=None, updated_at=utcnow())
        )
        n += result.rowcount  # type: ignore[attr-defined]
    session.commit()
    return n


@dataclass(frozen=True)
class ChunkWithSource:
    chunk: Chunk
    filename: str
    folder: str
    title: str
    library_name: str


def by_ids(session: Session, chunk_ids: Sequence[int]) -> dict[int, ChunkWithSource]:
    """Current chunks by id, with their document's name and library's name. Ids of deleted or
    superseded chunks (document not ready, or an older version) are simply absent, so a search
    served from a not-yet-republished snapshot never returns them."""
    if not chunk_ids:
        return {}
    rows = session.exec(
        select(Chunk, Document, Library.name)
        .join(Document, col(Document.id) == col(Chunk.document_id))
        .join(Library, col(Library.id) == col(Chunk.library_id))
        .where(
            col(Chunk.id).in_(list(chunk_ids)),
            col(Document.status) == DocStatus.ready,
            col(Chunk.doc_version) == col(Document.version),
        )
    )
    return {
        c.id: ChunkWithSource(c, d.filename, d.folder, d.title, lib)
        for c, d, lib in rows
        if c.id is not None
    }


def for_document(session: Session, document_id: int, page: int | None = None) -> list[Chunk]:
    """The document's chunks in order; with `page`, only those whose page span covers it."""
    stmt = select(Chunk).where(Chunk.document_id == document_id)
    if page is not None:
        stmt = stmt.where(col(Chunk.page_start) <= page, col(Chunk.page_end) >= page)
    return list(session.exec(stmt.order_by(col(Chunk.ordinal))))


def counts_by_library(session: Session) -> dict[int, int]:
    """Chunks per library, all libraries."""
    rows = session.exec(select(Chunk.library_id, func.count()).group_by(col(Chunk.library_id)))
    return {int(lib): int(n) for lib, n in rows}
