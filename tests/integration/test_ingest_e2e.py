"""End to end: the API accepts uploads, a real Celery worker process (with real Redis, the real
parsers and the bundled embedding model) ingests them into per-library indexes."""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from core import db
from core.models import DocStatus
from core.repo import chunks as chunk_repo
from core.repo import documents
from retrieval.analyzer import analyze
from retrieval.index_store import LibraryReader, read_manifest
from tests.conftest import EVAL_DOCS, WorkerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
V1 = "/api/v1"
TERMINAL = {DocStatus.ready, DocStatus.failed}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _library(client: TestClient, token: str, name: str) -> int:
    r = client.post(f"{V1}/libraries", json={"name": name}, headers=_auth(token))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _upload_paths(client: TestClient, token: str, lib: int, paths: list[Path]) -> dict:  # type: ignore[type-arg]
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    r = client.post(f"{V1}/libraries/{lib}/documents", files=files, headers=_auth(token))
    assert r.status_code == 202, r.text
    return dict(r.json())


def _wait(settings, ids: list[int], timeout: float) -> dict[int, object]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        with db.session_scope(settings) as s:
            docs = {i: documents.get(s, i) for i in ids}
        if all(d is not None and d.status in TERMINAL for d in docs.values()):
            return docs  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pending = {
                i: (d.filename, d.status)
                for i, d in docs.items()
                if d is not None and d.status not in TERMINAL
            }
            raise AssertionError(f"not finished after {timeout}s: {pending}")
        time.sleep(0.5)


def test_real_world_documents(
    app_client: TestClient, admin_token: str, settings, worker: WorkerProcess
) -> None:  # type: ignore[no-untyped-def]
    paths = sorted(p for p in EVAL_DOCS.iterdir() if p.name != "manifest.jsonl")
    lib = _library(app_client, admin_token, "real-world")
    report = _upload_paths(app_client, admin_token, lib, paths)
    by_file = {i["file"]: i for i in report["items"]}
    # Empty files are refused at upload with a reason; everything else is queued.
    assert by_file["empty.txt"]["status"] == "rejected"
    assert "empty" in by_file["empty.txt"]["reason"]
    ids = [i["document_id"] for i in report["items"] if i["status"] == "queued"]
    assert len(ids) >= 50
    docs = _wait(settings, ids, timeout=900)
    outcome = {d.filename: d for d in docs.values()}  # type: ignore[attr-defined]
    assert worker.proc is not None and worker.proc.poll() is None, "the worker must survive"

    for name in (
        "layout-parser-paper-fast.pdf",
        "docx-tables.docx",
        "1. 股东会-会议通知.docx",
        "fake-power-point-table.pptx",
        "2023-half-year-analyses-by-segment.xlsx",
        "example-10k-1p.html",
        "codeblock.md",
        "norwich-city.txt",
        "fake-email-attachment.eml",
        "fake-email-attachment.msg",
        "winter-sports.epub",
        "fake.odt",
        "eng_spa_mult.rtf",
        "simple.doc",
        "fake-power-point.ppt",
        "tests-example.xls",
        "静静的顿河-wiki.html",
        "zh-test.md",
        "csv-with-long-lines.csv",
        "loremipsum-flat.pdf",
    ):
        doc = outcome[name]
        assert doc.status == DocStatus.ready, (name, doc.reason)
        assert doc.chunk_count > 0
    for name, words in (("password.pdf", "password"), ("password_protected.xlsx", "password")):
        assert outcome[name].status == DocStatus.failed
        assert words in (outcome[name].reason or "").lower()
    for d in outcome.values():
        if d.status == DocStatus.failed:
            assert d.reason and len(d.reason) > 10, d.filename

    with db.session_scope(settings) as s:
        pdf = outcome["layout-parser-paper-fast.pdf"]
        pdf_chunks = chunk_repo.for_document(s, pdf.id)
        assert all(c.page_start is not None and c.page_end is not None for c in pdf_chunks)
        assert max(c.page_end or 0 for c in pdf_chunks) >= 2
        assert pdf.page_count is not None and pdf.page_count >= 2
        xlsx_chunks = chunk_repo.for_document(s, outcome["docx-tables.docx"].id)
        assert any(c.kind == "table" for c in xlsx_chunks)
        zh = chunk_repo.for_document(s, outcome["1. 股东会-会议通知.docx"].id)
        assert any("股东" in c.text for c in zh)

    snap = LibraryReader(settings.indexes_dir, lib).current()
    assert snap is not None
    n_ready = sum(d.chunk_count for d in outcome.values() if d.status == DocStatus.ready)
    assert len(snap.vectors) == len(snap.keywords) == n_ready


