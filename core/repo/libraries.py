from __future__ import annotations

from sqlmodel import Session, col, select

from core.errors import Conflict, NotFound, ZhikuError
from core.models import PERMISSION_RANK, Group, GroupMember, Library, LibraryGrant, Permission, User


def create(session: Session, name: str, description: str, created_by: int | None) -> Library:
    name = name.strip()
    if not name or len(name) > 200:
        raise ZhikuError("library name must be 1-200 characters", code="bad_name", status=422)
    if get_by_name(session, name) is not None:
        raise Conflict(f"a library named {name!r} already exists")
    lib = Library(name=name, description=description, created_by=created_by)
    session.add(lib)
    session.flush()
    return lib


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
