"""Database layer on SQLite and PostgreSQL: migrations, users, grants, document life cycle."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlmodel import Session

from core import db
from core.errors import Conflict, ZhikuError
from core.models import DocStatus, Group, GroupMember, Permission, Role
from core.repo import documents, libraries, tokens, users
from core.security import verify_password
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _new(lib_id: int, sha: str = "a" * 64) -> documents.NewDocument:
    return documents.NewDocument(
        library_id=lib_id,
        sha256=sha,
        filename="a.txt",
        folder="f",
        size=3,
        kind="txt",
        media_type="text/plain",
        created_by=None,
    )


def test_migrations_are_idempotent(settings) -> None:  # type: ignore[no-untyped-def]
    db.migrate(settings)
    db.migrate(settings)


def test_users_hash_passwords_and_refuse_duplicates(settings) -> None:  # type: ignore[no-untyped-def]
    with db.session_scope(settings) as s:
        u = users.create_user(s, "alice", "a long passphrase")
        assert u.password_hash != "a long passphrase"
        assert verify_password(u.password_hash, "a long passphrase")
        assert not verify_password(u.password_hash, "wrong")
    with pytest.raises(Conflict), db.session_scope(settings) as s:
        users.create_user(s, "alice", "another passphrase")
    with pytest.raises(ZhikuError), db.session_scope(settings) as s:
        users.create_user(s, "bob", "short")


def test_tokens_expire_and_revoke(settings) -> None:  # type: ignore[no-untyped-def]
    with db.session_scope(settings) as s:
        u = users.create_user(s, "carol", "a long passphrase")
        t = tokens.issue(s, u, ttl_hours=1)
        expired = tokens.issue(s, u, ttl_hours=0)
    with db.session_scope(settings) as s:
        found = tokens.user_for(s, t)
        assert found is not None and found.username == "carol"
        assert tokens.user_for(s, expired) is None
        assert tokens.user_for(s, "zk_forged") is None
        tokens.revoke(s, t)
    with db.session_scope(settings) as s:
        assert tokens.user_for(s, t) is None


def test_permissions_from_user_and_nested_group_grants(settings) -> None:  # type: ignore[no-untyped-def]
    with db.session_scope(settings) as s:
        admin = users.create_user(s, "admin", "a long passphrase", role=Role.admin)
        dana = users.create_user(s, "dana", "a long passphrase")
        lib1 = libraries.create(s, "HR", "", admin.id)
        lib2 = libraries.create(s, "Finance", "", admin.id)
        lib3 = libraries.create(s, "Secret", "", admin.id)
        parent = Group(name="Company")
        s.add(parent)
        s.flush()
        child = Group(name="HR dept", parent_id=parent.id)
        s.add(child)
        s.flush()
        assert child.id is not None and dana.id is not None
        s.add(GroupMember(group_id=child.id, user_id=dana.id))
        libraries.grant(
            s, lib1.id, Permission.read, user_id=dana.id, group_id=None, created_by=None
        )  # type: ignore[arg-type]
        libraries.grant(
            s, lib1.id, Permission.write, user_id=None, group_id=child.id, created_by=None
        )  # type: ignore[arg-type]
        libraries.grant(
            s, lib2.id, Permission.read, user_id=None, group_id=parent.id, created_by=None
        )  # type: ignore[arg-type]
    with db.session_scope(settings) as s:
        perms = libraries.permissions_of(s, dana)
        assert perms == {lib1.id: Permission.write, lib2.id: Permission.read}
        assert lib3.id not in perms
        assert len(libraries.permissions_of(s, admin)) == 3


def test_register_detects_duplicates_and_revives_deleted(settings) -> None:  # type: ignore[no-untyped-def]
    with db.session_scope(settings) as s:
        lib = libraries.create(s, "L", "", None)
        first = documents.register(s, _new(lib.id))  # type: ignore[arg-type]
        assert not first.duplicate and first.document.status == DocStatus.queued
        again = documents.register(s, _new(lib.id))  # type: ignore[arg-type]
        assert again.duplicate and again.document.id == first.document.id
        documents.mark_deleted(s, first.document)
        revived = documents.register(s, _new(lib.id))  # type: ignore[arg-type]
        assert not revived.duplicate and revived.document.id == first.document.id
        assert revived.document.version == 3 and revived.document.status == DocStatus.queued
        doc_id = revived.document.id
    assert doc_id is not None
    with Session(db.get_engine(settings)) as s2:
        assert documents.claim(s2, doc_id, 3, "w", lease_s=60)
        assert documents.fail(s2, doc_id, "w", "corrupt")
    with db.session_scope(settings) as s:
        # Uploading a failed file again is a retry, not a duplicate.
        retried = documents.register(s, _new(lib.id))  # type: ignore[arg-type]
        assert not retried.duplicate and retried.document.version == 4


def test_claims_are_exclusive_and_expire(settings) -> None:  # type: ignore[no-untyped-def]
    with db.session_scope(settings) as s:
        lib = libraries.create(s, "L", "", None)
        doc = documents.register(s, _new(lib.id)).document  # type: ignore[arg-type]
    assert doc.id is not None
    with Session(db.get_engine(settings)) as s:
        assert documents.claim(s, doc.id, doc.version, "w1", lease_s=2)
        assert not documents.claim(s, doc.id, doc.version, "w2", lease_s=2)  # held, alive
        assert not documents.claim(s, doc.id, doc.version + 1, "w2", lease_s=2)  # wrong version
        assert documents.advance(s, doc.id, "w1", status=DocStatus.embedding, progress=0.5)
        time.sleep(2.5)
        assert documents.stalled(s, lease_s=2, requeue_after_s=3600) == [(doc.id, doc.version)]
        assert documents.claim(s, doc.id, doc.version, "w2", lease_s=2)  # w1 presumed dead
        assert not documents.advance(s, doc.id, "w1", progress=0.9)  # w1 lost its claim
        assert documents.fail(s, doc.id, "w2", "bad file")
        assert not documents.claim(s, doc.id, doc.version, "w3", lease_s=0)  # terminal
        got = documents.get(s, doc.id)
        assert got is not None and got.status == DocStatus.failed and got.reason == "bad file"


def test_processes_starting_at_once_on_a_new_database_migrate_it_once(
    database_url: str, tmp_path: Path
) -> None:
    """api replicas and workers started together on an empty database each run the migrations:
    they take turns, and every one of them starts."""
    env = {
        **os.environ,
        "ZHIKU_DATA_DIR": str(tmp_path / "data"),
        "ZHIKU_DATABASE_URL": database_url,
    }
    code = "from core import db; db.migrate()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n---\n".join(outputs)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    try:
        with db.get_engine(settings).connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
        heads = ScriptDirectory.from_config(db.alembic_config(settings)).get_heads()
        assert [v[0] for v in versions] == heads
    finally:
        db.dispose_engines()
