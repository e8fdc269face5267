"""The database, not the broker, is the record of work: re-enqueue what was lost."""

from __future__ import annotations

import logging
import threading
import time

from core import db
from core.repo import documents as doc_repo
from core.settings import Settings
from core.tasks import enqueue_ingest, enqueue_sync_index
from workers.retention import purge_expired_audit

log = logging.getLogger(__name__)
AUDIT_PURGE_EVERY_SECONDS = 3600.0


def reconcile_once(settings: Settings) -> int:
    """Enqueue documents left in a non-terminal state by a dead worker or a lost message, and
    index publishes for documents that waited too long for one (`publish_overdue`)."""
    with db.session_scope(settings) as session:
        stalled = doc_repo.stalled(session, settings.lease_seconds, settings.requeue_after_seconds)
        for doc_id, version in stalled:
            enqueue_ingest(doc_id, version, settings)
        doc_repo.touch_enqueued(session, [i for i, _ in stalled])
    if stalled:
        log.info("re-enqueued %d stalled documents: %s", len(stalled), [i for i, _ in stalled])
    publish_overdue(settings)
    return len(stalled)


def publish_overdue(settings: Settings) -> list[int]:
    """Enqueue an index publish for each library with documents that have waited in `indexing`
    (chunks stored) longer than `index_batch_max_delay_seconds`: the worker that would have
    published them died, or what is ahead of them is slow. At most one request per document
    every `requeue_after_seconds` (a publish coalesces whatever waits). The libraries."""
    with db.session_scope(settings) as session:
        overdue = doc_repo.overdue_for_index(
            session, settings.index_batch_max_delay_seconds, settings.requeue_after_seconds
        )
        for library_id in overdue:
            enqueue_sync_index(library_id, settings)
        doc_repo.touch_enqueued(session, [i for ids in overdue.values() for i in ids])
    if overdue:
        log.info(
            "requested index publishes of %d libraries for documents waiting too long: %s",
            len(overdue),
            {lib: len(ids) for lib, ids in overdue.items()},
        )
    return sorted(overdue)


class Reconciler(threading.Thread):
    """Runs `reconcile_once` now and then every `reconcile_interval_seconds`; also purges
    audit events past retention, at most once per `AUDIT_PURGE_EVERY_SECONDS`."""

    def __init__(self, settings: Settings):
        super().__init__(name="zhiku-reconciler", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()
        self.last_audit_purge: float | None = None  # time.monotonic() of the last attempt

    def maybe_purge_audit(self, now: float | None = None) -> int | None:
        """Purge if the last attempt is an hour old (or there was none); None when skipped.
        A failed attempt also waits the hour: a purge that keeps failing must not hammer
        the database every round."""
        now = time.monotonic() if now is None else now
        if (
            self.last_audit_purge is not None
            and now - self.last_audit_purge < AUDIT_PURGE_EVERY_SECONDS
        ):
            return None
        self.last_audit_purge = now
        return purge_expired_audit(self.settings)

    def run(self) -> None:
        while True:
            try:
                reconcile_once(self.settings)
            except Exception:  # Redis or the DB briefly away: try again next round
                log.warning("reconcile failed; will retry", exc_info=True)
            try:
                self.maybe_purge_audit()
            except Exception:
                log.warning("audit purge failed; will retry in an hour", exc_info=True)
            if self.stopped.wait(self.settings.reconcile_interval_seconds):
                return
