"""Bring a library's published index in line with its Chunk rows."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from core import db
from core.errors import TransientFault
from core.repo import chunks, libraries
from core.repo import documents as doc_repo
from core.repo.documents import IndexBacklog
from core.settings import Settings
from core.storage import is_disk_full
from retrieval.embedders import Embedder
from retrieval.index_store import DenseInput, SyncResult, drop_library, sync_library
from workers.embedding import ingestion_embedder_en
from workers.library_lock import library_lock

log = logging.getLogger(__name__)
DISK_FULL_REASON = (
    "the data disk is full; the document waits and is processed again once an administrator "
    "has freed space"
)


def publish_due(backlog: IndexBacklog, max_docs: int) -> bool:
    """Group commit of index publishes: publish the library's index now, or let a later
    document's worker publish it together with more documents?

    Publishing costs O(library) (the keyword index is rebuilt from every chunk), so during a
    bulk upload one publish per document is O(N²). Wait only while some document is still
    ahead in the pipeline (its worker decides again when it ends, whatever the outcome), fewer
    than `max_docs` documents wait and none has waited the maximum delay."""
    if backlog.awaiting <= 0:
        return False  # nothing to publish (someone published it already)
    return backlog.ahead <= 0 or backlog.awaiting >= max(1, max_docs) or backlog.overdue > 0


def settle_library_index(
    settings: Settings,
    library_id: int,
    embedder: Embedder,
    *,
    deferring: tuple[int, str] | None = None,
) -> bool:
    """Apply `publish_due` to the library: publish its index (True), or leave it to a later
    publish (False). `deferring`: (document id, claim token) of the document this worker just
    moved to `indexing`; when it waits, its claim is released (the reconciler does not take a
    claimless `indexing` document for lost work; it publishes it if it waits too long).

    Every worker that ends a document of the library (ready, failed, skipped) calls this, so
    the last document ahead publishes what waits; a publish that raced ahead of the decision
    only leaves nothing to do."""
    with db.session_scope(settings) as session:
        backlog = doc_repo.index_backlog(
            session, library_id, settings.index_batch_max_delay_seconds
        )
        if not publish_due(backlog, settings.index_batch_max_docs):
            if deferring is not None and backlog.awaiting > 0:
                doc_repo.release_for_index(session, *deferring)
                log.info(
                    "library %s: document %s waits for a later index publish "
                    "(%s waiting, %s ahead)",
                    library_id,
                    deferring[0],
                    backlog.awaiting,
                    backlog.ahead,
                )
            return False
    sync_library_index(settings, library_id, embedder, only_if_awaiting=True)
    return True


def sync_library_index(
    settings: Settings,
    library_id: int,
    embedder: Embedder,
    *,
    rebuild: bool = False,
    only_if_awaiting: bool = False,
) -> SyncResult | None:
    """Under the library's writer lock: publish a snapshot holding exactly the chunks of the
    documents that are indexing or ready, then mark the indexing ones ready. Coalesces: one
    call picks up every document waiting, whoever embedded it.

    None when the library no longer exists (it was deleted while this waited for the lock or
    for its turn in the queue): nothing is published, and whatever index files are left of it
    are removed. With `only_if_awaiting`, also None (and nothing done) when no document
    awaits the index any more (another worker published them while this one waited)."""
    with library_lock(settings.indexes_dir, library_id), db.session_scope(settings) as session:
        if libraries.get(session, library_id) is None:
            if drop_library(settings.indexes_dir, library_id):
                log.info("library %s is gone: removed its leftover index files", library_id)
            return None
        # Read the waiting documents first: each of them is then certainly in `wanted`.
        awaiting = chunks.documents_awaiting_index(session, library_id)
        if only_if_awaiting and not awaiting:
            return None
        wanted = chunks.indexable(session, library_id)

        def fetch(ids: Sequence[int]) -> np.ndarray:
            return chunks.embeddings(session, ids, embedder.dim)

        english = None
        embedder_en = ingestion_embedder_en(settings)
        if embedder_en is not None:
            dim_en = embedder_en.dim

            def fetch_en(ids: Sequence[int]) -> np.ndarray:
                return chunks.embeddings(session, ids, dim_en, english=True)

            english = DenseInput(
                embedder=embedder_en.name,
                dim=dim_en,
                wanted_ids=[c.chunk_id for c in wanted if c.english],
                fetch_vectors=fetch_en,
            )

        try:
            result = sync_library(
                settings.indexes_dir,
                library_id,
                embedder=embedder.name,
                dim=embedder.dim,
                wanted_ids=[c.chunk_id for c in wanted],
                wanted_tokens=[c.keywords.split(" ") if c.keywords else [] for c in wanted],
                fetch_vectors=fetch,
                exact_max=settings.exact_index_max,
                english=english,
                rebuild=rebuild,
            )
        except Exception as exc:  # OSError, or faiss's RuntimeError quoting ENOSPC
            if not is_disk_full(exc):
                raise
            # The snapshot being built was removed and the manifest still names the last
            # complete one: searches go on; the documents stay `indexing` and are retried.
            log.warning("library %s: index not published, the disk is full", library_id)
            raise TransientFault(DISK_FULL_REASON) from exc
        ready = chunks.mark_ready(session, awaiting)
    log.info(
        "library %s index v%s: %s chunks (+%s -%s), %s documents ready",
        library_id,
        result.manifest.version,
        result.manifest.count,
        result.added,
        result.removed,
        ready,
    )
    return result
