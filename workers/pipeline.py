"""The ingestion job as a plain function: load → parse → chunk → embed → index → status.

The Celery task wraps it; the CLI runs it in-process with `--inline`. It is idempotent by
(document id, version): a claim token guards every state change, so a duplicate message, a
document already done, or a stale worker waking up late all do nothing.

Index publishes are group-committed (`workers.indexing.settle_library_index`): a document whose
chunks are stored waits in `indexing`, without a claim, while other documents of its library
are still ahead, and whoever ends one of those (ready, failed or skipped) decides again; the
reconciler publishes what has waited too long.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from core import db
from core.errors import BadDocument, TransientFault
from core.models import DocStatus, Document
from core.repo import chunks as chunk_repo
from core.repo import documents as doc_repo
from core.settings import Settings
from core.storage import OriginalStore, is_disk_full
from core.types import ChunkDraft
from ingest.chunk import chunk_elements
from ingest.parse import parse_document
from ingest.title import document_title
from retrieval.analyzer import analyze, text_language
from retrieval.embedders import Embedder
from workers.embedding import ingestion_embedder, ingestion_embedder_en
from workers.indexing import DISK_FULL_REASON, settle_library_index

log = logging.getLogger(__name__)

# Share of the progress bar each stage ends at.
PARSED, CHUNKED, EMBEDDED = 0.25, 0.3, 0.9


class Outcome(StrEnum):
    ready = "ready"
    failed = "failed"
    skipped = "skipped"  # done already, deleted, superseded, or being processed elsewhere
    busy = "busy"  # another live worker holds it
    indexing = "indexing"  # chunks stored; a later publish of the library's index makes it ready


@dataclass(frozen=True)
class JobResult:
    outcome: Outcome
    document_id: int
    chunks: int = 0
    reason: str | None = None


class ClaimLost(Exception):
    """Another worker took the document over (this one was presumed dead)."""


def ingest_document(
    settings: Settings,
    document_id: int,
    version: int,
    *,
    embedder: Embedder | None = None,
    sync_index: bool = True,
) -> JobResult:
    token = uuid.uuid4().hex
    embedder = embedder or ingestion_embedder(settings)
    with Session(db.get_engine(settings), expire_on_commit=False) as session:
        if not doc_repo.claim(session, document_id, version, token, settings.lease_seconds):
            doc = doc_repo.get(session, document_id)
            held = (
                doc is not None
                and doc.version == version
                and doc.status in (DocStatus.parsing, DocStatus.embedding)
            )
            if held:
                return JobResult(Outcome.busy, document_id)
            # Done, deleted, superseded, or `indexing` (processed: its chunks are stored and it
            # waits for an index publish — a duplicate message, or a retry after a publish
            # failed). Whoever ends a document decides whether the library's index is due.
            if sync_index and doc is not None:
                settle_library_index(settings, doc.library_id, embedder)
            return JobResult(Outcome.skipped, document_id)
        doc = doc_repo.get(session, document_id)
        assert doc is not None
        # Every change to the row goes through a claim-guarded UPDATE (`_advance`): the object
        # is only a local copy, so the ORM never flushes an unguarded UPDATE of it (which would
        # write to a document that was deleted or taken over meanwhile, or fail when its row,
        # with its library, is gone).
        session.expunge(doc)
        try:
            with _heartbeat(settings, document_id, token):
                n = _process(settings, session, doc, token, embedder)
        except ClaimLost:
            session.rollback()
            if sync_index:
                settle_library_index(settings, doc.library_id, embedder)
            return JobResult(Outcome.skipped, document_id)
        except BadDocument as exc:
            _record_failure(settings, session, document_id, token, exc.reason)
            if sync_index:
                settle_library_index(settings, doc.library_id, embedder)
            return JobResult(Outcome.failed, document_id, reason=exc.reason)
        except (TransientFault, OperationalError):
            raise  # the Celery task retries these with backoff
        except Exception as exc:  # a bug or an unexpected library error: record it, don't loop
            if is_disk_full(exc):  # not the document's fault: retried once there is space
                raise TransientFault(DISK_FULL_REASON) from exc
            log.exception("document %s failed unexpectedly", document_id)
            reason = (
                f"unexpected error while processing ({type(exc).__name__}: {str(exc)[:300]}); "
                "re-ingest it, and report it if it fails again"
            )
            _record_failure(settings, session, document_id, token, reason)
            if sync_index:
                settle_library_index(settings, doc.library_id, embedder)
            return JobResult(Outcome.failed, document_id, reason=reason)
    if sync_index and not settle_library_index(
        settings, doc.library_id, embedder, deferring=(document_id, token)
    ):
        return JobResult(Outcome.indexing, document_id, chunks=n)
    return JobResult(Outcome.ready, document_id, chunks=n)


def _process(
    settings: Settings, session: Session, doc: Document, token: str, embedder: Embedder
) -> int:
    assert doc.id is not None
    store = OriginalStore(settings.originals_dir)
    if not store.exists(doc.sha256):
        raise BadDocument("the stored original is missing; upload the file again")
    data = store.read(doc.sha256)

    parsed = parse_document(data, doc.filename, ocr_languages=settings.ocr_languages)
    title = document_title(parsed.elements)
    doc.title = title
    _advance(
        session,
        doc,
        token,
        DocStatus.parsing,
        PARSED,
        title=title,
        page_count=parsed.page_count,
        parse_strategy=parsed.strategy[:40],
        warnings=[w[:500] for w in parsed.warnings[:20]],
    )

    drafts = chunk_elements(
        parsed.elements,
        count_tokens=embedder.count_tokens,
        max_tokens=min(settings.chunk_max_tokens, embedder.max_tokens),
        overlap_tokens=settings.chunk_overlap_tokens,
    )
    if not drafts:
        raise BadDocument("no text could be extracted from this file")
    _advance(session, doc, token, DocStatus.embedding, CHUNKED)

    embedder_en = ingestion_embedder_en(settings)
    english = [i for i, d in enumerate(drafts) if text_language(d.text) == "en"]
    main_share = 1.0 if embedder_en is None or not english else 0.5

    def progress(start: float, share: float) -> Callable[[float], object]:
        span = EMBEDDED - CHUNKED
        return lambda f: _advance(
            session, doc, token, DocStatus.embedding, CHUNKED + span * (start + share * f)
        )

    vectors = embed_drafts(
        embedder, drafts, settings.embed_batch_size, on_progress=progress(0.0, main_share)
    )
    vectors_en: dict[int, np.ndarray] = {}
    if embedder_en is not None and english:
        found = embed_drafts(
            embedder_en,
            [drafts[i] for i in english],
            settings.embed_batch_size,
            on_progress=progress(main_share, 1.0 - main_share),
        )
        vectors_en = dict(zip(english, found, strict=True))
    keywords = [keyword_text(doc, d) for d in drafts]

    # Chunks and the move to `indexing` land in one transaction, and only while the claim is
    # ours: the guarded UPDATE takes the row lock first, so a takeover waits for our commit.
    moved = doc_repo.advance(
        session,
        doc.id,
        token,
        status=DocStatus.indexing,
        progress=EMBEDDED,
        fields={"chunk_count": len(drafts)},
        commit=False,
    )
    if not moved:
        session.rollback()
        raise ClaimLost
    doc.chunk_count = len(drafts)
    chunk_repo.replace_for_document(session, doc, drafts, keywords, vectors, vectors_en)
    session.commit()
    return len(drafts)


def _record_failure(
    settings: Settings, session: Session, document_id: int, token: str, reason: str
) -> None:
    """Mark the document failed even when the job's session is unusable (a failed flush)."""
    session.rollback()
    with Session(db.get_engine(settings)) as fresh:
        doc_repo.fail(fresh, document_id, token, reason)


