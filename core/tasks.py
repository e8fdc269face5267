"""The Celery app and task names shared by the api (which enqueues) and the workers.

A task sent while a request id is set (core.logging_setup) carries it in its message headers
(`zhiku_request_id`); the worker logs the task's lines with it."""

from __future__ import annotations

from celery import Celery

from core.logging_setup import TASK_HEADER, current_request_id
from core.settings import Settings, get_settings

INGEST_DOCUMENT = "zhiku.ingest_document"
SYNC_INDEX = "zhiku.sync_index"
INGEST_QUEUE = "zhiku"

_apps: dict[str, Celery] = {}


def celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = _apps.get(settings.redis_url)
    if app is None:
        app = Celery("zhiku", broker=settings.redis_url)
        app.conf.update(
            task_default_queue=INGEST_QUEUE,
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            task_acks_on_failure_or_timeout=True,
            worker_prefetch_multiplier=1,
            task_ignore_result=True,
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            broker_transport_options={"visibility_timeout": 3600},
            worker_hijack_root_logger=False,
            worker_send_task_events=False,
            enable_utc=True,
        )
        _apps[settings.redis_url] = app
    return app


def trace_headers() -> dict[str, str]:
    """Message headers that carry the current request id into the task."""
    request_id = current_request_id()
    return {TASK_HEADER: request_id} if request_id else {}


def enqueue_ingest(document_id: int, version: int, settings: Settings | None = None) -> None:
    celery_app(settings).send_task(
        INGEST_DOCUMENT, args=[document_id, version], queue=INGEST_QUEUE, headers=trace_headers()
    )


def enqueue_sync_index(library_id: int, settings: Settings | None = None) -> None:
    celery_app(settings).send_task(
        SYNC_INDEX, args=[library_id], queue=INGEST_QUEUE, headers=trace_headers()
    )
