"""REST API against a real database (SQLite and PostgreSQL) and real Redis."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from fastapi.testclient import TestClient

from core import db
from core.models import DocStatus
from core.repo import documents
from core.storage import OriginalStore
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration


def _library(client: TestClient, admin: str, name: str = "Handbook") -> int:
    r = client.post(f"{V1}/libraries", json={"name": name, "description": "d"}, headers=auth(admin))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _upload(client: TestClient, token: str, lib: int, *files: tuple[str, bytes]):  # type: ignore[no-untyped-def]
    return client.post(
        f"{V1}/libraries/{lib}/documents",
        files=[("files", (name, data)) for name, data in files],
        headers=auth(token),
    )


def test_every_endpoint_requires_a_user(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        if not path.startswith(V1) or path in (f"{V1}/auth/login", f"{V1}/auth/session"):
            continue
        for method in ops:
            url = re.sub(r"\{[^}]+\}", "1", path)
            r = app_client.request(method.upper(), url)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.json()["error"]["code"] == "unauthorized"


def test_login_wrong_password_and_logout(app_client: TestClient, admin_token: str) -> None:
    r = app_client.post(f"{V1}/auth/login", json={"username": "root-admin", "password": "nope"})
    assert r.status_code == 401
    assert app_client.get(f"{V1}/auth/me", headers=auth(admin_token)).json()["is_admin"]
    assert app_client.post(f"{V1}/auth/logout", headers=auth(admin_token)).status_code == 204
    assert app_client.get(f"{V1}/auth/me", headers=auth(admin_token)).status_code == 401


def test_only_admins_create_users_and_libraries(app_client: TestClient, admin_token: str) -> None:
    _, staff = create_user(app_client, admin_token, "staff1")
    r = app_client.post(
        f"{V1}/users", json={"username": "x", "password": "a long passphrase"}, headers=auth(staff)
    )
    assert r.status_code == 403
    r = app_client.post(f"{V1}/libraries", json={"name": "Mine"}, headers=auth(staff))
    assert r.status_code == 403


def test_grants_decide_visibility_and_upload_rights(
    app_client: TestClient, admin_token: str
) -> None:
    lib = _library(app_client, admin_token)
    reader_id, reader = create_user(app_client, admin_token, "reader")
    writer_id, writer = create_user(app_client, admin_token, "writer", role="librarian")
    # Without a grant the library does not exist for them (404, not 403).
    assert app_client.get(f"{V1}/libraries", headers=auth(reader)).json() == []
    assert app_client.get(f"{V1}/libraries/{lib}", headers=auth(reader)).status_code == 404
    assert _upload(app_client, reader, lib, ("a.txt", b"hello")).status_code == 404
    for uid, perm in ((reader_id, "read"), (writer_id, "write")):
        r = app_client.post(
            f"{V1}/libraries/{lib}/grants",
            json={"user_id": uid, "permission": perm},
            headers=auth(admin_token),
        )
        assert r.status_code == 201, r.text
    listed = app_client.get(f"{V1}/libraries", headers=auth(reader)).json()
    assert [(x["id"], x["permission"]) for x in listed] == [(lib, "read")]
    r = _upload(app_client, reader, lib, ("a.txt", b"hello"))
    assert r.status_code == 403 and "write" in r.json()["error"]["message"]
    assert _upload(app_client, writer, lib, ("a.txt", b"hello world")).status_code == 202
    # A writer may not grant; a grant needs exactly one principal.
    r = app_client.post(
        f"{V1}/libraries/{lib}/grants",
        json={"user_id": reader_id, "permission": "manage"},
        headers=auth(writer),
    )
    assert r.status_code == 403
    r = app_client.post(
        f"{V1}/libraries/{lib}/grants", json={"permission": "read"}, headers=auth(admin_token)
    )
    assert r.status_code == 422


def test_upload_commits_row_and_original_before_202(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    lib = _library(app_client, admin_token)
    r = _upload(
        app_client,
        admin_token,
        lib,
        ("报告.md", "# 标题\n\n正文内容。".encode()),
        ("notes.txt", b"plain notes"),
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["queued"] == 2 and body["rejected"] == 0
    assert {i["file"] for i in body["items"]} == {"报告.md", "notes.txt"}
    store = OriginalStore(settings.originals_dir)
    with db.session_scope(settings) as s:
        for item in body["items"]:
            doc = documents.get(s, item["document_id"])
            assert doc is not None and doc.status == DocStatus.queued
            assert store.exists(doc.sha256) and doc.size > 0
    # The same content again is reported, not ingested twice.
    r = _upload(app_client, admin_token, lib, ("copy.txt", b"plain notes"))
    assert r.status_code == 202
    assert r.json()["duplicates"] == 1 and r.json()["queued"] == 0
    assert "already in this library" in r.json()["items"][0]["reason"]
    listed = app_client.get(f"{V1}/libraries/{lib}/documents", headers=auth(admin_token)).json()
    assert listed["total"] == 2


def test_bad_single_files_get_clear_4xx(app_client: TestClient, admin_token: str) -> None:
    lib = _library(app_client, admin_token)
    r = _upload(app_client, admin_token, lib, ("empty.txt", b""))
    assert r.status_code == 422 and "empty" in r.json()["error"]["message"]
    r = _upload(app_client, admin_token, lib, ("tool.exe", b"MZ\x90\x00" + b"\x00" * 200))
    assert r.status_code == 422 and "not a supported" in r.json()["error"]["message"]
    r = app_client.post(
        f"{V1}/libraries/{lib}/documents", data={"x": "y"}, headers=auth(admin_token)
    )
    assert r.status_code in (415, 422)


def test_batch_reports_bad_files_and_keeps_the_rest(
    app_client: TestClient, admin_token: str
) -> None:
    lib = _library(app_client, admin_token)
    r = _upload(
        app_client,
        admin_token,
        lib,
        ("good.txt", b"good content"),
        ("empty.txt", b""),
        ("bin.exe", b"MZ\x90\x00" + b"\x00" * 100),
    )
    assert r.status_code == 202
    statuses = {i["file"]: i["status"] for i in r.json()["items"]}
    assert statuses == {"good.txt": "queued", "empty.txt": "rejected", "bin.exe": "rejected"}


def test_file_over_the_limit_is_refused_with_413_before_it_is_read(
    settings, admin_token: str
) -> None:  # type: ignore[no-untyped-def]
    from api.app import create_app

    small = settings.model_copy(update={"max_upload_bytes": 1024})
    with TestClient(create_app(small)) as client:
        lib = _library(client, admin_token)
        r = _upload(client, admin_token, lib, ("big.txt", b"x" * 5000))
        assert r.status_code == 413
        assert "limit" in r.json()["error"]["message"]
        tmp_left = list(small.tmp_dir.glob("upload-*"))
        assert tmp_left == []


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_zipped_folder_keeps_one_folder_level(app_client: TestClient, admin_token: str) -> None:
    """`wiki.zip` made by zipping the folder `wiki` holds `wiki/…`: its documents go to
    `wiki/…`, not `wiki/wiki/…`; an archive whose members are not all in one folder of its
    own name keeps the archive's name as the top folder."""
    lib = _library(app_client, admin_token)

    def upload(name: str, members: dict[str, str]) -> set[str]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for member, text in members.items():
                zf.writestr(member, text)
        r = _upload(app_client, admin_token, lib, (name, buf.getvalue()))
        assert r.status_code == 202, r.text
        return {i["file"] for i in r.json()["items"] if i["status"] == "queued"}

    assert upload(
        "wiki.zip", {"wiki/it/a.md": "# A\n\nPrinters.", "wiki/b.md": "# B\n\nWi-Fi."}
    ) == {
        "wiki/it/a.md",
        "wiki/b.md",
    }
    assert upload("notes.zip", {"notes/c.md": "# C\n\nOne.", "other/d.md": "# D\n\nTwo."}) == {
        "notes/notes/c.md",
        "notes/other/d.md",
    }