def keyword_text(doc: Document, draft: ChunkDraft) -> str:
    """Analyzer tokens for BM25: the chunk, its heading path and the file name.

    Not the document title: putting it on every chunk (for BM25, embedding and reranking)
    lowered recall@5 on covidqa_en from 0.88 to 0.85 (ADR 0004)."""
    context = " ".join([*draft.heading_path, doc.filename])
    return " ".join(analyze(f"{draft.text}\n{context}"))


def embed_drafts(
    embedder: Embedder,
    drafts: list[ChunkDraft],
    batch_size: int,
    on_progress: Callable[[float], object] | None = None,
) -> np.ndarray:
    parts: list[np.ndarray] = []
    texts = [d.text for d in drafts]
    step = max(batch_size * 4, 1)
    for start in range(0, len(texts), step):
        parts.append(embedder.embed(texts[start : start + step], batch_size=batch_size))
        if on_progress is not None:
            on_progress(min(1.0, (start + step) / len(texts)))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def _advance(
    session: Session,
    doc: Document,
    token: str,
    status: DocStatus,
    progress: float,
    **fields: object,
) -> None:
    assert doc.id is not None
    if not doc_repo.advance(
        session, doc.id, token, status=status, progress=progress, fields=fields
    ):
        raise ClaimLost


@contextmanager
def _heartbeat(settings: Settings, document_id: int, token: str) -> Iterator[None]:
    """Keep the claim alive while a long step (OCR, LibreOffice, a big embed) runs."""
    stop = threading.Event()
    interval = max(1.0, settings.lease_seconds / 4)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                with Session(db.get_engine(settings)) as s:
                    if not doc_repo.advance(s, document_id, token):
                        return
            except Exception:  # the DB may be briefly away; the next beat tries again
                log.warning("heartbeat for document %s failed", document_id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{document_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
