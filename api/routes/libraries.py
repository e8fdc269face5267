from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import AdminDep, SessionDep, UserDep, client_ip, library_for
from api.schemas import GrantIn, GrantOut, LibraryIn, LibraryOut
from core.models import Library, Permission
from core.repo import audit, documents, libraries

router = APIRouter(prefix="/libraries", tags=["libraries"])


def _out(session: SessionDep, lib: Library, perm: Permission) -> LibraryOut:
    assert lib.id is not None
    return LibraryOut(
        id=lib.id,
        name=lib.name,
        description=lib.description,
        created_at=lib.created_at,
        permission=perm.value,
        documents=documents.counts_by_status(session, lib.id),
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
    return _out(session, lib, Permission.manage)


@router.get("", response_model=list[LibraryOut])
def list_libraries(session: SessionDep, user: UserDep) -> list[LibraryOut]:
    perms = libraries.permissions_of(session, user)
    return [
        _out(session, lib, perms[lib.id])
        for lib in libraries.list_all(session)
        if lib.id is not None and lib.id in perms
    ]


@router.get("/{library_id}", response_model=LibraryOut)
def get_library(library_id: int, session: SessionDep, user: UserDep) -> LibraryOut:
    lib = library_for(session, user, library_id)
    perm = libraries.permission_on(session, user, library_id)
    assert perm is not None
    return _out(session, lib, perm)


@router.post("/{library_id}/grants", response_model=GrantOut, status_code=201)
def grant(
    library_id: int, body: GrantIn, request: Request, session: SessionDep, user: UserDep
) -> GrantOut:
    library_for(session, user, library_id, Permission.manage)
    row = libraries.grant(
        session,
        library_id,
        Permission(body.permission),
        user_id=body.user_id,
        group_id=body.group_id,
        created_by=user.id,
    )
    audit.record(
        session,
        "grant.set",
        actor_user_id=user.id,
        target_type="library",
        target_id=library_id,
        client_ip=client_ip(request),
        user_id=body.user_id,
        group_id=body.group_id,
        permission=body.permission,
    )
    session.commit()
    return GrantOut.model_validate(row, from_attributes=True)


@router.get("/{library_id}/grants", response_model=list[GrantOut])
def list_grants(library_id: int, session: SessionDep, user: UserDep) -> list[GrantOut]:
    library_for(session, user, library_id, Permission.manage)
    return [
        GrantOut.model_validate(g, from_attributes=True)
        for g in libraries.grants_of(session, library_id)
    ]
