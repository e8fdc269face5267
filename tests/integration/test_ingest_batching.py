"""Group commit of index publishes: a bulk upload publishes a library's index once per batch of
documents, not once per document, and loses nothing on the way (real api, Redis, Celery worker
process, parsers, embedding model, SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from core import db
from core.models import DocStatus, Document
from core.repo import chunks as chunk_repo
from core.repo import documents
from retrieval.index_store import LibraryReader, read_manifest
from tests.conftest import WorkerProcess
from tests.integration.api_helpers import V1, auth

pytestmark = pytest.mark.integration
TERMINAL = {DocStatus.ready, DocStatus.failed}


def _library(client: TestClient, token: str, name: str) -> int:
    r = client.post(f"{V1}/libraries", json={"name": name}, headers=auth(token))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _upload(client: TestClient, token: str, lib: int, files: list[tuple[str, str]]) -> list[int]:
    body = [("files", (name, text.encode())) for name, text in files]
    r = client.post(f"{V1}/libraries/{lib}/documents", files=body, headers=auth(token))
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert [i["status"] for i in items] == ["queued"] * len(files), items
    return [int(i["document_id"]) for i in items]


def _note(word: str, i: int) -> str:
    return (
        f"# Note {i}\n\nThe {word} procedure covers item {i} of the handbook. "
        f"Staff record the {word} outcome in the ledger and report it weekly.\n"
    )


def _docs(settings, ids: list[int]) -> dict[int, Document]:  # type: ignore[no-untyped-def]
    with db.session_scope(settings) as s:
        found = {i: documents.get(s, i) for i in ids}
    return {i: d for i, d in found.items() if d is not None}


def _wait(settings, ids: list[int], timeout: float) -> dict[int, Document]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        docs = _docs(settings, ids)
        if len(docs) == len(ids) and all(d.status in TERMINAL for d in docs.values()):
            return docs
        if time.monotonic() > deadline:
            pending = {i: d.status for i, d in docs.items() if d.status not in TERMINAL}
            raise AssertionError(f"not finished after {timeout}s: {pending}")
        time.sleep(0.25)


def _index_holds_exactly(settings, lib: int, ids: list[int]) -> int:  # type: ignore[no-untyped-def]
    """The published snapshot holds every chunk of the documents exactly once (vectors and
    keywords), and nothing else; its manifest version (= index publishes so far)."""
    with db.session_scope(settings) as s:
        want = sorted(c.id for i in ids for c in chunk_repo.for_document(s, i))
    assert want and len(set(want)) == len(want)
    manifest = read_manifest(settings.indexes_dir, lib)
    snap = LibraryReader(settings.indexes_dir, lib).current()
    assert manifest is not None and snap is not None
    keyword_ids = snap.chunk_ids.tolist()
    assert sorted(keyword_ids) == want, "each chunk exactly once in the keyword index"
    assert len(snap.vectors) == manifest.count == len(want)
    return manifest.version


@pytest.fixture
def batching(settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """Settings with the given batching limits, and a real worker process started on them."""
    started: list[WorkerProcess] = []

    def start(tmp: Path, **limits: object) -> tuple[object, WorkerProcess]:
        redis.Redis.from_url(settings.redis_url).flushdb()  # no stale jobs from earlier tests
        custom = settings.model_copy(update=limits)
        w = WorkerProcess(custom, tmp / "worker.log")
        w.start()
        started.append(w)
        return custom, w

    yield start
    for w in started:
        w.stop()


def test_a_bulk_upload_publishes_the_index_once_per_batch(
    app_client: TestClient, admin_token: str, batching, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    s, worker = batching(tmp_path, index_batch_max_docs=200, index_batch_max_delay_seconds=20.0)
    lib = _library(app_client, admin_token, "bulk")
    n = 30
    words = [f"zeta{i:02d}quill" for i in range(n)]
    ids = _upload(
        app_client, admin_token, lib, [(f"n{i}.md", _note(w, i)) for i, w in enumerate(words)]
    )
    docs = _wait(s, ids, timeout=600)
    assert all(d.status == DocStatus.ready for d in docs.values()), {
        i: (d.status, d.reason) for i, d in docs.items() if d.status != DocStatus.ready
    }
    assert all(d.claim is None for d in docs.values())
    version = _index_holds_exactly(s, lib, ids)
    log = worker.log_path.read_text(errors="replace")
    assert log.count("waits for a later index publish") >= n // 2, "documents were deferred"
    assert 1 <= version <= n // 5, f"{version} index publishes for {n} documents"
    # Every document is found by its own word (BM25 over the published snapshot).
    for i in (0, n // 2, n - 1):
        r = app_client.post(
            f"{V1}/search",
            json={"query": words[i], "library_ids": [lib], "mode": "bm25"},
            headers=auth(admin_token),
        )
        assert r.status_code == 200, r.text
        found = {h["document_id"] for h in r.json()["results"]}
        assert ids[i] in found, (words[i], r.json())


def test_a_waiting_document_is_published_when_every_later_one_fails(
    app_client: TestClient, admin_token: str, batching, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The documents after it all fail (no text): the last failure publishes it. The maximum
    delay is long, so neither it nor the reconciler can be what publishes."""
    s, worker = batching(tmp_path, index_batch_max_docs=200, index_batch_max_delay_seconds=900.0)
    lib = _library(app_client, admin_token, "then-bad")
    files = [("good.md", _note("heliotrope", 1))]
    files += [(f"blank{i}.txt", " \n" * (i + 1)) for i in range(5)]  # no text: a bad file
    good, *bad = _upload(app_client, admin_token, lib, files)
    started = time.monotonic()
    docs = _wait(s, [good, *bad], timeout=300)
    assert docs[good].status == DocStatus.ready, docs[good].reason
    assert all(docs[i].status == DocStatus.failed for i in bad)
    assert all("no text" in (docs[i].reason or "") for i in bad), [docs[i].reason for i in bad]
    assert time.monotonic() - started < 300
    log = worker.log_path.read_text(errors="replace")
    assert f"document {good} waits for a later index publish" in log
    assert "requested index publishes" not in log  # not the reconciler's doing
    assert _index_holds_exactly(s, lib, [good]) == 1  # one publish, by the last failure


