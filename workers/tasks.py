"""Thin Celery tasks around the plain functions in workers/."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import worker_process_init, worker_ready, worker_shutting_down
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from core import db
from core.errors import TransientFault
from core.settings import get_settings
from core.tasks import INGEST_DOCUMENT, SYNC_INDEX, celery_app
from workers.embedding import ingestion_embedder
from workers.indexing import sync_library_index
from workers.pipeline import Outcome, ingest_document
from workers.reconcile import Reconciler

log = logging.getLogger(__name__)
settings = get_settings()
app = celery_app(settings)
TRANSIENT = (TransientFault, OperationalError, RedisError, ConnectionError, TimeoutError)
_reconciler: Reconciler | None = None


@app.task(
    name=INGEST_DOCUMENT,
    bind=True,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=settings.task_max_retries,
)
def ingest_document_task(self: Task, document_id: int, version: int) -> dict[str, Any]:
    result = ingest_document(settings, document_id, version)
    if result.outcome is Outcome.busy:
        # Another worker holds a live claim. If it dies, its lease runs out and we take over.
        raise self.retry(countdown=settings.lease_seconds, max_retries=None)
    return {"outcome": result.outcome.value, "chunks": result.chunks, "reason": result.reason}


@app.task(
    name=SYNC_INDEX,
    autoretry_for=TRANSIENT,
    retry_backoff=True,
    retry_jitter=True,
    max_retries=settings.task_max_retries,
)
def sync_index_task(library_id: int) -> int | None:
    """The published index version; None when the library was deleted meanwhile."""
    result = sync_library_index(settings, library_id, ingestion_embedder(settings))
    return result.manifest.version if result is not None else None


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # Forked pool processes must not share the parent's database connections.
    db.dispose_engines()


@worker_ready.connect
def _start_reconciler(**_: object) -> None:
    global _reconciler
    db.migrate(settings)
    _reconciler = Reconciler(settings)
    _reconciler.start()


@worker_shutting_down.connect
def _stop_reconciler(**_: object) -> None:
    if _reconciler is not None:
        _reconciler.stopped.set()
