"""Departments (groups of users, nested). Admins manage them; librarians may list them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from api.access_schemas import GroupIn, GroupOut, GroupPatch, MemberIn
from api.deps import AdminDep, ManagerPrincipal, SessionDep, client_ip
from core.errors import NotFound
from core.models import Group
from core.repo import audit, groups

router = APIRouter(prefix="/groups", tags=["users"])


def _group(session: Session, group_id: int) -> Group:
    row = groups.get(session, group_id)
    if row is None:
        raise NotFound(f"department {group_id} not found")
    return row


def _out(session: Session, row: Group) -> GroupOut:
    assert row.id is not None
    return GroupOut(
        id=row.id,
        name=row.name,
        parent_id=row.parent_id,
        member_ids=groups.member_ids(session, row.id),
        created_at=row.created_at,
    )


def _audit(
    session: Session, request: Request, admin_id: int | None, action: str, gid: int, **kw: Any
) -> None:
    audit.record(
        session,
        action,
        actor_user_id=admin_id,
        target_type="group",
        target_id=gid,
        client_ip=client_ip(request),
        **kw,
    )


@router.post("", response_model=GroupOut, status_code=201)
def create_group(body: GroupIn, request: Request, session: SessionDep, admin: AdminDep) -> GroupOut:
    row = groups.create(session, body.name, body.parent_id)
    assert row.id is not None
    _audit(
        session, request, admin.id, "group.create", row.id, name=row.name, parent_id=row.parent_id
    )
    session.commit()
    return _out(session, row)


@router.get("", response_model=list[GroupOut])
def list_groups(session: SessionDep, _: ManagerPrincipal) -> list[GroupOut]:
    return [_out(session, g) for g in groups.list_all(session)]


@router.get("/{group_id}", response_model=GroupOut)
def get_group(group_id: int, session: SessionDep, _: ManagerPrincipal) -> GroupOut:
    return _out(session, _group(session, group_id))


@router.patch("/{group_id}", response_model=GroupOut)
def update_group(
    group_id: int, body: GroupPatch, request: Request, session: SessionDep, admin: AdminDep
) -> GroupOut:
    """Rename or move a department (parent_id null = top level)."""
    row = _group(session, group_id)
    groups.update(session, row, name=body.name, parent_id=body.parent_id)
    _audit(
        session, request, admin.id, "group.update", group_id, name=row.name, parent_id=row.parent_id
    )
    session.commit()
    return _out(session, row)


@router.delete("/{group_id}", status_code=204)
def delete_group(group_id: int, request: Request, session: SessionDep, admin: AdminDep) -> Response:
    """Delete a department with its memberships and grants; sub-departments move up a level."""
    row = _group(session, group_id)
    name = row.name
    groups.delete(session, row)
    _audit(session, request, admin.id, "group.delete", group_id, name=name)
    session.commit()
    return Response(status_code=204)


@router.post("/{group_id}/members", response_model=GroupOut)
def add_member(
    group_id: int, body: MemberIn, request: Request, session: SessionDep, admin: AdminDep
) -> GroupOut:
    row = _group(session, group_id)
    if groups.add_member(session, group_id, body.user_id):
        _audit(session, request, admin.id, "group.member_add", group_id, user_id=body.user_id)
    session.commit()
    return _out(session, row)


@router.delete("/{group_id}/members/{user_id}", status_code=204)
def remove_member(
    group_id: int, user_id: int, request: Request, session: SessionDep, admin: AdminDep
) -> Response:
    _group(session, group_id)
    if not groups.remove_member(session, group_id, user_id):
        raise NotFound(f"user {user_id} is not a member of department {group_id}")
    _audit(session, request, admin.id, "group.member_remove", group_id, user_id=user_id)
    session.commit()
    return Response(status_code=204)
