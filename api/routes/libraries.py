"""Libraries and who may use them: grants on a whole library, and grants narrowed to a folder
or a document."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from api.access_schemas import GrantIn, GrantOut, ScopeGrantIn, ScopeGrantOut
from api.deps import (
    AdminDep,
    SearchPrincipal,
    SessionDep,
    SettingsDep,
    UserPrincipal,
    client_ip,
)
from api.schemas import LibraryIn, LibraryOut, LibraryPatch
from core import access
from core.access import Principal
from core.errors import Conflict, NotFound
from core.models import Library, Permission
from core.repo import audit, documents, libraries, scope_grants
from core.settings import Settings
from core.storage import OriginalStore, PageCache
from retrieval import index_store

log = logging.getLogger(__name__)
router = APIRouter(prefix="/libraries", tags=["libraries"])
#: How long deleting a library waits for a worker that is writing its index.
INDEX_LOCK_WAIT_S = 30.0


def _out(session: Session, p: Principal, lib: Library, perm: Permission) -> LibraryOut:
    assert lib.id is not None
    narrowed = access.document_filters(session, p, [lib.id]).get(lib.id)
    return LibraryOut(
        id=lib.id,
        name=lib.name,
        description=lib.description,
        allow_download=lib.allow_download,
        created_at=lib.created_at,
        permission=perm.value,
        documents=documents.counts_by_status(session, lib.id, narrowed),
    )


@router.post("", response_model=LibraryOut, status_code=201)
def create_library(
    body: LibraryIn, request: Request, session: SessionDep, settings: SettingsDep, admin: AdminDep
) -> LibraryOut:
    lib = libraries.create(session, body.name, body.description, admin.id)
    assert lib.id is not None
    # Index files under this id can only be left over from a deleted library (SQLite may
    # reuse its id; a crash may have come between deleting its rows and its files).
    with index_store.writer_lock(settings.indexes_dir, lib.id):
        index_store.drop_library(settings.indexes_dir, lib.id)
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


@router.patch("/{library_id}", response_model=LibraryOut)
def update_library(
    library_id: int, body: LibraryPatch, request: Request, session: SessionDep, p: UserPrincipal
) -> LibraryOut:
    """Rename the library, describe it, or turn downloads of originals on or off for its
    readers (its managers may always download). Needs `manage`."""
    lib, perm = access.require_library(session, p, library_id, Permission.manage)
    changes = libraries.update(
        session,
        lib,
        name=body.name,
        description=body.description,
        allow_download=body.allow_download,
    )
    if changes:
        audit.record(
            session,
            "library.update",
            **p.audit_fields(),
            target_type="library",
            target_id=library_id,
            client_ip=client_ip(request),
            changes=changes,
        )
    try:
        session.commit()
    except IntegrityError:  # another request took the name a moment ago
        session.rollback()
        raise Conflict(
            f"a library named {body.name!r} already exists; choose another name"
        ) from None
    return _out(session, p, lib, perm)


@router.delete("/{library_id}", status_code=204)
def delete_library(
    library_id: int,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminDep,
) -> Response:
    """Delete the library for good: its documents (their chunks, index entries and stored
    originals), its grants and narrowed grants. Nothing of it can be found any more and its
    name is free again. API keys limited to it lose it; a key that had no other library is
    revoked. Conversations and feedback keep what they hold, but withhold its passages.
    Administrators only."""
    lib = libraries.get(session, library_id)
    if lib is None:
        raise NotFound(f"library {library_id} not found")
    name = lib.name
    try:
        # No index writer may publish a snapshot of it between our commit and our cleanup.
        with index_store.writer_lock(settings.indexes_dir, library_id, timeout=INDEX_LOCK_WAIT_S):
            removed = libraries.delete_library(session, library_id)
            audit.record(
                session,
                "library.delete",
                actor_user_id=admin.id,
                target_type="library",
                target_id=library_id,
                client_ip=client_ip(request),
                name=name,
                documents=len(removed.documents),
                chunks=removed.chunks,
                grants=removed.grants,
                scoped_grants=removed.scoped_grants,
                api_keys_narrowed=removed.keys_narrowed,
                api_keys_revoked=removed.keys_revoked,
            )
            try:
                session.commit()
            except IntegrityError:
                # A row was added to it (an upload, a grant) while it was being deleted.
                session.rollback()
                raise Conflict(
                    "the library changed while it was being deleted; try again",
                    code="library_changed",
                ) from None
            index_store.drop_library(settings.indexes_dir, library_id)
    except TimeoutError:
        raise Conflict(
            "the library's index is being written right now; try again in a minute",
            code="library_busy",
        ) from None
    retriever = getattr(request.app.state, "retriever", None)
    if retriever is not None:
        retriever.forget_library(library_id)
    _remove_files(session, settings, removed)
    return Response(status_code=204)


def _remove_files(session: Session, settings: Settings, removed: libraries.Removed) -> None:
    """After the commit: rendered pages of its documents, and the originals no other document
    (of another library) refers to. A failure here leaves files nobody can reach, never rows
    without their files."""
    cache = PageCache(settings.page_cache_dir)
    store = OriginalStore(settings.originals_dir)
    try:
        for doc_id, _ in removed.documents:
            cache.purge(doc_id)
        digests = [sha for _, sha in removed.documents]
        in_use = documents.sha256_in_use(session, digests)
        for sha in sorted(set(digests) - in_use):
            store.delete(sha)
    except OSError:
        log.warning("could not remove every file of a deleted library", exc_info=True)


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