def test_zip_keeps_folders_and_refuses_unsafe_entries(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    lib = _library(app_client, admin_token)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hr/policies/leave.md", "# Leave\n\nTwenty days a year.")
        zf.writestr("财务/报销.txt", "报销流程：先填单。".encode())
        zf.writestr("../escape.txt", "nope")
        zf.writestr("/abs/path.txt", "nope")
        link = zipfile.ZipInfo("hr/link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    r = _upload(app_client, admin_token, lib, ("company.zip", buf.getvalue()))
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    queued = {i["file"] for i in items if i["status"] == "queued"}
    assert queued == {"company/hr/policies/leave.md", "company/财务/报销.txt"}
    rejected = [i for i in items if i["status"] == "rejected"]
    assert len(rejected) == 3 and all(i["reason"] for i in rejected)
    with db.session_scope(settings) as s:
        docs, _ = documents.list_for_library(s, lib)
        assert {(d.folder, d.filename) for d in docs} == {
            ("company/hr/policies", "leave.md"),
            ("company/财务", "报销.txt"),
        }
    assert not (settings.data_dir.parent / "escape.txt").exists()


def test_zip_bomb_is_refused(app_client: TestClient, admin_token: str) -> None:
    lib = _library(app_client, admin_token)
    bomb = _zip({"zeros.txt": b"0" * (50 * 1024 * 1024)})  # ratio ≈ 1000:1
    r = _upload(app_client, admin_token, lib, ("bomb.zip", bomb))
    assert r.status_code == 422
    assert "zip bomb" in r.json()["error"]["message"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_zip_with_5000_files(app_client: TestClient, admin_token: str, settings) -> None:  # type: ignore[no-untyped-def]
    lib = _library(app_client, admin_token)
    entries = {
        f"d{i // 500}/note-{i}.txt": f"note number {i} about topic {i % 37}".encode()
        for i in range(5000)
    }
    r = _upload(app_client, admin_token, lib, ("many.zip", _zip(entries)))
    assert r.status_code == 202, r.text
    assert r.json()["queued"] == 5000
    with db.session_scope(settings) as s:
        assert documents.counts_by_status(s, lib) == {"queued": 5000}
        # Don't leave 5,000 jobs for the shared worker of later tests.
        docs, _ = documents.list_for_library(s, lib, limit=5000)
        for d in docs:
            documents.mark_deleted(s, d)


def test_extension_that_lies_is_read_as_what_it_is(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    lib = _library(app_client, admin_token)
    r = _upload(
        app_client, admin_token, lib, ("report.pdf", b"# Real markdown\n\nNot a PDF at all.\n")
    )
    assert r.status_code == 202, r.text
    doc_id = r.json()["items"][0]["document_id"]
    doc = app_client.get(f"{V1}/documents/{doc_id}", headers=auth(admin_token)).json()
    assert doc["kind"] in ("md", "txt") and doc["filename"] == "report.pdf"


def test_reingest_makes_a_new_version_and_requires_write(
    app_client: TestClient, admin_token: str
) -> None:
    lib = _library(app_client, admin_token)
    doc_id = _upload(app_client, admin_token, lib, ("a.txt", b"some text")).json()["items"][0][
        "document_id"
    ]
    reader_id, reader = create_user(app_client, admin_token, "reader2")
    app_client.post(
        f"{V1}/libraries/{lib}/grants",
        json={"user_id": reader_id, "permission": "read"},
        headers=auth(admin_token),
    )
    assert (
        app_client.post(f"{V1}/documents/{doc_id}/reingest", headers=auth(reader)).status_code
        == 403
    )
    assert app_client.delete(f"{V1}/documents/{doc_id}", headers=auth(reader)).status_code == 403
    r = app_client.post(f"{V1}/documents/{doc_id}/reingest", headers=auth(admin_token))
    assert r.status_code == 202
    assert r.json()["version"] == 2 and r.json()["status"] == "queued"
    # Another user without any grant cannot even learn that the document exists.
    _, stranger = create_user(app_client, admin_token, "stranger")
    assert app_client.get(f"{V1}/documents/{doc_id}", headers=auth(stranger)).status_code == 404
    assert (
        app_client.get(f"{V1}/documents/{doc_id}/chunks", headers=auth(stranger)).status_code == 404
    )
