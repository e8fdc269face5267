"""Documents and their life cycle. Every state change of a document being worked on goes
through a claim token, so a stalled worker that wakes up late cannot overwrite the work of
the worker that took over."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import case, delete, or_, update
from sqlmodel import Session, col, func, select

from core.models import ACTIVE_STATUSES, Chunk, DocStatus, Document, utcnow
from core.types import DocFilter


@dataclass(frozen=True)
class NewDocument:
    library_id: int
    sha256: str
    filename: str
    folder: str
    size: int
    kind: str
    media_type: str
    created_by: int | None


@dataclass(frozen=True)
class Registered:
    document: Document
    duplicate: bool  # True: the same content is already in the library, nothing queued


def register(session: Session, new: NewDocument) -> Registered:
    """Create the Document row, or report the existing one with the same content.

    A document that was deleted comes back to life with a new version; one that failed is
    tried again (uploading it again is how people retry).
    """
    existing = session.exec(
        select(Document).where(Document.library_id == new.library_id, Document.sha256 == new.sha256)
    ).first()
    now = utcnow()
    if existing is not None and existing.status not in (DocStatus.deleted, DocStatus.failed):
        return Registered(existing, duplicate=True)
    if existing is not None:
        doc = existing
        doc.filename = new.filename
        doc.folder = new.folder
        doc.kind = new.kind
        doc.media_type = new.media_type
        doc.created_by = new.created_by
        _start_new_version(doc, DocStatus.queued)
    else:
        doc = Document(
            library_id=new.library_id,
            sha256=new.sha256,
            filename=new.filename,
            folder=new.folder,
            size=new.size,
            kind=new.kind,
            media_type=new.media_type,
            created_by=new.created_by,
            status=DocStatus.queued,
        )
    doc.enqueued_at = now
    session.add(doc)
    session.flush()
    return Registered(doc, duplicate=False)


def get(session: Session, document_id: int) -> Document | None:
    return session.get(Document, document_id)


LIKE_ESCAPE = "\\"


def like_escape(text: str) -> str:
    """`text` for a LIKE pattern that matches it literally (with `escape=LIKE_ESCAPE`)."""
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def sha256_in_use(session: Session, digests: Sequence[str]) -> set[str]:
    """Which of the content digests some document (of any library, in any state) still
    refers to: those originals must stay."""
    wanted = sorted(set(digests))
    found: set[str] = set()
    for start in range(0, len(wanted), 900):
        batch = wanted[start : start + 900]
        found |= set(session.exec(select(Document.sha256).where(col(Document.sha256).in_(batch))))
    return found


def list_for_library(
    session: Session,
    library_id: int,
    *,
    status: str | None = None,
    include_deleted: bool = False,
    offset: int = 0,
    limit: int = 100,
    only: DocFilter | None = None,
    q: str | None = None,
    ids: Sequence[int] | None = None,
) -> tuple[list[Document], int]:
    """A page of the library's documents (those `only` permits) and their total. `q`: only
    those whose file name, title or folder contains it, ignoring case (taken literally: `%`
    and `_` are no wildcards). `ids`: only these, deleted ones included."""
    cond = [Document.library_id == library_id, *_filter_cond(only)]
    if ids is not None:
        cond.append(col(Document.id).in_(list(ids)))
        include_deleted = True
    if q:
        pattern = f"%{like_escape(q)}%"
        cond.append(
            or_(
                *(
                    col(field).ilike(pattern, escape=LIKE_ESCAPE)
                    for field in (Document.filename, Document.title, Document.folder)
                )
            )
        )
    if status is not None:
        cond.append(Document.status == status)
    elif not include_deleted:
        cond.append(Document.status != DocStatus.deleted)
    total = session.exec(select(func.count()).select_from(Document).where(*cond)).one()
    rows = session.exec(
        select(Document).where(*cond).order_by(col(Document.id)).offset(offset).limit(limit)
    )
    return list(rows), int(total)


#: Statuses whose work is parsing, chunking or embedding. A document in `indexing` has its
#: chunks stored (in the transaction that moved it there): what it still needs is an index
#: publish of its library, never to be processed again.
PRE_INDEX_STATUSES = (DocStatus.queued, DocStatus.parsing, DocStatus.embedding)


def claim(session: Session, document_id: int, version: int, token: str, lease_s: int) -> bool:
    """Take a document for processing. False when it is done, deleted, superseded, already
    `indexing` (its chunks are stored), or held by a live worker (its heartbeat is younger
    than the lease)."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    result = session.execute(
        update(Document)
        .where(
            col(Document.id) == document_id,
            col(Document.version) == version,
            col(Document.status).in_(PRE_INDEX_STATUSES),
            (col(Document.claim).is_(None))
            | (col(Document.heartbeat_at).is_(None))
            | (col(Document.heartbeat_at) < stale),
        )
        .values(
            claim=token,
            heartbeat_at=now,
            status=DocStatus.parsing,
            attempts=Document.attempts + 1,
            updated_at=now,
        )
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def advance(
    session: Session,
    document_id: int,
    token: str,
    *,
    status: DocStatus | None = None,
    progress: float | None = None,
    fields: Mapping[str, object] | None = None,
    commit: bool = True,
) -> bool:
    """Record progress under a claim; False when the claim was lost."""
    values: dict[str, object] = {"heartbeat_at": utcnow(), "updated_at": utcnow(), **(fields or {})}
    if status is not None:
        values["status"] = status
    if progress is not None:
        values["progress"] = progress
    result = session.execute(
        update(Document)
        .where(col(Document.id) == document_id, col(Document.claim) == token)
        .values(**values)
    )
    if commit:
        session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def fail(session: Session, document_id: int, token: str | None, reason: str) -> bool:
    cond = [col(Document.id) == document_id, col(Document.status).in_(ACTIVE_STATUSES)]
    if token is not None:
        cond.append(col(Document.claim) == token)
    result = session.execute(
        update(Document)
        .where(*cond)
        .values(status=DocStatus.failed, reason=reason[:2000], claim=None, updated_at=utcnow())
    )
    session.execute(delete(Chunk).where(col(Chunk.document_id) == document_id))
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def mark_deleted(session: Session, document: Document) -> None:
    """Delete a document: its chunks go at once (search hydrates from Chunk rows, so nothing of
    it can be returned any more); the index writer drops its vectors and keywords."""
    session.execute(delete(Chunk).where(col(Chunk.document_id) == document.id))
    _start_new_version(document, DocStatus.deleted)
    session.add(document)
    session.flush()


