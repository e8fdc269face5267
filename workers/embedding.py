"""The embedders an ingestion process uses, from the settings (loaded once per process)."""

from __future__ import annotations

from core.settings import Settings
from retrieval.embedders import Embedder, load_embedder


def ingestion_embedder(settings: Settings) -> Embedder:
    return load_embedder(
        settings.embedder, threads=settings.embed_threads, batch_size=settings.embed_batch_size
    )


def ingestion_embedder_en(settings: Settings) -> Embedder | None:
    """The second, English-only embedder (None when `ZHIKU_EMBEDDER_EN` is empty)."""
    if not settings.embedder_en:
        return None
    return load_embedder(settings.embedder_en, threads=settings.embed_threads)
