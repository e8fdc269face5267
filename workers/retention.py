"""Audit retention: delete audit events older than `audit_retention_days` (0 keeps them)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from core import db
from core.models import utcnow
from core.repo import audit
from core.settings import Settings

log = logging.getLogger(__name__)


def purge_expired_audit(settings: Settings, *, now: datetime | None = None) -> int:
    """Purge what is past retention; how many events went. An `audit.purge` event is recorded
    only when something was deleted (this runs every hour on every worker)."""
    days = settings.audit_retention_days
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(days=days)
    with db.session_scope(settings) as session:
        deleted = audit.purge_older_than(
            session, cutoff, record_empty=False, via="worker", retention_days=days
        )
    if deleted:
        log.info("purged %d audit events older than %s", deleted, cutoff.isoformat())
    return deleted
