"""The Celery app and task names shared by the api (which enqueues) and the workers."""

from __future__ import annotations

from celery import Celery

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


def enqueue_ingest(document_id: int, version: int, settings: Settings | None = None) -> None:
    celery_app(settings).send_task(INGEST_DOCUMENT, args=[document_id, version], queue=INGEST_QUEUE)


def enqueue_sync_index(library_id: int, settings: Settings | None = None) -> None:
    celery_app(settings).send_task(SYNC_INDEX, args=[library_id], queue=INGEST_QUEUE)