def test_delete_removes_from_both_indexes(
    app_client: TestClient, admin_token: str, settings, worker: WorkerProcess, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    lib = _library(app_client, admin_token, "deletions")
    a = tmp_path / "zebra.md"
    a.write_text("# Quagga report\n\nThe quagga XQ-7731 zebra is extinct since 1883.\n")
    b = tmp_path / "other.md"
    b.write_text("# 年度报告\n\n本公司的营业收入增长了百分之十二。\n")
    report = _upload_paths(app_client, admin_token, lib, [a, b])
    ids = [i["document_id"] for i in report["items"]]
    docs = _wait(settings, ids, timeout=180)
    assert all(d.status == DocStatus.ready for d in docs.values())  # type: ignore[attr-defined]
    target = ids[0]
    with db.session_scope(settings) as s:
        target_chunks = chunk_repo.for_document(s, target)
        chunk_ids = {c.id for c in target_chunks}
        vec = np.frombuffer(target_chunks[0].embedding or b"", dtype=np.float32)
    reader = LibraryReader(settings.indexes_dir, lib)
    snap = reader.current()
    assert snap is not None
    assert {i for i, _ in snap.keywords.search(analyze("XQ-7731 quagga"), 5)} & chunk_ids
    assert snap.vectors.search(vec, 1)[0][0] in chunk_ids
    before = snap.manifest.version

    r = app_client.delete(f"{V1}/documents/{target}", headers=_auth(admin_token))
    assert r.status_code == 204
    assert app_client.get(f"{V1}/documents/{target}", headers=_auth(admin_token)).status_code == 404
    deadline = time.monotonic() + 60
    while (m := read_manifest(settings.indexes_dir, lib)) is None or m.version == before:
        assert time.monotonic() < deadline, "index was not updated after delete"
        time.sleep(0.3)
    snap = reader.wait_loaded()
    assert snap is not None
    assert not set(snap.chunk_ids.tolist()) & chunk_ids
    assert not {i for i, _ in snap.keywords.search(analyze("XQ-7731 quagga"), 5)} & chunk_ids
    assert not {i for i, _ in snap.vectors.search(vec, 10)} & chunk_ids
    with db.session_scope(settings) as s:
        assert chunk_repo.for_document(s, target) == []
        assert chunk_repo.by_ids(s, list(chunk_ids)) == {}


def _long_document(path: Path) -> Path:
    paras = [
        f"Section {i}. " + " ".join(f"word{i}x{j} alpha beta gamma delta" for j in range(60))
        for i in range(150)
    ]
    path.write_text("\n\n".join(paras))
    return path


def test_worker_killed_mid_document_is_finished_by_the_next(
    app_client: TestClient, admin_token: str, settings, worker: WorkerProcess, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    lib = _library(app_client, admin_token, "crash")
    report = _upload_paths(app_client, admin_token, lib, [_long_document(tmp_path / "long.txt")])
    doc_id = report["items"][0]["document_id"]
    deadline = time.monotonic() + 120
    while True:
        with db.session_scope(settings) as s:
            doc = documents.get(s, doc_id)
        assert doc is not None
        if doc.status == DocStatus.embedding:
            break
        assert doc.status not in TERMINAL, "finished before it could be killed; make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.kill()
    with db.session_scope(settings) as s:
        doc = documents.get(s, doc_id)
        assert doc is not None and doc.status == DocStatus.embedding  # stuck until a worker returns
    worker.start()
    done = _wait(settings, [doc_id], timeout=300)[doc_id]
    assert done.status == DocStatus.ready, done.reason  # type: ignore[attr-defined]
    # One version, finished by the second worker (the first one's claim counted too).
    assert (done.version, done.attempts >= 2) == (1, True)  # type: ignore[attr-defined]
    with db.session_scope(settings) as s:
        rows = chunk_repo.for_document(s, doc_id)
        assert documents.list_for_library(s, lib)[1] == 1  # one document, not two
    ordinals = [c.ordinal for c in rows]
    assert ordinals == list(range(len(rows))), "no duplicate or missing chunks"
    assert done.chunk_count == len(rows)  # type: ignore[attr-defined]
    # Both indexes of the published snapshot hold each chunk exactly once.
    manifest = read_manifest(settings.indexes_dir, lib)
    snap = LibraryReader(settings.indexes_dir, lib).current()
    assert snap is not None and manifest is not None and manifest.count == len(rows)
    keyword_ids = snap.chunk_ids.tolist()
    vector_ids = faiss.vector_to_array(snap.vectors.index.id_map).tolist()
    assert sorted(keyword_ids) == sorted(vector_ids) == sorted(c.id for c in rows)


def test_lost_queue_is_recovered_from_the_database(
    app_client: TestClient, admin_token: str, settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Redis keeps nothing on disk: if it loses the queue, the reconciler re-enqueues."""
    redis.Redis.from_url(settings.redis_url).flushdb()
    lib = _library(app_client, admin_token, "lost")
    note = tmp_path / "note.txt"
    note.write_text("The reconciler re-enqueues queued documents whose message was lost.")
    report = _upload_paths(app_client, admin_token, lib, [note])
    redis.Redis.from_url(settings.redis_url).flushdb()  # the message is gone
    w = WorkerProcess(settings, tmp_path / "worker.log")
    w.start()
    try:
        doc = _wait(settings, [report["items"][0]["document_id"]], timeout=120)
        assert next(iter(doc.values())).status == DocStatus.ready  # type: ignore[attr-defined]
    finally:
        w.stop()
