"""Managing libraries and reading documents the way the web UI does: renaming and describing a
library, turning downloads of originals on and off, downloading, deleting a whole library,
page images of PDFs, chunks of one page, finding documents by name, renaming conversations.

Real app, real database (SQLite and PostgreSQL), Redis, ingestion pipeline, retriever and
poppler. The documents are ingested once per backend (module scope); cases that change
something undo it or work on resources of their own.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import col, select

from api.app import create_app
from core import db
from core.models import (
    ApiKey,
    AuditEvent,
    Chunk,
    Document,
    Library,
    LibraryGrant,
    Role,
    ScopeGrant,
)
from core.repo import conversations, users
from core.settings import Settings
from core.storage import OriginalStore
from retrieval.index_store import library_dir
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.integration.api_helpers import PASSWORD, V1, auth
from tests.pdf_maker import Page, make_pdf, png_size
from workers import pipeline
from workers.batch import run_inline
from workers.embedding import ingestion_embedder
from workers.indexing import sync_library_index
from workers.pipeline import Outcome, ingest_document

pytestmark = pytest.mark.integration

ADMIN, ADMIN_PASSWORD = "root-admin", "correct horse battery"
DEAD_MODEL = "http://127.0.0.1:9/v1"
MARK = "QUOKKA-3141"  # in every text document of the main library
CHINESE_NAME = "股东会-会议通知.txt"
PAGE_1 = [f"Alpha page one line {i} about apples and orchards near the river." for i in range(40)]
PAGE_3 = [f"Gamma page three line {i} about zebras and the open savanna plains." for i in range(40)]
# page 1: A4-ish, text; page 2: small and black; page 3: text over a black lower half
PDF = make_pdf(
    [
        Page(lines=PAGE_1),
        Page(width=300, height=200, box=(0, 0, 300, 200), lines=["Beta page two"]),
        Page(lines=PAGE_3, box=(0, 0, 612, 396)),
    ]
)
TEXTS = {
    "pdf": ("manual.pdf", PDF),
    "chinese": (CHINESE_NAME, f"股东会会议通知：会议定于三月召开。{MARK}\n".encode()),
    "pct": ("fin/rate_50%.txt", f"Interest at fifty percent. {MARK}\n".encode()),
    "wild": ("fin/rateX50Y.txt", f"Interest rates, another note. {MARK}\n".encode()),
    "title": (
        "notes.md",
        f"# Quarterly Zebra Report\n\nThe zebra count rose this quarter. {MARK}\n".encode(),
    ),
}


@dataclass
class Lab:
    client: TestClient
    settings: Settings
    backend: str
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    lib: int = 0
    docs: dict[str, int] = field(default_factory=dict)
    key_id: int = 0
    seq: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))

    def call(self, method: str, path: str, who: str = "admin", **kw: Any) -> Any:
        return self.client.request(method, path, headers=self.headers[who], **kw)

    def ok(self, method: str, path: str, who: str = "admin", status: int = 200, **kw: Any) -> Any:
        r = self.call(method, path, who, **kw)
        assert r.status_code == status, (method, path, who, r.status_code, r.text)
        return r.json() if r.content and status != 204 else None

    def n(self) -> int:
        return next(self.seq)

    def new_library(self, name: str | None = None) -> int:
        body = {"name": name or f"lab-{self.n()}"}
        return int(self.ok("POST", f"{V1}/libraries", json=body, status=201)["id"])

    def upload(self, lib: int, files: list[tuple[str, bytes]]) -> list[int]:
        report = self.ok(
            "POST",
            f"{V1}/libraries/{lib}/documents",
            files=[("files", f) for f in files],
            status=202,
        )
        assert report["queued"] == len(files), report
        return [int(item["document_id"]) for item in report["items"]]

    def ingest(self, lib: int, doc_ids: list[int]) -> None:
        results = run_inline(self.settings, lib, [(d, self.version(d)) for d in doc_ids])
        assert all(r.outcome is Outcome.ready for r in results), results

    def version(self, doc_id: int) -> int:
        return int(self.ok("GET", f"{V1}/documents/{doc_id}")["version"])

    def search(self, query: str, who: str = "admin", **body: Any) -> Any:
        return self.ok("POST", f"{V1}/search", who, json={"query": query, "top_k": 20, **body})

    def audit(self, action: str) -> list[AuditEvent]:
        with db.session_scope(self.settings) as s:
            return list(
                s.exec(
                    select(AuditEvent)
                    .where(AuditEvent.action == action)
                    .order_by(col(AuditEvent.id))
                )
            )


def _login(client: TestClient, name: str, password: str) -> dict[str, str]:
    r = client.post(f"{V1}/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    return auth(r.json()["access_token"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lab(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"lab-{backend}")
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'zhiku.db'}"
    else:
        pg_name, url = _create_pg_database()
    try:
        settings = Settings(
            data_dir=tmp / "data",
            database_url=url,
            redis_url=redis_url,
            rate_limit_per_minute=1_000_000,
            rate_limit_chat_per_minute=1_000_000,
            main_base_urls=DEAD_MODEL,
            main_model="zhiku-main",
            safety_backend="off",
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db.migrate(settings)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield _build(Lab(client, settings, backend))
    finally:
        db.dispose_engines()
        if pg_name is not None:
            _drop_pg_database(pg_name)


def _build(lab: Lab) -> Lab:
    with db.session_scope(lab.settings) as session:
        users.create_user(session, ADMIN, ADMIN_PASSWORD, role=Role.admin)
    lab.headers["admin"] = _login(lab.client, ADMIN, ADMIN_PASSWORD)
    for who, role in (("librarian", "librarian"), ("staff", "staff"), ("outsider", "staff")):
        body = {"username": who, "password": PASSWORD, "role": role, "must_change_password": False}
        lab.user_ids[who] = int(lab.ok("POST", f"{V1}/users", json=body, status=201)["id"])
        lab.headers[who] = _login(lab.client, who, PASSWORD)
    lab.lib = lab.new_library("Main handbook")
    for who, perm in (("librarian", "manage"), ("staff", "read")):
        body = {"user_id": lab.user_ids[who], "permission": perm}
        lab.ok("POST", f"{V1}/libraries/{lab.lib}/grants", json=body, status=201)
    body = {"name": "reader key", "scopes": ["search", "chat"], "library_ids": [lab.lib]}
    created = lab.ok("POST", f"{V1}/api-keys", json=body, status=201)
    lab.key_id = int(created["id"])
    lab.headers["key"] = auth(created["key"])
    ids = lab.upload(lab.lib, list(TEXTS.values()))
    lab.docs = dict(zip(TEXTS, ids, strict=True))
    lab.ingest(lab.lib, ids)
    return lab


# --- PATCH /libraries/{id} -------------------------------------------------------------------


def test_rename_and_describe_a_library(lab: Lab) -> None:
    path = f"{V1}/libraries/{lab.lib}"
    other = lab.new_library(f"Other {lab.n()}")
    try:
        out = lab.ok("PATCH", path, "librarian", json={"name": "  Renamed 手册  "})
        assert out["name"] == "Renamed 手册" and out["permission"] == "manage"
        assert out["allow_download"] is True and out["documents"]["ready"] == len(TEXTS)
        assert lab.ok("GET", path, "staff")["name"] == "Renamed 手册"
        out = lab.ok("PATCH", path, "librarian", json={"description": "What staff need"})
        assert (out["name"], out["description"]) == ("Renamed 手册", "What staff need")

        event = lab.audit("library.update")[-1]
        assert event.actor_user_id == lab.user_ids["librarian"]
        assert event.target_id == str(lab.lib)
        assert event.detail["changes"] == {"description": {"from": "", "to": "What staff need"}}
        first = lab.audit("library.update")[-2]
        assert first.detail["changes"] == {"name": {"from": "Main handbook", "to": "Renamed 手册"}}

        # Another library's name: 409, and nothing changes.
        taken = lab.ok("GET", f"{V1}/libraries/{other}")["name"]
        r = lab.call("PATCH", path, "librarian", json={"name": taken, "description": "x"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conflict"
        assert "already exists" in r.json()["error"]["message"] and taken in r.text
        assert lab.ok("GET", path)["description"] == "What staff need"
        r = lab.call("PATCH", f"{V1}/libraries/{other}", json={"name": "Renamed 手册"})
        assert r.status_code == 409

        # Its own name again is no conflict (and no change, so no audit event).
        before = len(lab.audit("library.update"))
        assert lab.ok("PATCH", path, json={"name": "Renamed 手册"})["name"] == "Renamed 手册"
        assert len(lab.audit("library.update")) == before

        # Nothing to change, or a blank name: 422.
        for body in ({}, {"name": None}, {"name": "   "}, {"name": "x" * 201}):
            r = lab.call("PATCH", path, json=body)
            assert r.status_code == 422, (body, r.text)

        # Only its managers: staff may read it (403), others do not see it (404), keys never.
        for who, status in (("staff", 403), ("outsider", 404), ("key", 403)):
            r = lab.call("PATCH", path, who, json={"name": f"taken over {who}"})
            assert r.status_code == status, (who, r.text)
        assert lab.ok("GET", path)["name"] == "Renamed 手册"
    finally:
        lab.ok("PATCH", path, json={"name": "Main handbook", "description": ""})
        lab.ok("DELETE", f"{V1}/libraries/{other}", status=204)


# --- downloads -------------------------------------------------------------------------------


def test_download_the_original_with_a_chinese_file_name(lab: Lab) -> None:
    doc = lab.docs["chinese"]
    for who in ("staff", "librarian", "admin", "key"):
        r = lab.call("GET", f"{V1}/documents/{doc}/file", who)
        assert r.status_code == 200, (who, r.text)
        assert r.content == TEXTS["chinese"][1]
        assert r.headers["content-type"].startswith("text/plain")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-disposition"] == (
            f"attachment; filename=\"document-{doc}.txt\"; filename*=UTF-8''"
            + quote(CHINESE_NAME, safe="")
        )
        assert "%E8%82%A1%E4%B8%9C%E4%BC%9A" in r.headers["content-disposition"]  # 股东会
    pdf = lab.call("GET", f"{V1}/documents/{lab.docs['pdf']}/file", "staff")
    assert pdf.content == PDF and pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["content-disposition"] == (
        "attachment; filename=\"manual.pdf\"; filename*=UTF-8''manual.pdf"
    )
    pct = lab.call("GET", f"{V1}/documents/{lab.docs['pct']}/file", "staff")
    assert "filename*=UTF-8''rate_50%25.txt" in pct.headers["content-disposition"]

    events = [e for e in lab.audit("document.download") if e.target_id == str(doc)]
    admin = _admin_id(lab)  # also the key's owner
    assert [(e.actor_user_id, e.actor_api_key_id) for e in events] == [
        (lab.user_ids["staff"], None),
        (lab.user_ids["librarian"], None),
        (admin, None),
        (admin, lab.key_id),
    ]
    assert events[0].detail["filename"] == CHINESE_NAME
    assert events[0].detail["library_id"] == lab.lib

    # A document one may not read stays a missing one.
    hidden = lab.call("GET", f"{V1}/documents/{doc}/file", "outsider")
    missing = lab.call("GET", f"{V1}/documents/987654321/file", "outsider")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace(str(doc), "ID") == missing.text.replace("987654321", "ID")


def test_turning_downloads_off_leaves_them_to_the_managers(lab: Lab) -> None:
    path = f"{V1}/libraries/{lab.lib}"
    doc = lab.docs["pdf"]
    out = lab.ok("PATCH", path, "librarian", json={"allow_download": False})
    try:
        assert out["allow_download"] is False
        assert lab.ok("GET", path, "staff")["allow_download"] is False
        event = lab.audit("library.update")[-1]
        assert event.detail["changes"] == {"allow_download": {"from": True, "to": False}}
        for who in ("staff", "key"):
            r = lab.call("GET", f"{V1}/documents/{doc}/file", who)
            assert r.status_code == 403, (who, r.text)
            error = r.json()["error"]
            assert error["code"] == "downloads_disabled"
            assert "downloads are turned off for this library" in error["message"]
            assert PDF[:8] not in r.content
        for who in ("librarian", "admin"):
            r = lab.call("GET", f"{V1}/documents/{doc}/file", who)
            assert r.status_code == 200 and r.content == PDF, who
        # Still 404 for those who may not read it: no hint that it exists.
        assert lab.call("GET", f"{V1}/documents/{doc}/file", "outsider").status_code == 404
        # Reading it stays allowed: its chunks and page images are its text.
        assert lab.ok("GET", f"{V1}/documents/{doc}/chunks", "staff")
        assert lab.call("GET", f"{V1}/documents/{doc}/pages/1", "staff").status_code == 200
    finally:
        lab.ok("PATCH", path, "librarian", json={"allow_download": True})
    r = lab.call("GET", f"{V1}/documents/{doc}/file", "staff")
    assert r.status_code == 200 and r.content == PDF


# --- page images and the chunks of a page ----------------------------------------------------


def _dark_share(png: bytes, box: tuple[float, float, float, float]) -> float:
    """Share of dark pixels in the part `box` (fractions left, top, right, bottom)."""
    img = Image.open(io.BytesIO(png)).convert("L")
    w, h = img.size
    part = img.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    hist = part.histogram()
    return sum(hist[:64]) / max(1, sum(hist))


def test_page_images_are_the_right_pages_of_the_pdf(lab: Lab) -> None:
    doc = lab.docs["pdf"]
    meta = lab.ok("GET", f"{V1}/documents/{doc}")
    assert (meta["kind"], meta["status"], meta["page_count"]) == ("pdf", "ready", 3)
    images = {}
    for page in (1, 2, 3):
        r = lab.call("GET", f"{V1}/documents/{doc}/pages/{page}", "staff")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "private, max-age=3600"
        assert r.headers["x-content-type-options"] == "nosniff"
        images[page] = r.content
    # 110 dpi: a 612 x 792 pt page is 935 x 1210 px; page 2 is 300 x 200 pt.
    assert png_size(images[1]) == (935, 1210)
    w, h = png_size(images[2])
    assert abs(w - 458) <= 1 and abs(h - 306) <= 1
    assert png_size(images[3]) == (935, 1210)
    assert _dark_share(images[2], (0, 0, 1, 1)) > 0.9  # all black
    assert _dark_share(images[1], (0, 0.55, 1, 1)) < 0.05  # text on white
    assert _dark_share(images[3], (0, 0.55, 1, 1)) > 0.9  # the black lower half

    # Cached by document, version and page; served from the cache the next time.
    cached = lab.settings.page_cache_dir / str(doc) / f"{meta['version']}-2.png"
    assert cached.read_bytes() == images[2]
    cached.write_bytes(images[1])  # the cache answers, not the renderer
    again = lab.call("GET", f"{V1}/documents/{doc}/pages/2", "key")
    assert again.status_code == 200 and again.content == images[1]
    cached.write_bytes(images[2])

    # Out of range, not a PDF, not readable.
    r = lab.call("GET", f"{V1}/documents/{doc}/pages/4", "staff")
    assert r.status_code == 404 and r.json()["error"]["code"] == "page_out_of_range"
    assert "page 4 is out of range" in r.json()["error"]["message"]
    assert "3 pages" in r.json()["error"]["message"]
    assert lab.call("GET", f"{V1}/documents/{doc}/pages/0", "staff").status_code == 422
    r = lab.call("GET", f"{V1}/documents/{lab.docs['chinese']}/pages/1", "staff")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_a_pdf"
    assert "not a PDF" in r.json()["error"]["message"]
    hidden = lab.call("GET", f"{V1}/documents/{doc}/pages/1", "outsider")
    missing = lab.call("GET", f"{V1}/documents/987654321/pages/1", "outsider")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text.replace(str(doc), "ID") == missing.text.replace("987654321", "ID")


def test_a_missing_original_is_a_clear_404(lab: Lab) -> None:
    """An original gone from storage (a disk restored without them): the download and an
    uncached page say so, instead of failing."""
    pdf = make_pdf([Page(lines=["Lost original, page one."]), Page(lines=["Page two."])])
    lib = lab.new_library()  # its own: the shared library's listings stay as they are
    (doc,) = lab.upload(lib, [(f"lost-{lab.n()}.pdf", pdf)])
    lab.ingest(lib, [doc])
    sha = lab.ok("GET", f"{V1}/documents/{doc}")["sha256"]
    stored = OriginalStore(lab.settings.originals_dir).path_for(sha)
    saved = stored.read_bytes()
    stored.unlink()
    try:
        for path in (f"{V1}/documents/{doc}/file", f"{V1}/documents/{doc}/pages/2"):
            r = lab.call("GET", path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "original_missing", r.text
            assert "missing from storage" in r.json()["error"]["message"]
    finally:
        stored.write_bytes(saved)
    assert lab.call("GET", f"{V1}/documents/{doc}/pages/2").status_code == 200
    lab.ok("DELETE", f"{V1}/libraries/{lib}", status=204)


def test_page_image_of_a_pdf_not_ingested_yet(lab: Lab) -> None:
    (doc,) = lab.upload(lab.lib, [(f"queued-{lab.n()}.pdf", make_pdf([Page(lines=["Queued"])]))])
    try:
        r = lab.call("GET", f"{V1}/documents/{doc}/pages/1", "staff")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_ready"
        assert "not ready" in r.json()["error"]["message"]
    finally:
        lab.ok("DELETE", f"{V1}/documents/{doc}", status=204)


def test_chunks_of_one_page(lab: Lab) -> None:
    doc = lab.docs["pdf"]
    every = lab.ok("GET", f"{V1}/documents/{doc}/chunks", "staff")
    assert len(every) >= 3
    by_page = {}
    for page in (1, 2, 3, 4):
        got = lab.ok("GET", f"{V1}/documents/{doc}/chunks", "staff", params={"page": page})
        want = [c for c in every if c["page_start"] <= page <= c["page_end"]]
        assert got == want, page
        by_page[page] = got
    assert by_page[1] and by_page[3] and by_page[4] == []
    assert {c["id"] for c in by_page[1]}.isdisjoint({c["id"] for c in by_page[3]})
    assert all("Alpha page one" in c["text"] for c in by_page[1])
    assert all("Gamma page three" in c["text"] for c in by_page[3])
    r = lab.call("GET", f"{V1}/documents/{doc}/chunks", "staff", params={"page": 0})
    assert r.status_code == 422
    # A document without pages has no chunks of a page.
    assert lab.ok("GET", f"{V1}/documents/{lab.docs['chinese']}/chunks", params={"page": 1}) == []


# --- finding documents by name ---------------------------------------------------------------


def _names(lab: Lab, who: str = "staff", **params: Any) -> tuple[set[str], int]:
    out = lab.ok("GET", f"{V1}/libraries/{lab.lib}/documents", who, params=params)
    assert out["total"] == len(out["items"]) or out["total"] > out["limit"]
    return {d["filename"] for d in out["items"]}, int(out["total"])


def test_find_documents_by_name_title_or_folder(lab: Lab) -> None:
    assert _names(lab, q="RATE_50%") == ({"rate_50%.txt"}, 1)  # % and _ literally
    assert _names(lab, q="_50") == ({"rate_50%.txt"}, 1)
    assert _names(lab, q="50%") == ({"rate_50%.txt"}, 1)
    assert _names(lab, q="rate") == ({"rate_50%.txt", "rateX50Y.txt"}, 2)
    assert _names(lab, q="%") == ({"rate_50%.txt"}, 1)
    assert _names(lab, q="_") == ({"rate_50%.txt"}, 1)
    assert _names(lab, q="\\") == (set(), 0)
    assert _names(lab, q="FIN/") == (set(), 0)  # folders are matched as stored: "fin"
    assert _names(lab, q="Fin") == ({"rate_50%.txt", "rateX50Y.txt"}, 2)  # the folder
    assert _names(lab, q="zebra REPORT") == ({"notes.md"}, 1)  # the title only
    assert _names(lab, q="会议") == ({CHINESE_NAME}, 1)
    assert _names(lab, q="  manual ") == ({"manual.pdf"}, 1)
    assert _names(lab, q="") == (_names(lab)[0], len(TEXTS))
    assert _names(lab, q="nothing-like-it") == (set(), 0)
    # With status, offset and limit.
    assert _names(lab, q="rate", status="ready") == ({"rate_50%.txt", "rateX50Y.txt"}, 2)
    assert _names(lab, q="rate", status="failed") == (set(), 0)
    page = lab.ok(
        "GET",
        f"{V1}/libraries/{lab.lib}/documents",
        "staff",
        params={"q": "rate", "offset": 1, "limit": 1},
    )
    assert page["total"] == 2 and [d["filename"] for d in page["items"]] == ["rateX50Y.txt"]
    r = lab.call("GET", f"{V1}/libraries/{lab.lib}/documents", "staff", params={"q": "x" * 201})
    assert r.status_code == 422


def test_finding_documents_keeps_to_what_the_caller_may_read(lab: Lab) -> None:
    """A folder restricted to the librarian: staff find nothing in it, not even its count."""
    path = f"{V1}/libraries/{lab.lib}/scoped-grants"
    grant = lab.ok(
        "POST", path, json={"folder": "fin", "user_id": lab.user_ids["librarian"]}, status=201
    )
    try:
        assert _names(lab, "staff", q="rate") == (set(), 0)
        assert _names(lab, "key", q="rate") == ({"rate_50%.txt", "rateX50Y.txt"}, 2)  # admin's
        assert _names(lab, "librarian", q="rate") == ({"rate_50%.txt", "rateX50Y.txt"}, 2)
        names, total = _names(lab, "staff", q="t")
        assert total == len(names) and not {"rate_50%.txt", "rateX50Y.txt"} & names
    finally:
        lab.ok("DELETE", f"{path}/{grant['id']}", status=204)
    assert _names(lab, "staff", q="rate")[1] == 2


def test_follow_chosen_documents_by_id(lab: Lab) -> None:
    """What the upload screen polls: the documents it sent, deleted ones included, and never
    one the caller may not read or of another library."""
    rate, other = lab.docs["pct"], lab.docs["title"]
    out = lab.ok(
        "GET", f"{V1}/libraries/{lab.lib}/documents", "staff", params={"ids": [rate, other]}
    )
    assert sorted(d["id"] for d in out["items"]) == sorted([rate, other]) and out["total"] == 2
    gone = lab.upload(lab.lib, [("gone-soon.txt", b"This file is deleted right away.")])[0]
    lab.ok("DELETE", f"{V1}/documents/{gone}", status=204)
    out = lab.ok("GET", f"{V1}/libraries/{lab.lib}/documents", "admin", params={"ids": [gone]})
    assert [(d["id"], d["status"]) for d in out["items"]] == [(gone, "deleted")]
    elsewhere = lab.new_library(f"Elsewhere {lab.n()}")
    foreign = lab.upload(elsewhere, [("foreign.txt", b"Not in the main handbook at all.")])[0]
    out = lab.ok(
        "GET", f"{V1}/libraries/{lab.lib}/documents", "admin", params={"ids": [foreign, rate]}
    )
    assert [d["id"] for d in out["items"]] == [rate]
    path = f"{V1}/libraries/{lab.lib}/scoped-grants"
    grant = lab.ok(
        "POST", path, json={"folder": "fin", "user_id": lab.user_ids["librarian"]}, status=201
    )
    try:
        out = lab.ok(
            "GET", f"{V1}/libraries/{lab.lib}/documents", "staff", params={"ids": [rate, other]}
        )
        assert [d["id"] for d in out["items"]] == [other]  # rate_50%.txt is in fin/
    finally:
        lab.ok("DELETE", f"{path}/{grant['id']}", status=204)
    r = lab.call("GET", f"{V1}/libraries/{lab.lib}/documents", "staff", params={"ids": ["x"]})
    assert r.status_code == 422


# --- renaming conversations ------------------------------------------------------------------


def test_rename_a_conversation(lab: Lab) -> None:
    admin = _admin_id(lab)
    with db.session_scope(lab.settings) as session:
        mine = conversations.create(session, lab.user_ids["staff"], "first question", [lab.lib])
        other = conversations.create(session, lab.user_ids["librarian"], "theirs")
        via_key = conversations.create(session, admin, "asked by OA", [], lab.key_id)
        ids = (mine.id, other.id, via_key.id)
    mine_id, other_id, key_conv = ids
    before = lab.ok("GET", f"{V1}/conversations/{mine_id}", "staff")
    out = lab.ok("PATCH", f"{V1}/conversations/{mine_id}", "staff", json={"title": "  预算 Q3  "})
    assert out["title"] == "预算 Q3" and out["id"] == mine_id
    assert out["updated_at"] == before["updated_at"]  # a rename is no activity
    assert lab.ok("GET", f"{V1}/conversations/{mine_id}", "staff")["title"] == "预算 Q3"
    listed = {c["id"]: c["title"] for c in lab.ok("GET", f"{V1}/conversations", "staff")}
    assert listed[mine_id] == "预算 Q3"
    assert (
        lab.ok("PATCH", f"{V1}/conversations/{mine_id}", "staff", json={"title": "x" * 200})[
            "title"
        ]
        == "x" * 200
    )
    for title in ("", "   ", "x" * 201):
        r = lab.call("PATCH", f"{V1}/conversations/{mine_id}", "staff", json={"title": title})
        assert r.status_code == 422, (title, r.text)
    assert lab.call("PATCH", f"{V1}/conversations/{mine_id}", "staff", json={}).status_code == 422

    # Someone else's: 404 like a missing one (admins included), and unchanged.
    for who, conv in (("librarian", mine_id), ("admin", mine_id), ("staff", other_id)):
        r = lab.call("PATCH", f"{V1}/conversations/{conv}", who, json={"title": "taken over"})
        missing = lab.call(
            "PATCH", f"{V1}/conversations/987654321", who, json={"title": "taken over"}
        )
        assert r.status_code == missing.status_code == 404, (who, r.text)
        assert r.text.replace(str(conv), "ID") == missing.text.replace("987654321", "ID")
    assert lab.ok("GET", f"{V1}/conversations/{other_id}", "librarian")["title"] == "theirs"

    # Through an API key: only the conversations held through it; its user sees them too.
    r = lab.call("PATCH", f"{V1}/conversations/{mine_id}", "key", json={"title": "by key"})
    assert r.status_code == 404
    out = lab.ok("PATCH", f"{V1}/conversations/{key_conv}", "key", json={"title": "OA thread"})
    assert out["title"] == "OA thread"
    out = lab.ok("PATCH", f"{V1}/conversations/{key_conv}", "admin", json={"title": "Mine now"})
    assert out["title"] == "Mine now"


def _admin_id(lab: Lab) -> int:
    return int(lab.ok("GET", f"{V1}/auth/me")["id"])


# --- deleting a library ----------------------------------------------------------------------


def _rows_of(lab: Lab, library_id: int, doc_ids: list[int]) -> dict[str, int]:
    with db.session_scope(lab.settings) as s:
        return {
            "library": len(list(s.exec(select(Library).where(Library.id == library_id)))),
            "documents": len(list(s.exec(select(Document).where(col(Document.id).in_(doc_ids))))),
            "chunks": len(
                list(
                    s.exec(
                        select(Chunk).where(
                            (Chunk.library_id == library_id) | col(Chunk.document_id).in_(doc_ids)
                        )
                    )
                )
            ),
            "grants": len(
                list(s.exec(select(LibraryGrant).where(LibraryGrant.library_id == library_id)))
            ),
            "scoped": len(
                list(s.exec(select(ScopeGrant).where(ScopeGrant.library_id == library_id)))
            ),
        }


def test_delete_a_library_completely(lab: Lab) -> None:
    marker = f"WOMBAT-{lab.n()}-{lab.backend}"
    name = f"Doomed 库 {lab.n()}"
    keeper = lab.new_library(f"Keeper {lab.n()}")
    doomed = lab.new_library(name)  # the newest: SQLite gives its id to the next library
    shared = (f"shared-{marker}.txt", f"A note both libraries hold: {marker} shared.\n".encode())
    own = (f"own-{marker}.txt", f"Only the doomed library says {marker} alone.\n".encode())
    pdf = (f"pages-{marker}.pdf", make_pdf([Page(lines=[f"Doomed PDF {marker}", *PAGE_1])]))
    doc_ids = lab.upload(doomed, [shared, own, pdf])
    lab.ingest(doomed, doc_ids)
    (keeper_doc,) = lab.upload(keeper, [shared])
    lab.ingest(keeper, [keeper_doc])
    store = OriginalStore(lab.settings.originals_dir)
    with db.session_scope(lab.settings) as s:
        digests = {d.id: d.sha256 for d in s.exec(select(Document)) if d.id in doc_ids}
    shared_sha, own_sha, pdf_sha = (digests[d] for d in doc_ids)

    # Grants, a narrowed grant, API keys for it alone and for it with another library.
    lab.ok(
        "POST",
        f"{V1}/libraries/{doomed}/grants",
        json={"user_id": lab.user_ids["staff"], "permission": "read"},
        status=201,
    )
    lab.ok(
        "POST",
        f"{V1}/libraries/{doomed}/scoped-grants",
        json={"document_id": doc_ids[1], "user_id": lab.user_ids["staff"]},
        status=201,
    )
    only_key = lab.ok(
        "POST", f"{V1}/api-keys", json={"name": "only", "library_ids": [doomed]}, status=201
    )
    both_key = lab.ok(
        "POST",
        f"{V1}/api-keys",
        json={"name": "both", "library_ids": [doomed, keeper]},
        status=201,
    )
    # What there is to lose: found by search, a page image cached, an index on disk.
    found = lab.search(marker, "staff", library_ids=[doomed])["results"]
    assert {p["document_id"] for p in found} & set(doc_ids)
    assert lab.call("GET", f"{V1}/documents/{doc_ids[2]}/pages/1", "staff").status_code == 200
    assert (lab.settings.page_cache_dir / str(doc_ids[2])).is_dir()
    assert library_dir(lab.settings.indexes_dir, doomed).is_dir()
    assert all(store.exists(sha) for sha in (shared_sha, own_sha, pdf_sha))

    # Only administrators.
    for who, status in (("librarian", 403), ("staff", 403), ("key", 403)):
        r = lab.call("DELETE", f"{V1}/libraries/{doomed}", who)
        assert r.status_code == status, (who, r.text)
    assert lab.call("DELETE", f"{V1}/libraries/987654321").status_code == 404
    assert _rows_of(lab, doomed, doc_ids)["documents"] == 3

    lab.ok("DELETE", f"{V1}/libraries/{doomed}", status=204)

    # Nothing of it is left to find.
    assert _rows_of(lab, doomed, doc_ids) == {
        "library": 0,
        "documents": 0,
        "chunks": 0,
        "grants": 0,
        "scoped": 0,
    }
    for who in ("admin", "staff"):
        assert lab.call("GET", f"{V1}/libraries/{doomed}", who).status_code == 404
        assert lab.call("GET", f"{V1}/libraries/{doomed}/documents", who).status_code == 404
        assert doomed not in {x["id"] for x in lab.ok("GET", f"{V1}/libraries", who)}
        for doc in doc_ids:
            for sub in ("", "/chunks", "/file", "/pages/1"):
                r = lab.call("GET", f"{V1}/documents/{doc}{sub}", who)
                assert r.status_code == 404, (who, doc, sub, r.text)
        result = lab.search(marker, who)
        assert doomed not in result["library_ids"]
        assert not {p["document_id"] for p in result["results"]} & set(doc_ids)
        r = lab.call("POST", f"{V1}/search", who, json={"query": marker, "library_ids": [doomed]})
        assert r.status_code == 404
    # The other library keeps its copy of the shared document, original included.
    kept = lab.search(marker, "admin", library_ids=[keeper])["results"]
    assert {p["document_id"] for p in kept} == {keeper_doc}
    assert store.exists(shared_sha)
    assert not store.exists(own_sha) and not store.exists(pdf_sha)
    assert not library_dir(lab.settings.indexes_dir, doomed).exists()
    assert not (lab.settings.page_cache_dir / str(doc_ids[2])).exists()
    # Keys: the one for it alone is revoked, the other keeps its other library.
    with db.session_scope(lab.settings) as s:
        keys = {k.id: k for k in s.exec(select(ApiKey))}
    assert keys[only_key["id"]].revoked_at is not None
    assert keys[both_key["id"]].revoked_at is None
    assert keys[both_key["id"]].library_ids == [keeper]
    r = lab.client.get(f"{V1}/libraries", headers=auth(only_key["key"]))
    assert r.status_code == 401
    r = lab.client.get(f"{V1}/libraries", headers=auth(both_key["key"]))
    assert [x["id"] for x in r.json()] == [keeper]
    # Audited, with what went.
    event = lab.audit("library.delete")[-1]
    assert event.target_id == str(doomed) and event.actor_user_id == _admin_id(lab)
    assert event.detail["name"] == name and event.detail["documents"] == 3
    assert event.detail["chunks"] >= 3 and event.detail["grants"] == 1
    assert event.detail["scoped_grants"] == 1
    assert event.detail["api_keys_revoked"] == [only_key["id"]]
    assert event.detail["api_keys_narrowed"] == [both_key["id"]]
    assert lab.call("DELETE", f"{V1}/libraries/{doomed}").status_code == 404

    # The name is free again; the new library starts empty (whatever id it gets) and takes
    # the same content as a new document.
    again = lab.new_library(name)
    if lab.backend == "sqlite":
        # The case the index uids and the retriever's forgetting guard against: a cached
        # index of the deleted library must not answer for the new one under its id.
        assert again == doomed
    assert lab.ok("GET", f"{V1}/libraries/{again}")["documents"] == {}
    assert lab.search(marker, "admin", library_ids=[again])["results"] == []
    (fresh,) = lab.upload(again, [own])
    lab.ingest(again, [fresh])
    result = lab.search(marker, "admin", library_ids=[again])["results"]
    assert {p["document_id"] for p in result} == {fresh}
    assert store.exists(own_sha)
    lab.ok("DELETE", f"{V1}/libraries/{again}", status=204)
    lab.ok("DELETE", f"{V1}/libraries/{keeper}", status=204)
    assert not store.exists(shared_sha) and not store.exists(own_sha)


def test_a_worker_busy_with_a_document_of_a_deleted_library_gives_up(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker parsing a document when its library is deleted: it finds its claim gone and
    stops, and nothing of the library comes back (no rows, no index). A worker that already
    stored its chunks and syncs the index afterwards publishes nothing. A late message for a
    document of the library does nothing."""
    marker = f"NUMBAT-{lab.n()}"
    doomed = lab.new_library()
    slow, done = lab.upload(
        doomed,
        [(f"slow-{marker}.txt", f"Slow {marker}.\n".encode()), (f"done-{marker}.txt", b"Done.\n")],
    )
    # `done` got its chunks stored and waits for the index (status indexing).
    result = ingest_document(lab.settings, done, 1, sync_index=False)
    assert result.outcome is Outcome.ready
    assert lab.ok("GET", f"{V1}/documents/{done}")["status"] == "indexing"

    parsing, release = threading.Event(), threading.Event()
    real_parse = pipeline.parse_document

    def slow_parse(*args: Any, **kw: Any) -> Any:
        parsing.set()
        assert release.wait(60)
        return real_parse(*args, **kw)

    monkeypatch.setattr(pipeline, "parse_document", slow_parse)
    outcome: list[Any] = []
    worker = threading.Thread(
        target=lambda: outcome.append(ingest_document(lab.settings, slow, 1)), daemon=True
    )
    worker.start()
    try:
        assert parsing.wait(60)
        lab.ok("DELETE", f"{V1}/libraries/{doomed}", status=204)
    finally:
        release.set()
        worker.join(120)
    assert outcome and outcome[0].outcome is Outcome.skipped, outcome
    assert sync_library_index(lab.settings, doomed, ingestion_embedder(lab.settings)) is None
    assert ingest_document(lab.settings, done, 1).outcome is Outcome.skipped  # a late message
    assert ingest_document(lab.settings, slow, 2).outcome is Outcome.skipped
    assert _rows_of(lab, doomed, [slow, done]) == {
        "library": 0,
        "documents": 0,
        "chunks": 0,
        "grants": 0,
        "scoped": 0,
    }
    assert not library_dir(lab.settings.indexes_dir, doomed).exists()


