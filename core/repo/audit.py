"""The audit log: append with `record`; read with `query`/`iter_events` (keyset pages by id);
`purge_older_than` is the only way events are ever deleted, and it audits itself."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, or_
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from core.models import AuditEvent

PURGE_ACTION = "audit.purge"


def record(
    session: Session,
    action: str,
    *,
    actor_user_id: int | None = None,
    actor_api_key_id: int | None = None,
    target_type: str = "",
    target_id: str | int = "",
    client_ip: str = "",
    **detail: Any,
) -> None:
    session.add(
        AuditEvent(
            action=action,
            actor_user_id=actor_user_id,
            actor_api_key_id=actor_api_key_id,
            target_type=target_type,
            target_id=str(target_id),
            client_ip=client_ip,
            detail=detail,
        )
    )


def _utc(at: datetime) -> datetime:
    """Naive times are taken as UTC (the column refuses naive values)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _action_clause(actions: Sequence[str]) -> ColumnElement[bool] | None:
    """`login.success` matches exactly; `login.` (or `login.*`) matches every `login.…`."""
    clauses: list[ColumnElement[bool]] = []
    for action in actions:
        if not action:
            continue
        if action.endswith("*"):
            action = action[:-1]
            if not action:
                continue
            clauses.append(col(AuditEvent.action).startswith(action, autoescape=True))
        elif action.endswith("."):
            clauses.append(col(AuditEvent.action).startswith(action, autoescape=True))
        else:
            clauses.append(col(AuditEvent.action) == action)
    if not clauses:
        return None
    return or_(*clauses)


def _filtered(
    stmt: SelectOfScalar[Any],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actions: Sequence[str] = (),
    actor_user_id: int | None = None,
    actor_api_key_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    after_id: int | None = None,
) -> SelectOfScalar[Any]:
    if since is not None:
        stmt = stmt.where(col(AuditEvent.at) >= _utc(since))
    if until is not None:
        stmt = stmt.where(col(AuditEvent.at) < _utc(until))
    action_clause = _action_clause(actions)
    if action_clause is not None:
        stmt = stmt.where(action_clause)
    if actor_user_id is not None:
        stmt = stmt.where(col(AuditEvent.actor_user_id) == actor_user_id)
    if actor_api_key_id is not None:
        stmt = stmt.where(col(AuditEvent.actor_api_key_id) == actor_api_key_id)
    if target_type is not None:
        stmt = stmt.where(col(AuditEvent.target_type) == target_type)
    if target_id is not None:
        stmt = stmt.where(col(AuditEvent.target_id) == str(target_id))
    if after_id is not None:
        stmt = stmt.where(col(AuditEvent.id) > after_id)
    return stmt


def query(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actions: Sequence[str] = (),
    actor_user_id: int | None = None,
    actor_api_key_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    after_id: int | None = None,
    limit: int,
) -> list[AuditEvent]:
    """Matching events in id order, at most `limit`, the first with an id above `after_id`.

    `since` is inclusive, `until` exclusive. Filters combine with AND; several `actions`
    with OR."""
    stmt = _filtered(
        select(AuditEvent),
        since=since,
        until=until,
        actions=actions,
        actor_user_id=actor_user_id,
        actor_api_key_id=actor_api_key_id,
        target_type=target_type,
        target_id=target_id,
        after_id=after_id,
    )
    return list(session.exec(stmt.order_by(col(AuditEvent.id)).limit(max(limit, 0))).all())


def count(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actions: Sequence[str] = (),
    actor_user_id: int | None = None,
    actor_api_key_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    after_id: int | None = None,
) -> int:
    """How many events `iter_events` with the same filters would give (at this moment)."""
    stmt = _filtered(
        select(func.count()).select_from(AuditEvent),
        since=since,
        until=until,
        actions=actions,
        actor_user_id=actor_user_id,
        actor_api_key_id=actor_api_key_id,
        target_type=target_type,
        target_id=target_id,
        after_id=after_id,
    )
    return int(session.exec(stmt).one())


def iter_events(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actions: Sequence[str] = (),
    actor_user_id: int | None = None,
    actor_api_key_id: int | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    after_id: int | None = None,
    batch: int = 1000,
) -> Iterator[AuditEvent]:
    """Every matching event in id order, read `batch` rows at a time (keyset pages), so an
    export never holds the whole log in memory. Events come detached from the session."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cursor = after_id
    while True:
        rows = query(
            session,
            since=since,
            until=until,
            actions=actions,
            actor_user_id=actor_user_id,
            actor_api_key_id=actor_api_key_id,
            target_type=target_type,
            target_id=target_id,
            after_id=cursor,
            limit=batch,
        )
        for row in rows:
            session.expunge(row)  # the identity map must not grow with the export
        yield from rows
        if len(rows) < batch:
            return
        cursor = rows[-1].id


def purge_older_than(
    session: Session, cutoff: datetime, *, record_empty: bool = True, **detail: Any
) -> int:
    """Delete events from before `cutoff`; how many. Records one `audit.purge` event with the
    count and the cutoff (with `record_empty=False`, only when something was deleted) plus
    `detail` (e.g. via="cli"). The caller commits."""
    cutoff = _utc(cutoff)
    stmt = delete(AuditEvent).where(col(AuditEvent.at) < cutoff)
    result = session.execute(stmt.execution_options(synchronize_session=False))
    deleted = int(getattr(result, "rowcount", 0) or 0)
    if deleted or record_empty:
        record(session, PURGE_ACTION, count=deleted, cutoff=cutoff.isoformat(), **detail)
    return deleted
