from __future__ import annotations

from typing import Any

from sqlmodel import Session

from core.models import AuditEvent


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
