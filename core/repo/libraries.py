from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_
from sqlalchemy import update as sql_update
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound, ZhikuError
from core.models import (
    PERMISSION_RANK,
    Chunk,
    DocStatus,
    Document,
    Group,
    GroupMember,
    Library,
    LibraryGrant,
    Permission,
    ScopeGrant,
    User,
    utcnow,
)
from core.repo import api_keys


def _check_name(session: Session, name: str, library_id: int | None = None) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise ZhikuError("library name must be 1-200 characters", code="bad_name", status=422)
    other = get_by_name(session, name)
    if other is not None and other.id != library_id:
        raise Conflict(f"a library named {name!r} already exists; choose another name")
    return name


def create(session: Session, name: str, description: str, created_by: int | None) -> Library:
    name = _check_name(session, name)
    lib = Library(name=name, description=description, created_by=created_by)
    session.add(lib)
    session.flush()
    return lib


def update(
    session: Session,
    lib: Library,
    *,
    name: str | None = None,
    description: str | None = None,
    allow_download: bool | None = None,
) -> dict[str, dict[str, Any]]:
    """Change what is given; returns what changed ({field: {"from", "to"}})."""
    changes: dict[str, dict[str, Any]] = {}
    if name is not None:
        name = _check_name(session, name, lib.id)
        if name != lib.name:
            changes["name"] = {"from": lib.name, "to": name}
            lib.name = name
    if description is not None and description != lib.description:
        changes["description"] = {"from": lib.description, "to": description}
        lib.description = description
    if allow_download is not None and allow_download != lib.allow_download:
        changes["allow_download"] = {"from": lib.allow_download, "to": allow_download}
        lib.allow_download = allow_download
    if changes:
        session.add(lib)
        session.flush()
    return changes


@dataclass(frozen=True)
class Removed:
    """What deleting a library took with it; the caller removes the files."""

    documents: list[tuple[int, str]]  # (id, sha256)
    chunks: int
    grants: int
    scoped_grants: int
    keys_narrowed: list[int]  # API keys that lost this library from their list
    keys_revoked: list[int]  # API keys that had no other library left


def delete_library(session: Session, library_id: int) -> Removed:
    """Delete the library and every row of it: documents, chunks, grants, narrowed grants; API
    keys limited to it lose it (and are revoked when it was their only library — an empty list
    would mean "every library"). Conversations, feedback and audit events keep their copies.

    The documents are first retired in place (status `deleted`, a new version, no claim): that
    waits for a worker committing its chunks right now, and fences every later step of any
    worker holding one of them (its claim and version no longer match), so nothing comes back.
    Nothing is committed here."""
    session.execute(
        sql_update(Document)
        .where(col(Document.library_id) == library_id)
        .values(
            status=DocStatus.deleted,
            version=Document.version + 1,
            claim=None,
            enqueued_at=None,
            updated_at=utcnow(),
        )
    )
    docs = [
        (int(i), str(sha))
        for i, sha in session.exec(
            select(Document.id, Document.sha256).where(Document.library_id == library_id)
        )
        if i is not None
    ]
    doc_ids = [d for d, _ in docs]
    chunks = session.execute(delete(Chunk).where(col(Chunk.library_id) == library_id))
    scope_cond = col(ScopeGrant.library_id) == library_id
    if doc_ids:
        scope_cond = or_(scope_cond, col(ScopeGrant.document_id).in_(doc_ids))
    scoped = session.execute(delete(ScopeGrant).where(scope_cond))
    session.execute(delete(Document).where(col(Document.library_id) == library_id))
    grants = session.execute(delete(LibraryGrant).where(col(LibraryGrant.library_id) == library_id))
    narrowed, revoked = api_keys.drop_library(session, library_id)
    session.execute(delete(Library).where(col(Library.id) == library_id))
    session.flush()
    return Removed(
        documents=docs,
        chunks=int(chunks.rowcount),  # type: ignore[attr-defined]
        grants=int(grants.rowcount),  # type: ignore[attr-defined]
        scoped_grants=int(scoped.rowcount),  # type: ignore[attr-defined]
        keys_narrowed=narrowed,
        keys_revoked=revoked,
    )


def get(session: Session, library_id: int) -> Library | None:
    return session.get(Library, library_id)


def get_by_name(session: Session, name: str) -> Library | None:
    return session.exec(select(Library).where(Library.name == name)).first()


def list_all(session: Session) -> list[Library]:
    return list(session.exec(select(Library).order_by(col(Library.id))))


def group_ids_of(session: Session, user_id: int) -> set[int]:
    """The user's groups and every ancestor group (departments nest)."""
    direct = set(session.exec(select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
    result = set(direct)
    frontier = set(direct)
    while frontier:
        parents = {
            g.parent_id
            for g in session.exec(select(Group).where(col(Group.id).in_(frontier)))
            if g.parent_id is not None and g.parent_id not in result
        }
        result |= parents
        frontier = parents
    return result


def permissions_of(session: Session, user: User) -> dict[int, Permission]:
    """Library id → the strongest permission granted to the user or their departments.
    Raw grants: `core.access` applies roles, API keys and narrower grants on top."""
    if user.is_admin:
        return {lib.id: Permission.manage for lib in list_all(session) if lib.id is not None}
    assert user.id is not None
    groups = group_ids_of(session, user.id)
    cond = col(LibraryGrant.user_id) == user.id
    if groups:
        cond = cond | col(LibraryGrant.group_id).in_(groups)
    best: dict[int, Permission] = {}
    for grant in session.exec(select(LibraryGrant).where(cond)):
        perm = Permission(grant.permission)
        cur = best.get(grant.library_id)
        if cur is None or PERMISSION_RANK[perm] > PERMISSION_RANK[cur]:
            best[grant.library_id] = perm
    return best


def check_grantee(session: Session, user_id: int | None, group_id: int | None) -> None:
    """A grant goes to exactly one existing user or department."""
    if (user_id is None) == (group_id is None):
        raise ZhikuError("give exactly one of user_id or group_id", code="bad_grant", status=422)
    if user_id is not None and session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} not found")
    if group_id is not None and session.get(Group, group_id) is None:
        raise NotFound(f"group {group_id} not found")


def grant(
    session: Session,
    library_id: int,
    permission: Permission,
    *,
    user_id: int | None,
    group_id: int | None,
    created_by: int | None,
) -> LibraryGrant:
    check_grantee(session, user_id, group_id)
    existing = session.exec(
        select(LibraryGrant).where(
            LibraryGrant.library_id == library_id,
            LibraryGrant.user_id == user_id,
            LibraryGrant.group_id == group_id,
        )
    ).first()
    if existing is not None:
        existing.permission = permission.value
        session.add(existing)
        session.flush()
        return existing
    row = LibraryGrant(
        library_id=library_id,
        user_id=user_id,
        group_id=group_id,
        permission=permission.value,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def grants_of(session: Session, library_id: int) -> list[LibraryGrant]:
    return list(
        session.exec(
            select(LibraryGrant)
            .where(LibraryGrant.library_id == library_id)
            .order_by(col(LibraryGrant.id))
        )
    )


def get_grant(session: Session, grant_id: int) -> LibraryGrant | None:
    return session.get(LibraryGrant, grant_id)


def delete_grant(session: Session, row: LibraryGrant) -> None:
    session.delete(row)
    session.flush()
