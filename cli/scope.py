"""Which libraries a command-line search or question covers."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from core.errors import ZhikuError
from core.models import User
from core.repo import libraries, users


def library_scope(
    session: Session, names: Sequence[str], as_user: str | None
) -> tuple[list[int], User | None]:
    """The named libraries (all when none are named), narrowed to what `as_user` may read;
    and that user. Unknown names are a 404-style error."""
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
        return libraries.readable_ids(session, user, ids or None), user
    if not ids:
        ids = [lib.id for lib in libraries.list_all(session) if lib.id is not None]
    return ids, None
