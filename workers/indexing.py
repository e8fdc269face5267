"""Bring a library's published index in line with its Chunk rows."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from core import db
from core.repo import chunks, libraries
from core.settings import Settings
from retrieval.embedders import Embedder
from retrieval.index_store import DenseInput, SyncResult, drop_library, sync_library
from workers.embedding import ingestion_embedder_en
from workers.library_lock import library_lock

log = logging.getLogger(__name__)


def sync_library_index(
    settings: Settings, library_id: int, embedder: Embedder, *, rebuild: bool = False
) -> SyncResult | None:
    """Under the library's writer lock: publish a snapshot holding exactly the chunks of the
    documents that are indexing or ready, then mark the indexing ones ready. Coalesces: one
    call picks up every document waiting, whoever embedded it.

    None when the library no longer exists (it was deleted while this waited for the lock or
    for its turn in the queue): nothing is published, and whatever index files are left of it
    are removed."""
    with library_lock(settings.indexes_dir, library_id), db.session_scope(settings) as session:
        if libraries.get(session, library_id) is None:
            if drop_library(settings.indexes_dir, library_id):
                log.info("library %s is gone: removed its leftover index files", library_id)
            return None
        # Read the waiting documents first: each of them is then certainly in `wanted`.
        awaiting = chunks.documents_awaiting_index(session, library_id)
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