def requeue(session: Session, document: Document) -> None:
    """Re-ingest: a new version, processed from the stored original."""
    session.execute(delete(Chunk).where(col(Chunk.document_id) == document.id))
    _start_new_version(document, DocStatus.queued)
    session.add(document)
    session.flush()


def _start_new_version(doc: Document, status: DocStatus) -> None:
    """A new version invalidates every message, claim and chunk of the old one."""
    now = utcnow()
    doc.version += 1
    doc.status = status
    doc.progress = 0.0
    doc.reason = None
    doc.warnings = []
    doc.attempts = 0
    doc.claim = None
    doc.chunk_count = 0
    doc.enqueued_at = now if status == DocStatus.queued else None
    doc.updated_at = now


def stalled(session: Session, lease_s: int, requeue_after_s: int) -> list[tuple[int, int]]:
    """(id, version) of documents whose work was lost: a claim whose heartbeat stopped, or a
    queued document nobody started within `requeue_after_s` (its message may be gone).

    Not documents in `indexing`: their chunks are stored and they only wait for an index
    publish of their library (`overdue_for_index` finds those nobody publishes)."""
    now = utcnow()
    lease_cut = now - timedelta(seconds=lease_s)
    queue_cut = now - timedelta(seconds=requeue_after_s)
    rows = session.exec(
        select(Document.id, Document.version).where(
            col(Document.status).in_(PRE_INDEX_STATUSES),
            ((col(Document.claim).is_not(None)) & (col(Document.heartbeat_at) < lease_cut))
            | (
                (col(Document.claim).is_(None))
                & ((col(Document.enqueued_at).is_(None)) | (col(Document.enqueued_at) < queue_cut))
            ),
        )
    )
    return [(int(i), int(v)) for i, v in rows if i is not None]