def test_a_leftover_index_is_dropped_by_the_next_sync(lab: Lab) -> None:
    """Index files of a library that is gone (a crash between deleting its rows and its files)
    are removed by the next index sync instead of being published again."""
    doomed = lab.new_library()
    (doc,) = lab.upload(doomed, [("leftover.txt", b"Leftover index entry.\n")])
    lab.ingest(doomed, [doc])
    index = library_dir(lab.settings.indexes_dir, doomed)
    saved = index.parent / f"saved-{doomed}"
    index.rename(saved)  # the delete will find no index ...
    lab.ok("DELETE", f"{V1}/libraries/{doomed}", status=204)
    saved.rename(index)  # ... and then it is back, as after a crash
    assert sync_library_index(lab.settings, doomed, ingestion_embedder(lab.settings)) is None
    assert not index.exists()


def test_a_leftover_index_is_dropped_when_its_id_is_given_again(lab: Lab) -> None:
    """SQLite gives the id of the newest library, once deleted, to the next one: index files
    left of the old one (a crash) go when the new one is created."""
    doomed = lab.new_library()
    if lab.backend != "sqlite":  # PostgreSQL never gives an id twice: nothing is left over
        lab.ok("DELETE", f"{V1}/libraries/{doomed}", status=204)
        fresh = lab.new_library()
        assert fresh != doomed
        lab.ok("DELETE", f"{V1}/libraries/{fresh}", status=204)
        return
    (doc,) = lab.upload(doomed, [(f"reused-{lab.n()}.txt", b"Reused id, old index.\n")])
    lab.ingest(doomed, [doc])
    index = library_dir(lab.settings.indexes_dir, doomed)
    saved = index.parent / f"saved-{doomed}"
    index.rename(saved)
    lab.ok("DELETE", f"{V1}/libraries/{doomed}", status=204)
    saved.rename(index)
    assert lab.new_library() == doomed
    assert not index.exists()
    lab.ok("DELETE", f"{V1}/libraries/{doomed}", status=204)


