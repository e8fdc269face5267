"""Run ingestion jobs in-process (no broker): for `zhiku ingest --inline` and benchmarks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core.settings import Settings
from workers.embedding import ingestion_embedder
from workers.indexing import sync_library_index
from workers.pipeline import JobResult, ingest_document


def run_inline(
    settings: Settings,
    library_id: int,
    jobs: Sequence[tuple[int, int]],
    on_done: Callable[[JobResult], object] | None = None,
) -> list[JobResult]:
    """Process each (document id, version), then publish the library's index once."""
    embedder = ingestion_embedder(settings)
    results = []
    for doc_id, version in jobs:
        result = ingest_document(settings, doc_id, version, embedder=embedder, sync_index=False)
        results.append(result)
        if on_done is not None:
            on_done(result)
    sync_library_index(settings, library_id, embedder)
    return results
