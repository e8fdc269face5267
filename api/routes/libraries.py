"""Libraries and who may use them: grants on a whole library, and grants narrowed to a folder
or a document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from api.access_schemas import GrantIn, GrantOut, ScopeGrantIn, ScopeGrantOut
from api.deps import AdminDep, SearchPrincipal, SessionDep, UserPrincipal, client_ip
from api.schemas import LibraryIn, LibraryOut
from core import access
from core.access import Principal
from core.errors import NotFound
from core.models import Library, Permission
from core.repo import audit, documents, libraries, scope_grants

router = APIRouter(prefix="/libraries", tags=["libraries"])


def _out(session: Session, p: Principal, lib: Library, perm: Permission) -> LibraryOut:
    assert lib.id is not None
    narrowed = access.document_filters(session, p, [lib.id]).get(lib.id)
    return LibraryOut(
        id=lib.id,
        name=lib.name,
        description=lib.description,
        created_at=lib.created_at,
        permission=perm.value,
        documents=documents.counts_by_status(session, lib.id, narrowed),
    )


@router.post("", response_model=LibraryOut, status_code=201)
def create_library(
    body: LibraryIn, request: Request, session: SessionDep, admin: AdminDep
) -> LibraryOut:
    lib = libraries.create(session, body.name, body.description, admin.id)
    audit.record(
        session,
        "library.create",
        actor_user_id=admin.id,
        target_type="library",
        target_id=lib.id or "",
        client_ip=client_ip(request),
        name=lib.name,
    )
    session.commit()
    return _out(session, Principal(user=admin), lib, Permission.manage)


@router.get("", response_model=list[LibraryOut])
def list_libraries(session: SessionDep, p: SearchPrincipal) -> list[LibraryOut]:
    """The libraries you may read, with your permission on each."""
    perms = access.library_permissions(session, p)
    return [
        _out(session, p, lib, perms[lib.id])
        for lib in libraries.list_all(session)
        if lib.id is not None and lib.id in perms
    ]


@router.get("/{library_id}", response_model=LibraryOut)
def get_library(library_id: int, session: SessionDep, p: SearchPrincipal) -> LibraryOut:
    lib, perm = access.require_library(session, p, library_id)
    return _out(session, p, lib, perm)


def _grant_audit(
    session: Session, request: Request, p: Principal, action: str, library_id: int, **kw: Any
) -> None:
    audit.record(
        session,
        action,
        **p.audit_fields(),
        target_type="library",
        target_id=library_id,
        client_ip=client_ip(request),
        **kw,
    )


@router.post("/{library_id}/grants", response_model=GrantOut, status_code=201)
def grant(
    library_id: int, body: GrantIn, request: Request, session: SessionDep, p: UserPrincipal
) -> GrantOut:
    """Give a user or a department `read`, `write` or `manage` on the library (replaces an
    earlier grant to the same one). Needs `manage`."""
    access.require_library(session, p, library_id, Permission.manage)
    row = libraries.grant(
        session,
        library_id,
        Permission(body.permission),
        user_id=body.user_id,
        group_id=body.group_id,
        created_by=p.user.id,
    )
    _grant_audit(
        session,
        request,
        p,
        "grant.set",
        library_id,
        user_id=body.user_id,
        group_id=body.group_id,
        permission=body.permission,
    )
    session.commit()
    return GrantOut.model_validate(row, from_attributes=True)


@router.get("/{library_id}/grants", response_model=list[GrantOut])
def list_grants(library_id: int, session: SessionDep, p: UserPrincipal) -> list[GrantOut]:
    access.require_library(session, p, library_id, Permission.manage)
    return [
        GrantOut.model_validate(g, from_attributes=True)
        for g in libraries.grants_of(session, library_id)
    ]


@router.delete("/{library_id}/grants/{grant_id}", status_code=204)
def revoke_grant(
    library_id: int, grant_id: int, request: Request, session: SessionDep, p: UserPrincipal
) -> Response:
    """Revoke a grant; it takes effect on the next request."""
    access.require_library(session, p, library_id, Permission.manage)
    row = libraries.get_grant(session, grant_id)
    if row is None or row.library_id != library_id:
        raise NotFound(f"grant {grant_id} not found")
    libraries.delete_grant(session, row)
    _grant_audit(
        session,
        request,
        p,
        "grant.revoke",
        library_id,
        grant_id=grant_id,
        user_id=row.user_id,
        group_id=row.group_id,
        permission=row.permission,
    )
    session.commit()
    return Response(status_code=204)


@router.post("/{library_id}/scoped-grants", response_model=ScopeGrantOut, status_code=201)
def grant_scope(
    library_id: int, body: ScopeGrantIn, request: Request, session: SessionDep, p: UserPrincipal
) -> ScopeGrantOut:
    """Restrict a folder (with its subfolders) or one document to the given user or
    department: from now on only its grantees (and the library's managers) read it, even
    people who may read the rest of the library. Grant it to several to share it. Needs
    `manage`."""
    access.require_library(session, p, library_id, Permission.manage)
    row = scope_grants.create(
        session,
        library_id,
        folder=body.folder,
        document_id=body.document_id,
        user_id=body.user_id,
        group_id=body.group_id,
        created_by=p.user.id,
    )
    _grant_audit(
        session,
        request,
        p,
        "grant.scope_set",
        library_id,
        folder=row.folder,
        document_id=row.document_id,
        user_id=row.user_id,
        group_id=row.group_id,
    )
    session.commit()
    return ScopeGrantOut.model_validate(row, from_attributes=True)


@router.get("/{library_id}/scoped-grants", response_model=list[ScopeGrantOut])
def list_scope_grants(
    library_id: int, session: SessionDep, p: UserPrincipal
) -> list[ScopeGrantOut]:
    access.require_library(session, p, library_id, Permission.manage)
    return [
        ScopeGrantOut.model_validate(g, from_attributes=True)
        for g in scope_grants.for_libraries(session, [library_id])
    ]


@router.delete("/{library_id}/scoped-grants/{grant_id}", status_code=204)
def revoke_scope_grant(
    library_id: int, grant_id: int, request: Request, session: SessionDep, p: UserPrincipal
) -> Response:
    """Remove a narrowed grant. When a folder's last one goes, the folder is open again to
    everyone who may read the library."""
    access.require_library(session, p, library_id, Permission.manage)
    row = scope_grants.get(session, grant_id)
    if row is None or row.library_id != library_id:
        raise NotFound(f"grant {grant_id} not found")
    scope_grants.delete(session, row)
    _grant_audit(
        session,
        request,
        p,
        "grant.scope_revoke",
        library_id,
        grant_id=grant_id,
        folder=row.folder,
        document_id=row.document_id,
        user_id=row.user_id,
        group_id=row.group_id,
    )
    session.commit()
    return Response(status_code=204)