def test_a_waiting_document_whose_publisher_was_killed_is_published_by_the_reconciler(
    app_client: TestClient, admin_token: str, batching, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    s, worker = batching(tmp_path, index_batch_max_docs=200, index_batch_max_delay_seconds=8.0)
    lib = _library(app_client, admin_token, "killed")
    ids = _upload(
        app_client, admin_token, lib, [(f"k{i}.md", _note(f"kappa{i}x", i)) for i in range(16)]
    )
    # Kill the whole worker as soon as a document waits for a later publish (chunks stored,
    # claim released) while others are still ahead of it.
    deadline = time.monotonic() + 300
    while True:
        docs = _docs(s, ids)
        waiting = [i for i, d in docs.items() if d.status == DocStatus.indexing and d.claim is None]
        if waiting:
            worker.kill()
            break
        assert not any(d.status == DocStatus.ready for d in docs.values()), "published too soon"
        assert time.monotonic() < deadline, "no document ever waited"
        time.sleep(0.05)
    docs = _docs(s, ids)
    waiting = [i for i, d in docs.items() if d.status == DocStatus.indexing]
    assert waiting and not any(d.status == DocStatus.ready for d in docs.values())
    with db.session_scope(s) as session:
        chunk_ids = {i: sorted(c.id for c in chunk_repo.for_document(session, i)) for i in waiting}
        # The worker that would have published them — the one that ended the last document
        # ahead — died right after recording its outcome; its queue is lost too.
        for i, d in docs.items():
            if d.status in (DocStatus.queued, DocStatus.parsing, DocStatus.embedding):
                assert documents.fail(session, i, None, "simulated: ended, then the worker died")
        # A waiting document is not lost work: nothing would parse it again.
        assert not set(waiting) & {i for i, _ in documents.stalled(session, 0, 0)}
    redis.Redis.from_url(s.redis_url).flushdb()
    worker.start()
    done = _wait(s, waiting, timeout=180)
    assert all(d.status == DocStatus.ready for d in done.values())
    assert all(d.attempts == 1 for d in done.values()), "published, not processed again"
    with db.session_scope(s) as session:
        after = {i: sorted(c.id for c in chunk_repo.for_document(session, i)) for i in waiting}
    assert after == chunk_ids
    _index_holds_exactly(s, lib, waiting)
    log = worker.log_path.read_text(errors="replace")
    assert "requested index publishes of 1 libraries" in log
