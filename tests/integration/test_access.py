"""core.access against a real database: roles, nested departments, API keys, act_as and
grants narrowed to folders and documents."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from core import access, db
from core.access import Principal
from core.errors import Forbidden, NotFound
from core.models import Document, Group, GroupMember, Permission, Role, User
from core.repo import api_keys, libraries, scope_grants, users

pytestmark = pytest.mark.integration
PW = "a long passphrase"


def _doc(s: Session, lib: int, name: str, folder: str = "") -> int:
    doc = Document(library_id=lib, sha256=name.ljust(64, "0")[:64], filename=name, folder=folder)
    s.add(doc)
    s.flush()
    assert doc.id is not None
    return doc.id


def _world(s: Session) -> dict[str, int | User]:
    admin = users.create_user(s, "admin", PW, role=Role.admin)
    company = Group(name="Company")
    s.add(company)
    s.flush()
    hr = Group(name="HR", parent_id=company.id)
    s.add(hr)
    s.flush()
    staff = users.create_user(s, "sam", PW)
    hr_staff = users.create_user(s, "hana", PW)
    librarian = users.create_user(s, "lee", PW, role=Role.librarian)
    s.add(GroupMember(group_id=company.id, user_id=staff.id))  # type: ignore[arg-type]
    s.add(GroupMember(group_id=hr.id, user_id=hr_staff.id))  # type: ignore[arg-type]
    lib = libraries.create(s, "Company wiki", "", admin.id)
    other = libraries.create(s, "Board", "", admin.id)
    assert lib.id is not None and other.id is not None
    # The whole company reads the wiki (HR is a sub-department of Company).
    libraries.grant(
        s, lib.id, Permission.write, user_id=None, group_id=company.id, created_by=admin.id
    )
    libraries.grant(
        s, lib.id, Permission.manage, user_id=librarian.id, group_id=None, created_by=admin.id
    )
    ids = {
        "public": _doc(s, lib.id, "handbook.md"),
        "hr_policy": _doc(s, lib.id, "policy.md", "HR"),
        "salaries": _doc(s, lib.id, "pay.xlsx", "HR/Pay"),
        "memo": _doc(s, lib.id, "memo.md", "Ops"),
        "board": _doc(s, other.id, "minutes.md"),
    }
    return {
        **ids,
        "lib": lib.id,
        "other": other.id,
        "hr": hr.id or 0,
        "admin": admin,
        "staff": staff,
        "hr_staff": hr_staff,
        "librarian": librarian,
    }


def _visible(s: Session, p: Principal, lib: int, docs: list[int]) -> set[int]:
    narrowed = access.document_filters(s, p, [lib]).get(lib)
    return {d for d in docs if narrowed is None or narrowed.permits(d)}


def test_roles_and_nested_departments(settings) -> None:  # type: ignore[no-untyped-def]
    db.migrate(settings)
    with db.session_scope(settings) as s:
        w = _world(s)
        lib, other = w["lib"], w["other"]
        assert isinstance(lib, int) and isinstance(other, int)
        staff = Principal(user=w["staff"])  # type: ignore[arg-type]
        hr = Principal(user=w["hr_staff"])  # type: ignore[arg-type]
        # The grant to Company reaches HR's members; staff are capped at read.
        assert access.library_permissions(s, staff) == {lib: Permission.read}
        assert access.library_permissions(s, hr) == {lib: Permission.read}
        with pytest.raises(Forbidden):
            access.require_library(s, staff, lib, Permission.write)
        with pytest.raises(NotFound):
            access.require_library(s, staff, other)
        lib_p = Principal(user=w["librarian"])  # type: ignore[arg-type]
        assert access.library_permissions(s, lib_p) == {lib: Permission.manage}
        admin = Principal(user=w["admin"])  # type: ignore[arg-type]
        assert set(access.library_permissions(s, admin)) == {lib, other}
        # Disabled users hold nothing.
        w["staff"].is_active = False  # type: ignore[union-attr]
        assert access.library_permissions(s, staff) == {}


def test_folder_and_document_grants_restrict_inside_a_library(settings) -> None:  # type: ignore[no-untyped-def]
    db.migrate(settings)
    with db.session_scope(settings) as s:
        w = _world(s)
        lib = w["lib"]
        assert isinstance(lib, int)
        docs = [w[k] for k in ("public", "hr_policy", "salaries", "memo")]
        staff = Principal(user=w["staff"])  # type: ignore[arg-type]
        hr = Principal(user=w["hr_staff"])  # type: ignore[arg-type]
        librarian = Principal(user=w["librarian"])  # type: ignore[arg-type]
        assert _visible(s, staff, lib, docs) == set(docs)  # type: ignore[arg-type]
        # HR's folder becomes HR's only.
        scope_grants.create(s, lib, folder="/HR/", user_id=None, group_id=w["hr"], created_by=None)  # type: ignore[arg-type]
        assert _visible(s, staff, lib, docs) == {w["public"], w["memo"]}  # type: ignore[arg-type]
        assert _visible(s, hr, lib, docs) == set(docs)  # type: ignore[arg-type]
        assert _visible(s, librarian, lib, docs) == set(docs)  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            access.require_document(s, staff, w["hr_policy"])  # type: ignore[arg-type]
        # The innermost restricted scope decides: pay is for one person only.
        sam = w["staff"]
        grant = scope_grants.create(
            s,
            lib,
            folder="HR/Pay",
            user_id=sam.id,
            group_id=None,
            created_by=None,  # type: ignore[union-attr]
        )
        assert _visible(s, hr, lib, docs) == {w["public"], w["hr_policy"], w["memo"]}  # type: ignore[arg-type]
        assert _visible(s, staff, lib, docs) == {w["public"], w["memo"], w["salaries"]}  # type: ignore[arg-type]
        scope_grants.delete(s, grant)
        # A single document can be restricted too.
        scope_grants.create(
            s,
            lib,
            document_id=w["memo"],
            user_id=w["hr_staff"].id,
            group_id=None,
            created_by=None,  # type: ignore[arg-type,union-attr]
        )
        assert _visible(s, staff, lib, docs) == {w["public"]}  # type: ignore[arg-type]
        # Someone with only a narrowed grant sees that part of a library and nothing else.
        outsider = users.create_user(s, "olga", PW)
        board = w["other"]
        assert isinstance(board, int)
        scope_grants.create(
            s,
            board,
            document_id=w["board"],
            user_id=outsider.id,
            group_id=None,
            created_by=None,  # type: ignore[arg-type]
        )
        out = Principal(user=outsider)
        assert access.library_permissions(s, out) == {board: Permission.read}
        assert _visible(s, out, board, [w["board"]]) == {w["board"]}  # type: ignore[list-item]
        with pytest.raises(NotFound):
            scope_grants.create(
                s,
                lib,
                document_id=w["board"],
                user_id=outsider.id,
                group_id=None,
                created_by=None,  # type: ignore[arg-type]
            )


def test_api_keys_and_act_as_intersect(settings) -> None:  # type: ignore[no-untyped-def]
    db.migrate(settings)
    with db.session_scope(settings) as s:
        w = _world(s)
        lib, other = w["lib"], w["other"]
        admin = w["admin"]
        assert isinstance(admin, User) and isinstance(lib, int) and isinstance(other, int)
        key, _ = api_keys.create(s, admin, "OA", ["search", "chat", "act_as"], [lib])
        as_key = Principal(user=admin, api_key=key)
        # The key reads only its library, and never more than read without `ingest`.
        assert access.library_permissions(s, as_key) == {lib: Permission.read}
        assert not as_key.is_admin
        with pytest.raises(Forbidden):
            access.require_admin(as_key)
        with pytest.raises(Forbidden):
            access.require_scope(as_key, "ingest")
        # Acting for a user: the intersection of the key's scope and the user's grants.
        hr = Principal(user=w["hr_staff"], api_key=key, key_owner=admin)  # type: ignore[arg-type]
        assert access.library_permissions(s, hr) == {lib: Permission.read}
        libraries.grant(
            s,
            other,
            Permission.read,
            user_id=w["hr_staff"].id,
            group_id=None,
            created_by=None,  # type: ignore[union-attr]
        )
        assert access.library_permissions(s, hr) == {lib: Permission.read}  # key lacks Board
        outsider = users.create_user(s, "olga", PW)
        assert access.library_permissions(s, Principal(outsider, key, admin)) == {}
        scope_grants.create(s, lib, folder="HR", user_id=None, group_id=w["hr"], created_by=None)  # type: ignore[arg-type]
        staff_via_key = Principal(user=w["staff"], api_key=key, key_owner=admin)  # type: ignore[arg-type]
        docs = [w[k] for k in ("public", "hr_policy", "salaries", "memo")]
        assert _visible(s, staff_via_key, lib, docs) == {w["public"], w["memo"]}  # type: ignore[arg-type]
        fields = staff_via_key.audit_fields()
        assert fields["actor_user_id"] == w["staff"].id  # type: ignore[union-attr]
        assert fields["actor_api_key_id"] == key.id and fields["key_owner_id"] == admin.id
