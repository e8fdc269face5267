"""The one place that decides what a principal may do to a resource.

Every route, task and the OpenAI facade asks here. A principal is a signed-in user, an API key
(acting for its owner), or an API key with the `act_as` scope acting for a named user — then it
sees exactly the intersection of the key's scope and that user's grants.

Rules:
- `admin` may do everything (when signed in as a user, not through a key).
- Library grants (`read` < `write` < `manage`) go to users or departments; departments nest and
  a grant to a department reaches its sub-departments' members. Roles cap them: `staff` reads
  at most, `librarian` up to `manage`.
- A grant narrowed to a folder or a document (`ScopeGrant`) gives read access to that part and
  restricts it: inside it only its grantees read (managers of the library and admins always do).
  The innermost restricted scope around a document decides.
- An API key is capped by its scopes (`search`/`chat` read, `ingest` write) and its libraries.
- What the caller may not read does not exist for them: 404, never 403.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from core.errors import Forbidden, NotFound
from core.models import (
    PERMISSION_RANK,
    ApiKey,
    DocStatus,
    Document,
    Library,
    Permission,
    Role,
    ScopeGrant,
    User,
)
from core.repo import libraries, scope_grants
from core.types import DocFilter

ROLE_CAP = {
    Role.admin: Permission.manage,
    Role.librarian: Permission.manage,
    Role.staff: Permission.read,
}


@dataclass(frozen=True)
class Principal:
    """Who is asking. `user` is whose grants apply: the signed-in user, the key's owner, or
    the user an `act_as` key names (then `key_owner` is the key's owner)."""

    user: User
    api_key: ApiKey | None = None
    key_owner: User | None = None

    @property
    def is_admin(self) -> bool:
        return self.api_key is None and self.user.is_admin

    def audit_fields(self) -> dict[str, Any]:
        """Actor columns (and detail) for an audit event: a key acting for a user is recorded
        as both."""
        fields: dict[str, Any] = {
            "actor_user_id": self.user.id,
            "actor_api_key_id": self.api_key.id if self.api_key else None,
        }
        if self.key_owner is not None:
            fields["key_owner_id"] = self.key_owner.id
        return fields


def _min(a: Permission, b: Permission) -> Permission:
    return a if PERMISSION_RANK[a] <= PERMISSION_RANK[b] else b


def _user_permissions(session: Session, user: User) -> dict[int, Permission]:
    if not user.is_active:
        return {}
    if user.is_admin:
        return libraries.permissions_of(session, user)
    cap = ROLE_CAP[Role(user.role)]
    perms = {lib: _min(p, cap) for lib, p in libraries.permissions_of(session, user).items()}
    assert user.id is not None
    groups = libraries.group_ids_of(session, user.id)
    for lib in scope_grants.library_ids_held(session, user.id, groups):
        perms.setdefault(lib, Permission.read)
    return perms


def _key_permissions(session: Session, key: ApiKey, owner: User) -> dict[int, Permission]:
    cap = Permission.write if "ingest" in key.scopes else Permission.read
    owned = _user_permissions(session, owner)
    if key.library_ids:
        owned = {lib: p for lib, p in owned.items() if lib in set(key.library_ids)}
    return {lib: _min(p, cap) for lib, p in owned.items()}


def library_permissions(session: Session, p: Principal) -> dict[int, Permission]:
    """Library id → what the principal may do there (only libraries it may at least read)."""
    if p.api_key is None:
        return _user_permissions(session, p.user)
    owner = p.key_owner or p.user
    perms = _key_permissions(session, p.api_key, owner)
    if p.key_owner is not None:
        mine = _user_permissions(session, p.user)
        perms = {lib: _min(perm, mine[lib]) for lib, perm in perms.items() if lib in mine}
    return perms


def readable_library_ids(
    session: Session, p: Principal, requested: Sequence[int] | None = None
) -> list[int]:
    """The libraries a search or question covers: `requested` when every one is readable, else
    all readable ones. One that may not be read is reported like one that does not exist."""
    readable = set(library_permissions(session, p))
    if not requested:
        return sorted(readable)
    for library_id in requested:
        if library_id not in readable:
            raise NotFound(f"library {library_id} not found")
    return sorted(set(requested))


def require_library(
    session: Session, p: Principal, library_id: int, need: Permission = Permission.read
) -> tuple[Library, Permission]:
    """The library and the principal's permission on it. Unreadable: 404; readable without
    `need`: 403."""
    perm = library_permissions(session, p).get(library_id)
    lib = libraries.get(session, library_id) if perm is not None else None
    if lib is None or perm is None:
        raise NotFound(f"library {library_id} not found")
    if PERMISSION_RANK[perm] < PERMISSION_RANK[need]:
        raise Forbidden(f"you need '{need.value}' permission on this library")
    return lib, perm


# --- narrower than a library ---------------------------------------------------------------


def _visible_documents(
    session: Session,
    user: User,
    library_id: int,
    library_perm: Permission | None,
    grants: list[ScopeGrant],
    docs: list[tuple[int, str]],
) -> set[int] | None:
    """Ids of `docs` (id, folder) of one library that `user` may read; None = all of them."""
    if user.is_admin or library_perm == Permission.manage:
        return None
    if not grants and library_perm is not None:
        return None
    assert user.id is not None
    groups = libraries.group_ids_of(session, user.id)
    held = [g for g in grants if g.user_id == user.id or (g.group_id in groups)]
    restricted_docs = {g.document_id for g in grants if g.document_id is not None}
    held_docs = {g.document_id for g in held if g.document_id is not None}
    restricted_folders = sorted({g.folder for g in grants if g.folder}, key=len, reverse=True)
    held_folders = {g.folder for g in held if g.folder}
    visible: set[int] = set()
    for doc_id, folder in docs:
        if doc_id in restricted_docs:
            ok = doc_id in held_docs
        else:
            inner = next((f for f in restricted_folders if scope_grants.in_folder(folder, f)), None)
            ok = inner in held_folders if inner is not None else library_perm is not None
        if ok:
            visible.add(doc_id)
    return None if len(visible) == len(docs) else visible


def _library_documents(session: Session, library_id: int) -> list[tuple[int, str]]:
    """Every document of the library, deleted ones too: they stay listable (status=deleted)
    and counted, so a deny list must cover them like the rest."""
    rows = session.exec(
        select(Document.id, Document.folder).where(Document.library_id == library_id)
    )
    return [(int(i), f) for i, f in rows if i is not None]


def _users_of(p: Principal) -> list[User]:
    return [p.user] if p.key_owner is None else [p.user, p.key_owner]


def document_filters(
    session: Session, p: Principal, library_ids: Iterable[int]
) -> dict[int, DocFilter]:
    """For each of `library_ids` the principal may read only partly, which documents it may
    read. Libraries it reads entirely have no entry. Call with readable libraries only."""
    ids = sorted(set(library_ids))
    if not ids or p.is_admin:
        return {}
    by_library: dict[int, list[ScopeGrant]] = {}
    for g in scope_grants.for_libraries(session, ids):
        by_library.setdefault(g.library_id, []).append(g)
    raw = {u.id: libraries.permissions_of(session, u) if u.is_active else {} for u in _users_of(p)}
    filters: dict[int, DocFilter] = {}
    for lib in ids:
        grants = by_library.get(lib, [])
        perms = {u.id: raw[u.id].get(lib) for u in _users_of(p)}
        if not grants and all(perm is not None for perm in perms.values()):
            continue
        docs = _library_documents(session, lib)
        allowed: set[int] | None = None
        for u in _users_of(p):
            cap = ROLE_CAP[Role(u.role)]
            perm = perms[u.id]
            capped = _min(perm, cap) if perm is not None else None
            seen = _visible_documents(session, u, lib, capped, grants, docs)
            if seen is not None:
                allowed = seen if allowed is None else allowed & seen
        if allowed is None:
            continue
        denied = {d for d, _ in docs} - allowed
        if len(allowed) <= len(denied):
            filters[lib] = DocFilter(frozenset(allowed), allow=True)
        else:
            filters[lib] = DocFilter(frozenset(denied), allow=False)
    return filters


def require_document(
    session: Session, p: Principal, document_id: int, need: Permission = Permission.read
) -> Document:
    """The document if the principal may read it (else 404) and has `need` on its library
    (else 403). Deleted documents do not exist."""
    doc = session.get(Document, document_id)
    missing = NotFound(f"document {document_id} not found")
    if doc is None or doc.status == DocStatus.deleted:
        raise missing
    perm = library_permissions(session, p).get(doc.library_id)
    if perm is None:
        raise missing
    narrowed = document_filters(session, p, [doc.library_id]).get(doc.library_id)
    if narrowed is not None and not narrowed.permits(document_id):
        raise missing
    if PERMISSION_RANK[perm] < PERMISSION_RANK[need]:
        raise Forbidden(f"you need '{need.value}' permission on this document's library")
    return doc


# --- roles and key scopes ------------------------------------------------------------------


def require_scope(p: Principal, scope: str) -> None:
    """API keys only do what their scopes say; signed-in users are not limited by scopes."""
    if p.api_key is not None and scope not in p.api_key.scopes:
        raise Forbidden(f"this API key lacks the '{scope}' scope", code="missing_scope")


def require_user_session(p: Principal) -> None:
    if p.api_key is not None:
        raise Forbidden(
            "API keys cannot be used here; sign in as a user", code="user_session_required"
        )


def require_admin(p: Principal) -> None:
    require_user_session(p)
    if not p.user.is_admin:
        raise Forbidden("only administrators may do this")


def require_staff_manager(p: Principal) -> None:
    """Admins and librarians (who manage grants and keys for their libraries)."""
    require_user_session(p)
    if Role(p.user.role) not in (Role.admin, Role.librarian):
        raise Forbidden("only administrators and librarians may do this")


def managed_library_ids(session: Session, p: Principal) -> set[int]:
    return {
        lib for lib, perm in library_permissions(session, p).items() if perm == Permission.manage
    }