@dataclass(frozen=True)
class IndexBacklog:
    """Where a library's documents stand with respect to its next index publish."""

    ahead: int  # queued, parsing or embedding: they will reach `indexing` (or fail) later
    awaiting: int  # in `indexing`: chunks stored, not yet in a published snapshot
    overdue: int  # of the awaiting ones, those that have waited at least the maximum delay


def index_backlog(session: Session, library_id: int, max_delay_s: float) -> IndexBacklog:
    """The library's index backlog. A document's wait starts when it moved to `indexing`:
    its `heartbeat_at` then (nothing renews it afterwards: a deferred document has no claim)."""
    cut = utcnow() - timedelta(seconds=max_delay_s)
    rows = session.exec(
        select(
            Document.status,
            func.count(),
            func.sum(case((col(Document.heartbeat_at) <= cut, 1), else_=0)),
        )
        .where(
            Document.library_id == library_id,
            col(Document.status).in_(ACTIVE_STATUSES),
        )
        .group_by(col(Document.status))
    )
    ahead = awaiting = overdue = 0
    for status, n, late in rows:
        if status == DocStatus.indexing:
            awaiting, overdue = int(n), int(late or 0)
        else:
            ahead += int(n)
    return IndexBacklog(ahead=ahead, awaiting=awaiting, overdue=overdue)


def release_for_index(session: Session, document_id: int, token: str) -> bool:
    """Give up the claim of a document whose chunks are stored (`indexing`) and that waits for
    a later index publish of its library; False when it was published (or taken) already."""
    result = session.execute(
        update(Document)
        .where(
            col(Document.id) == document_id,
            col(Document.claim) == token,
            col(Document.status) == DocStatus.indexing,
        )
        .values(claim=None, updated_at=utcnow())
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def overdue_for_index(
    session: Session, max_delay_s: float, requeue_after_s: int
) -> dict[int, list[int]]:
    """Library id → ids of its documents that have waited in `indexing` longer than
    `max_delay_s` (whoever should have published them died, or is stuck), leaving out those a
    publish was requested for (`touch_enqueued`) less than `requeue_after_s` ago."""
    now = utcnow()
    delay_cut = now - timedelta(seconds=max_delay_s)
    queue_cut = now - timedelta(seconds=requeue_after_s)
    rows = session.exec(
        select(Document.library_id, Document.id).where(
            col(Document.status) == DocStatus.indexing,
            (col(Document.heartbeat_at).is_(None)) | (col(Document.heartbeat_at) <= delay_cut),
            (col(Document.enqueued_at).is_(None))
            | (col(Document.enqueued_at) < queue_cut)
            | (
                col(Document.heartbeat_at).is_not(None)
                & (col(Document.enqueued_at) < col(Document.heartbeat_at))
            ),
        )
    )
    out: dict[int, list[int]] = {}
    for library_id, doc_id in rows:
        if doc_id is not None:
            out.setdefault(int(library_id), []).append(int(doc_id))
    return out


def touch_enqueued(session: Session, ids: Sequence[int]) -> None:
    if ids:
        now = utcnow()
        for start in range(0, len(ids), 900):  # SQLite: at most 999 bound parameters
            batch = list(ids[start : start + 900])
            session.execute(
                update(Document).where(col(Document.id).in_(batch)).values(enqueued_at=now)
            )
        session.commit()


def _filter_cond(only: DocFilter | None) -> list[Any]:
    if only is None:
        return []
    ids = sorted(only.document_ids)
    return [col(Document.id).in_(ids) if only.allow else col(Document.id).not_in(ids)]


def counts_by_status(
    session: Session, library_id: int, only: DocFilter | None = None
) -> dict[str, int]:
    rows = session.exec(
        select(Document.status, func.count())
        .where(Document.library_id == library_id, *_filter_cond(only))
        .group_by(Document.status)
    )
    return {str(s): int(n) for s, n in rows}


def totals_by_status(session: Session) -> dict[str, tuple[int, int]]:
    """Documents of all libraries by status: (documents, chunks) per status."""
    rows = session.exec(
        select(
            Document.status,
            func.count(),
            func.coalesce(func.sum(Document.chunk_count), 0),
        ).group_by(col(Document.status))
    )
    return {str(s): (int(n), int(c)) for s, n, c in rows}