def test_a_stale_index_never_returns_a_chunk_of_another_library(lab: Lab) -> None:
    """A document is deleted and its library's index not rewritten yet (no worker here runs
    the sync); meanwhile SQLite gives its chunks' ids to the chunks of a document of another
    library. Searching the first library must not return them."""
    word = f"ocelot{lab.n()}"
    mine, theirs = lab.new_library(), lab.new_library()
    lab.ok(
        "POST",
        f"{V1}/libraries/{mine}/grants",
        json={"user_id": lab.user_ids["staff"], "permission": "read"},
        status=201,
    )
    try:
        (gone,) = lab.upload(
            mine, [(f"{word}-notes.txt", f"Field notes on the {word}.\n".encode())]
        )
        lab.ingest(mine, [gone])
        old_chunks = [c["id"] for c in lab.ok("GET", f"{V1}/documents/{gone}/chunks")]
        assert lab.search(word, "staff", library_ids=[mine])["results"]
        lab.ok("DELETE", f"{V1}/documents/{gone}", status=204)
        secret = f"Secret {word} breeding sites: north valley.\n".encode()
        (other,) = lab.upload(theirs, [(f"{word}-secret.txt", secret)])
        lab.ingest(theirs, [other])
        new_chunks = [c["id"] for c in lab.ok("GET", f"{V1}/documents/{other}/chunks")]
        if lab.backend == "sqlite":
            assert set(new_chunks) & set(old_chunks), "the ids were not reused: no test"
        for who in ("staff", "admin"):
            found = lab.search(word, who, library_ids=[mine])
            assert found["results"] == [], (who, found)
            assert "breeding" not in str(found)
    finally:
        lab.ok("DELETE", f"{V1}/libraries/{mine}", status=204)
        lab.ok("DELETE", f"{V1}/libraries/{theirs}", status=204)


def test_openapi_documents_the_new_routes(lab: Lab) -> None:
    spec = lab.ok("GET", "/openapi.json")
    paths = spec["paths"]
    file_ok = paths["/api/v1/documents/{document_id}/file"]["get"]["responses"]["200"]
    assert list(file_ok["content"]) == ["application/octet-stream"]
    page_ok = paths["/api/v1/documents/{document_id}/pages/{page}"]["get"]["responses"]["200"]
    assert list(page_ok["content"]) == ["image/png"]
    assert "patch" in paths["/api/v1/libraries/{library_id}"]
    assert "delete" in paths["/api/v1/libraries/{library_id}"]
    assert "patch" in paths["/api/v1/conversations/{conversation_id}"]
    params = {
        p["name"] for p in paths["/api/v1/libraries/{library_id}/documents"]["get"]["parameters"]
    }
    assert {"q", "status", "offset", "limit"} <= params
