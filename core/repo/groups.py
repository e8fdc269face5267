"""Departments: named groups of users, nested through `parent_id`."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete as sql_delete
from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound, ZhikuError
from core.models import Group, GroupMember, LibraryGrant, ScopeGrant, User


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise ZhikuError("department name must be 1-200 characters", code="bad_name", status=422)
    return name


def _check_parent(session: Session, group_id: int | None, parent_id: int | None) -> None:
    seen = {group_id} if group_id is not None else set()
    current = parent_id
    while current is not None:
        if current in seen:
            raise ZhikuError("departments cannot contain themselves", code="bad_parent", status=422)
        seen.add(current)
        parent = session.get(Group, current)
        if parent is None:
            raise NotFound(f"department {current} not found")
        current = parent.parent_id


def create(session: Session, name: str, parent_id: int | None = None) -> Group:
    name = _check_name(name)
    if get_by_name(session, name) is not None:
        raise Conflict(f"a department named {name!r} already exists")
    _check_parent(session, None, parent_id)
    row = Group(name=name, parent_id=parent_id)
    session.add(row)
    session.flush()
    return row


def update(session: Session, group: Group, *, name: str | None, parent_id: int | None) -> None:
    if name is not None:
        name = _check_name(name)
        other = get_by_name(session, name)
        if other is not None and other.id != group.id:
            raise Conflict(f"a department named {name!r} already exists")
        group.name = name
    _check_parent(session, group.id, parent_id)
    group.parent_id = parent_id
    session.add(group)
    session.flush()


def get(session: Session, group_id: int) -> Group | None:
    return session.get(Group, group_id)


def get_by_name(session: Session, name: str) -> Group | None:
    return session.exec(select(Group).where(Group.name == name.strip())).first()


def list_all(session: Session) -> list[Group]:
    return list(session.exec(select(Group).order_by(col(Group.id))))


def member_ids(session: Session, group_id: int) -> list[int]:
    rows = session.exec(
        select(GroupMember.user_id)
        .where(GroupMember.group_id == group_id)
        .order_by(col(GroupMember.user_id))
    )
    return list(rows)


def add_member(session: Session, group_id: int, user_id: int) -> bool:
    if session.get(User, user_id) is None:
        raise NotFound(f"user {user_id} not found")
    if session.get(GroupMember, (group_id, user_id)) is not None:
        return False
    session.add(GroupMember(group_id=group_id, user_id=user_id))
    session.flush()
    return True


def remove_member(session: Session, group_id: int, user_id: int) -> bool:
    row = session.get(GroupMember, (group_id, user_id))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def delete(session: Session, group: Group) -> None:
    """Remove a department with its memberships and grants; sub-departments move up."""
    gid = group.id
    for child in session.exec(select(Group).where(Group.parent_id == gid)):
        child.parent_id = group.parent_id
        session.add(child)
    session.execute(sql_delete(GroupMember).where(col(GroupMember.group_id) == gid))
    session.execute(sql_delete(LibraryGrant).where(col(LibraryGrant.group_id) == gid))
    session.execute(sql_delete(ScopeGrant).where(col(ScopeGrant.group_id) == gid))
    session.delete(group)
    session.flush()


def sync_memberships(session: Session, user_id: int, names: Iterable[str]) -> None:
    """Make the user a member of exactly the named departments that exist here."""
    wanted = {g.id for n in names if (g := get_by_name(session, n)) is not None}
    current = set(session.exec(select(GroupMember.group_id).where(GroupMember.user_id == user_id)))
    for gid in wanted - current:
        if gid is not None:
            session.add(GroupMember(group_id=gid, user_id=user_id))
    for gid in current - wanted:
        row = session.get(GroupMember, (gid, user_id))
        if row is not None:
            session.delete(row)
    session.flush()
