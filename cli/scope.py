"""Which libraries (and, for a user, which of their documents) a command-line search or
question covers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlmodel import Session

from core import access
from core.errors import ZhikuError
from core.models import User
from core.repo import libraries, users
from core.types import DocFilter


@dataclass
class Scope:
    library_ids: list[int]
    user: User | None = None
    filters: dict[int, DocFilter] = field(default_factory=dict)


def library_scope(session: Session, names: Sequence[str], as_user: str | None) -> Scope:
    """The named libraries (all when none are named); with `as_user`, narrowed to what that
    user may read, as the API would. Unknown names are a 404-style error."""
    ids: list[int] = []
    for name in names:
        lib = libraries.get_by_name(session, name)
        if lib is None or lib.id is None:
            raise ZhikuError(f"no library named {name!r}", status=404)
        ids.append(lib.id)
    if as_user is not None:
        user = users.get_by_username(session, as_user)
        if user is None:
            raise ZhikuError(f"no user named {as_user!r}", status=404)
        principal = access.Principal(user=user)
        readable = access.readable_library_ids(session, principal, ids or None)
        return Scope(readable, user, access.document_filters(session, principal, readable))
    if not ids:
        ids = [lib.id for lib in libraries.list_all(session) if lib.id is not None]
    return Scope(ids)
