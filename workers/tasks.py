"""Thin Celery tasks around the plain functions in workers/.

Logging: the worker logs one JSON object per line (`ZHIKU_LOG_FORMAT=text` for people; see
core.logging_setup). A task sent during an HTTP request carries its request id in the message
headers; it is the `request_id` of the task's log lines."""

from __future__ import annotations

import logging
import os
from typing import Any, cast

from celery import Task
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from core import db
from core.errors import TransientFault
from core.logging_setup import (
    LOG_FORMAT_ENV,
    TASK_HEADER,
    LogFormat,
    configure_logging,
    set_request_id,
    valid_request_id,
)
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
    fields = {"document_id": document_id, "version": version, "task_id": self.request.id}
    log.info("ingest started document=%s version=%s", document_id, version, extra=fields)
    result = ingest_document(settings, document_id, version)
    log.info(
        "ingest finished document=%s outcome=%s chunks=%s",
        document_id,
        result.outcome.value,
        result.chunks,
        extra=fields
        | {"outcome": result.outcome.value, "chunks": result.chunks, "reason": result.reason},
    )
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


@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: object) -> None:
    """Our format instead of Celery's (a receiver here makes Celery leave logging alone)."""
    fmt = os.environ.get(LOG_FORMAT_ENV, "json").strip().lower() or "json"
    configure_logging(cast(LogFormat, fmt), loglevel or "INFO")


def task_request_id(task: Task) -> str | None:
    """The request id the task's message headers carry (None when sent outside a request)."""
    request = task.request
    found = getattr(request, TASK_HEADER, None)
    if found is None and isinstance(getattr(request, "headers", None), dict):
        found = request.headers.get(TASK_HEADER)
    return found if isinstance(found, str) and valid_request_id(found) else None


@task_prerun.connect
def _bind_request_id(task: Task | None = None, **_: object) -> None:
    set_request_id(task_request_id(task) if task is not None else None)


@task_postrun.connect
def _unbind_request_id(**_: object) -> None:
    set_request_id(None)


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
