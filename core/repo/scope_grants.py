"""Grants narrowed to a folder or one document of a library (read only)."""

from __future__ import annotations

from collections.abc import Collection

from sqlmodel import Session, col, select

from core.errors import NotFound, ZhikuError
from core.models import Document, ScopeGrant
from core.repo.libraries import check_grantee


def normalize_folder(folder: str) -> str:
    """'/HR//Pay/' → 'HR/Pay'. Refuses '..' so a scope is always inside its library."""
    parts = [p for p in folder.replace("\\", "/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise ZhikuError("a folder may not contain '..'", code="bad_folder", status=422)
    return "/".join(parts)


def in_folder(document_folder: str, folder: str) -> bool:
    return document_folder == folder or document_folder.startswith(folder + "/")


def create(
    session: Session,
    library_id: int,
    *,
    folder: str = "",
    document_id: int | None = None,
    user_id: int | None,
    group_id: int | None,
    created_by: int | None,
) -> ScopeGrant:
    check_grantee(session, user_id, group_id)
    folder = normalize_folder(folder)
    if (document_id is None) == (folder == ""):
        raise ZhikuError("give exactly one of folder or document_id", code="bad_grant", status=422)
    if document_id is not None:
        doc = session.get(Document, document_id)
        if doc is None or doc.library_id != library_id or doc.status == "deleted":
            raise NotFound(f"document {document_id} not found in this library")
    existing = session.exec(
        select(ScopeGrant).where(
            ScopeGrant.library_id == library_id,
            ScopeGrant.folder == folder,
            ScopeGrant.document_id == document_id,
            ScopeGrant.user_id == user_id,
            ScopeGrant.group_id == group_id,
        )
    ).first()
    if existing is not None:
        return existing
    row = ScopeGrant(
        library_id=library_id,
        folder=folder,
        document_id=document_id,
        user_id=user_id,
        group_id=group_id,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def for_libraries(session: Session, library_ids: Collection[int]) -> list[ScopeGrant]:
    if not library_ids:
        return []
    return list(
        session.exec(
            select(ScopeGrant)
            .where(col(ScopeGrant.library_id).in_(list(library_ids)))
            .order_by(col(ScopeGrant.id))
        )
    )


def library_ids_held(session: Session, user_id: int, group_ids: Collection[int]) -> set[int]:
    cond = col(ScopeGrant.user_id) == user_id
    if group_ids:
        cond = cond | col(ScopeGrant.group_id).in_(list(group_ids))
    return set(session.exec(select(ScopeGrant.library_id).where(cond)))


def get(session: Session, grant_id: int) -> ScopeGrant | None:
    return session.get(ScopeGrant, grant_id)


def delete(session: Session, grant: ScopeGrant) -> None:
    session.delete(grant)
    session.flush()
