"""The audit log, for administrators: page through it, or export it as CSV or JSON Lines.

Exports stream: rows are read in keyset batches by a session of the response's own, so a
large log is never held in memory. Every export is itself audited (`audit.export`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import AdminDep, SessionDep, SettingsDep, client_ip
from core import audit_export, db
from core.audit_export import ExportFormat
from core.errors import ZhikuError
from core.models import AuditEvent, utcnow
from core.repo import audit
from core.settings import Settings

# ids are database integers: larger values would fail inside a streamed export, after the
# 200 has gone out, so they are refused up front.
MAX_ID = 2**31 - 1

router = APIRouter(prefix="/audit", tags=["audit"])

EXPORT_ACTION = "audit.export"
MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}
CHUNK_CHARS = 64 * 1024
MAX_ACTIONS = 50


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    action: str
    actor_user_id: int | None
    actor_api_key_id: int | None
    target_type: str
    target_id: str
    client_ip: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_after_id: int | None = None  # pass as after_id for the next page; null: no more


@dataclass(frozen=True)
class AuditFilters:
    since: datetime | None = None
    until: datetime | None = None
    actions: tuple[str, ...] = field(default_factory=tuple)
    actor_user_id: int | None = None
    actor_api_key_id: int | None = None
    target_type: str | None = None
    target_id: str | None = None
    after_id: int | None = None

    def kwargs(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "actions": self.actions,
            "actor_user_id": self.actor_user_id,
            "actor_api_key_id": self.actor_api_key_id,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "after_id": self.after_id,
        }

    def describe(self) -> dict[str, Any]:
        """The filters that were set, as JSON values (for the audit record)."""
        out: dict[str, Any] = {}
        for name, value in self.kwargs().items():
            if value is None or value == ():
                continue
            if isinstance(value, datetime):
                value = audit_export.iso_utc(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


def _aware(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def audit_filters(
    since: Annotated[
        datetime | None, Query(description="Events at or after this time (ISO 8601; UTC if naive)")
    ] = None,
    until: Annotated[datetime | None, Query(description="Events before this time")] = None,
    action: Annotated[
        list[str] | None,
        Query(
            description="Action, repeatable (any of them). A value ending in '.' is a prefix: "
            "'login.' matches login.success, login.failure, …",
            max_length=MAX_ACTIONS,
        ),
    ] = None,
    actor_user_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    actor_api_key_id: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    after_id: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Only events with a larger id")
    ] = None,
) -> AuditFilters:
    actions = tuple(a for a in (action or []) if a)
    texts = (*actions, target_type or "", target_id or "")
    if any("\x00" in t for t in texts):
        raise ZhikuError(
            "filters may not contain NUL characters", code="invalid_request", status=422
        )
    return AuditFilters(
        since=_aware(since),
        until=_aware(until),
        actions=actions,
        actor_user_id=actor_user_id,
        actor_api_key_id=actor_api_key_id,
        target_type=target_type,
        target_id=target_id,
        after_id=after_id,
    )


FiltersDep = Annotated[AuditFilters, Depends(audit_filters)]


def _out(event: AuditEvent) -> AuditEventOut:
    assert event.id is not None
    return AuditEventOut(
        id=event.id,
        at=event.at,
        action=event.action,
        actor_user_id=event.actor_user_id,
        actor_api_key_id=event.actor_api_key_id,
        target_type=event.target_type,
        target_id=event.target_id,
        client_ip=event.client_ip,
        detail=event.detail,
    )


@router.get("", response_model=AuditPage)
def list_events(
    session: SessionDep,
    _: AdminDep,
    filters: FiltersDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    """Audit events oldest first, a page at a time: pass `next_after_id` back as `after_id`."""
    rows = audit.query(session, **filters.kwargs(), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[_out(r) for r in rows],
        next_after_id=rows[-1].id if more and rows else None,
    )


def _stream(settings: Settings, filters: AuditFilters, fmt: ExportFormat) -> Iterator[str]:
    """The export text in chunks; its own session lives exactly as long as the response."""
    with db.session_scope(settings) as session:
        events = audit.iter_events(session, **filters.kwargs())
        buf: list[str] = []
        size = 0
        for piece in audit_export.iter_export(events, fmt, bom=True):
            buf.append(piece)
            size += len(piece)
            if size >= CHUNK_CHARS:
                yield "".join(buf)
                buf, size = [], 0
        if buf:
            yield "".join(buf)


@router.get("/export", response_class=StreamingResponse)
def export_events(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
    filters: FiltersDep,
    format: Annotated[ExportFormat, Query(description="csv (UTF-8 with BOM) or jsonl")] = "csv",
) -> StreamingResponse:
    """Every matching event, oldest first, as a file download. CSV cells that a spreadsheet
    would run as a formula are prefixed with `'`."""
    # The filters run once before the download starts: a value the database refuses is a 422
    # now, not a broken stream after the 200.
    audit.query(session, **filters.kwargs(), limit=1)
    audit.record(
        session,
        EXPORT_ACTION,
        actor_user_id=admin.id,
        client_ip=client_ip(request),
        format=format,
        filters=filters.describe(),
        via="api",
    )
    session.commit()
    filename = audit_export.export_filename(format, utcnow().date())
    return StreamingResponse(
        _stream(settings, filters, format),
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )
