"""Fault drills (issue 7, Durability), each against the real parts: Redis restarted mid-batch,
the model server stopped and started again, the data disk filled up.

Every service a test kills is its own: a private `redis-server` on a free port (the shared
one on 6379 is never touched), a vLLM server of this module's own (started in the background
when the module begins, so it boots while the other drills run), a tmpfs mounted for the data
dir. A worker killed mid-document is drilled in test_ingest_e2e.py, a model server killed
mid-answer in test_chat.py. docs/faults.md says what each fault does and what an operator does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from core import db
from core.models import DocStatus, Document, Role
from core.repo import chunks as chunk_repo
from core.repo import documents, users
from core.settings import Settings
from retrieval.index_store import load_snapshot, read_manifest
from tests.conftest import REPO, TEST_MODEL, WorkerProcess, _free_port
from tests.integration.api_helpers import V1, auth

pytestmark = [pytest.mark.integration]

MB = 1024 * 1024
ADMIN, ADMIN_PASSWORD = "fault-admin", "correct horse battery"


# --- the parts these drills break -----------------------------------------------------------


class PrivateRedis:
    """A `redis-server` of this module's own that keeps nothing on disk (like the dev and CI
    Redis): killed with SIGKILL it loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


class OwnModelServer:
    """One vLLM server (the prepared W4A16 test model) that a drill may stop and start again
    on the same port. It starts booting when the module begins."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.server: Any = None
        self.spec: Any = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._boot, daemon=True)

    def _boot(self) -> None:
        from serving import model_server

        try:
            if not (TEST_MODEL / "config.json").exists():
                prepare = [sys.executable, "-m", "cli.main", "models", "prepare"]
                prep = subprocess.run(
                    [*prepare, "--out", str(TEST_MODEL)],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if prep.returncode != 0:
                    raise RuntimeError(f"model preparation failed:\n{prep.stdout}\n{prep.stderr}")
            # Eager mode: no torch.compile at start-up (minutes on a busy 2-core box, twice
            # here); the drill is about coming and going, not speed. One OpenMP thread: with
            # threads on cores that other model servers also spin on, the restarted server's
            # first real request stalled for minutes in two runs out of two.
            self.spec = model_server.ServerSpec(
                TEST_MODEL,
                "zhiku-main",
                _free_port(),
                max_model_len=4096,
                kv_cache_gb=1,
                cpu_threads=str((os.cpu_count() or 1) - 1),
                extra_args=("--enforce-eager",),
            )
            self.server = model_server.launch(self.spec, self.log_dir)
        except Exception as exc:  # reported by wait()
            self.error = str(exc)

    def wait(self, timeout: float = 900) -> str:
        from serving import model_server

        self.thread.join(timeout)
        if self.error:
            raise RuntimeError(self.error)
        model_server.wait_ready(self.server, timeout)
        model_server.warm_up(self.spec, timeout)
        return str(self.spec.base_url)

    def stop(self) -> None:
        from serving import model_server

        if self.server is not None:
            model_server.stop(self.server, grace=5)

    def restart(self, timeout: float = 900) -> None:
        """Start it again on the same port, as `zhiku models serve` does: launch, wait until
        it lists its model, warm it up (its first request after a start compiles kernels and
        can take minutes on a busy CPU). Only the server comes back; the app is not touched."""
        from serving import model_server

        self.stop()
        self.server = model_server.launch(self.spec, self.log_dir)
        model_server.wait_ready(self.server, timeout)
        model_server.warm_up(self.spec, timeout)


MODEL_DRILL = "test_a_stopped_model_server_gives_clear_errors_and_is_used_again_when_back"


@pytest.fixture(scope="module", autouse=True)
def own_model_server(request: pytest.FixtureRequest) -> Iterator[OwnModelServer | None]:
    """Boots only when the model drill is among the selected tests; killed at the end."""
    if not any(getattr(item, "originalname", "") == MODEL_DRILL for item in request.session.items):
        yield None
        return
    server = OwnModelServer(REPO / "test-artifacts" / "vllm-faults")
    server.thread.start()
    try:
        yield server
    finally:
        server.thread.join(600)
        server.stop()


# --- helpers ----------------------------------------------------------------------------------


def _settings(data_dir: Path, database_url: str | None, redis_url: str, **extra: Any) -> Settings:
    s = Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        lease_seconds=6,
        requeue_after_seconds=5,
        reconcile_interval_seconds=2,
        **extra,
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)
    db.migrate(s)
    return s


def _sign_in(s: Settings, client: TestClient) -> str:
    with db.session_scope(s) as session:
        users.create_user(session, ADMIN, ADMIN_PASSWORD, role=Role.admin)
    r = client.post(f"{V1}/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _library(client: TestClient, token: str, name: str) -> int:
    r = client.post(f"{V1}/libraries", json={"name": name}, headers=auth(token))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _note(word: str, size: int = 0) -> bytes:
    """A small text document findable by its code word; padded to `size` bytes."""
    text = (
        f"Fault drill note. The code word of this note is {word}. It is stored, parsed, "
        f"chunked, embedded and indexed like any other document, and {word} must be found.\n"
    )
    filler = "The quick brown fox jumps over the lazy dog near the river bank.\n"
    body = text + filler * max(0, (size - len(text)) // len(filler) + 1) if size else text
    return body.encode()[: size or None]


def _upload(client: TestClient, token: str, lib: int, files: list[tuple[str, bytes]]) -> Any:
    return client.post(
        f"{V1}/libraries/{lib}/documents",
        files=[("files", (name, data, "text/plain")) for name, data in files],
        headers=auth(token),
    )


def _accepted(r: httpx.Response) -> list[int]:
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert all(i["status"] == "queued" for i in items), items
    return [int(i["document_id"]) for i in items]


def _docs(s: Settings, ids: list[int]) -> dict[int, Document]:
    with db.session_scope(s) as session:
        found = {i: documents.get(session, i) for i in ids}
    assert all(d is not None for d in found.values())
    return found  # type: ignore[return-value]


def _wait_ready(s: Settings, ids: list[int], timeout: float) -> dict[int, Document]:
    deadline = time.monotonic() + timeout
    while True:
        docs = _docs(s, ids)
        failed = {i: d.reason for i, d in docs.items() if d.status == DocStatus.failed}
        assert not failed, f"documents failed: {failed}"
        if all(d.status == DocStatus.ready for d in docs.values()):
            return docs
        if time.monotonic() > deadline:
            pending = {i: str(d.status) for i, d in docs.items() if d.status != DocStatus.ready}
            raise AssertionError(f"not ready after {timeout:.0f} s: {pending}")
        time.sleep(0.5)


def _found(client: TestClient, token: str, lib: int, word: str) -> set[int]:
    """Documents whose passages a keyword search for `word` returns."""
    r = client.post(
        f"{V1}/search",
        json={"query": word, "library_ids": [lib], "mode": "bm25", "top_k": 5},
        headers=auth(token),
    )
    assert r.status_code == 200, r.text
    return {int(p["document_id"]) for p in r.json()["results"] if word in p["text"]}


def _index_holds_exactly(s: Settings, lib: int, ids: list[int]) -> int:
    """Each document is ready once: one version, chunks numbered 0..n-1 with `chunk_count`
    of them, and the published snapshot's keyword and vector indexes hold exactly these
    chunks, each once. Returns the snapshot's version."""
    chunk_ids: list[int] = []
    with db.session_scope(s) as session:
        for doc_id in ids:
            doc = documents.get(session, doc_id)
            assert doc is not None and doc.status == DocStatus.ready and doc.version == 1
            rows = chunk_repo.for_document(session, doc_id)
            assert [c.ordinal for c in rows] == list(range(len(rows))), doc_id
            assert doc.chunk_count == len(rows) > 0, doc_id
            chunk_ids += [int(c.id) for c in rows if c.id is not None]
    manifest = read_manifest(s.indexes_dir, lib)
    assert manifest is not None and manifest.count == len(chunk_ids)
    snap = load_snapshot(s.indexes_dir, lib, manifest)
    keyword_ids = snap.chunk_ids.tolist()
    vector_ids = faiss.vector_to_array(snap.vectors.index.id_map).tolist()
    assert len(set(keyword_ids)) == len(keyword_ids) and len(set(vector_ids)) == len(vector_ids)
    assert sorted(keyword_ids) == sorted(vector_ids) == sorted(chunk_ids)
    return manifest.version


# --- Redis restarted during a batch ---------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_redis_restart_during_a_batch_loses_nothing(
    database_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """Redis keeps its queue only in memory. Killed mid-batch, the queued messages are gone;
    uploads meanwhile are still accepted (rows and originals are committed before the 202) and
    the workers' reconciler re-enqueues everything from the database once Redis is back. Every
    document ends ready exactly once."""
    redis.Redis.from_url(private_redis.url).flushdb()
    s = _settings(tmp_path / "data", database_url, private_redis.url)
    worker = WorkerProcess(s, tmp_path / "worker.log")
    worker.start()
    try:
        with TestClient(create_app(s)) as client:
            token = _sign_in(s, client)
            lib = _library(client, token, "redis-drill")
            run = uuid.uuid4().hex[:6]
            words = [f"batch{i}x{run}" for i in range(20)]
            batch = [(f"{w}.txt", _note(w, 6000)) for w in words]
            ids = _accepted(_upload(client, token, lib, batch))

            def queued() -> int:
                with db.session_scope(s) as session:
                    return documents.counts_by_status(session, lib).get(DocStatus.queued, 0)

            deadline = time.monotonic() + 300
            while queued() > len(ids) - 2:  # mid-batch: the worker has started on two
                assert time.monotonic() < deadline, "the worker never started"
                time.sleep(0.05)
            private_redis.kill()
            waiting = queued()
            assert waiting >= 3, f"the batch ended too soon: {waiting} documents queued"

            # While Redis is down: uploads are accepted, promptly, and say nothing is lost.
            late = [f"outage{i}x{run}" for i in range(4)]
            started = time.monotonic()
            late_ids = _accepted(
                _upload(client, token, lib, [(f"{w}.txt", _note(w)) for w in late])
            )
            outage_upload = time.monotonic() - started
            assert outage_upload < 30
            status = client.get(f"{V1}/system/status", headers=auth(token))
            assert status.status_code == 200, status.text
            assert status.json()["queue"]["ok"] is False and status.json()["queue"]["error"]
            time.sleep(3)  # the worker's reconciler meets the outage too

            private_redis.start()  # same port, empty: every queued message is lost
            back = time.monotonic()
            done = _wait_ready(s, ids + late_ids, timeout=300)
            print(
                f"\nredis drill: upload during the outage answered in {outage_upload:.2f} s; "
                f"all {len(done)} documents ready {time.monotonic() - back:.1f} s after Redis "
                "came back"
            )
            assert len(done) == len(words) + len(late)
            with db.session_scope(s) as session:
                _, total = documents.list_for_library(session, lib, limit=1000)
            assert total == len(words) + len(late)  # no document twice, none missing
            _index_holds_exactly(s, lib, ids + late_ids)
            for word, doc_id in zip(words[:2] + late[-2:], ids[:2] + late_ids[-2:], strict=True):
                assert _found(client, token, lib, word) == {doc_id}, word
        assert worker.proc is not None and worker.proc.poll() is None, "the worker survived"
    finally:
        worker.stop()
        db.dispose_engines()
        if private_redis.proc is None or private_redis.proc.poll() is not None:
            private_redis.start()  # for the other drills


# --- the model server stopped, then started again -------------------------------------------

HANDBOOK = {
    "leave.md": "# Annual leave\n\nEmployees get 15 days of annual leave per year. "
    "Leave requests go through the HR portal.\n",
    "travel.md": "# Travel\n\nTravel expenses above 5000 yuan need director approval.\n",
}
# A question the bundled 135M model answers (for some it echoes the passages, and a stop
# sequence then leaves nothing; see test_chat.py).
QUESTION = "How many days of annual leave do employees get?"


def _ask(client: TestClient, token: str) -> httpx.Response:
    return client.post(f"{V1}/chat", json={"question": QUESTION}, headers=auth(token))


def _main_replicas(client: TestClient, token: str) -> list[dict[str, Any]]:
    r = client.get(f"{V1}/system/status", headers=auth(token))
    assert r.status_code == 200, r.text
    return list(r.json()["models"]["main"]["replicas"])


@pytest.mark.vllm
@pytest.mark.timeout(1800)  # two model-server start-ups on a busy machine
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_stopped_model_server_gives_clear_errors_and_is_used_again_when_back(
    database_url: str,
    private_redis: PrivateRedis,
    own_model_server: OwnModelServer,
    tmp_path: Path,
) -> None:
    from cli.ingest_cmd import ingest_paths

    url = own_model_server.wait()
    s = _settings(
        tmp_path / "data",
        database_url,
        private_redis.url,
        main_base_urls=url,
        main_model="zhiku-main",
        main_tokenizer=str(TEST_MODEL),
        main_read_timeout=120.0,
        answer_max_tokens=96,
    )
    folder = tmp_path / "Handbook"
    folder.mkdir()
    for name, text in HANDBOOK.items():
        (folder / name).write_text(text, encoding="utf-8")
    assert not ingest_paths(s, [folder], "Handbook", True, True, True, 0).failures
    try:
        with TestClient(create_app(s)) as client:
            token = _sign_in(s, client)
            first = _ask(client, token)
            assert first.status_code == 200, first.text
            assert first.json()["answer"].strip() and not first.json()["not_found"], first.json()

            own_model_server.stop()
            started = time.monotonic()
            down = _ask(client, token)
            took = time.monotonic() - started
            assert down.status_code == 503, down.text
            error = down.json()["error"]
            assert error["code"] == "model_unavailable" and "try again" in error["message"]
            assert down.headers["retry-after"]
            assert took < 30, f"the 503 took {took:.1f} s"
            for _ in range(5):  # enough failures to open the replica's circuit breaker
                assert _ask(client, token).status_code == 503
            (replica,) = _main_replicas(client, token)
            assert replica["up"] is False and replica["error"], replica

            own_model_server.restart()  # the same port; the app is not touched
            back = time.monotonic()
            while True:  # the same app instance must find the server again by itself
                again = _ask(client, token)
                if again.status_code == 200:
                    break
                assert again.status_code == 503, again.text
                # Health checks every 10 s, an open circuit half-opens after 15 s; the rest of
                # the bound is for a model server starved of CPU on a busy shared machine.
                assert time.monotonic() - back < 300, "not used again 300 s after it came back"
                time.sleep(2)
            recovered = time.monotonic() - back
            assert again.json()["answer"].strip(), again.json()
            (replica,) = _main_replicas(client, token)
            assert replica["up"] is True, replica
            print(
                f"\nmodel server: 503 in {took:.2f} s; answers again {recovered:.1f} s after "
                "it was back up"
            )
    finally:
        db.dispose_engines()


# --- the data disk fills up -----------------------------------------------------------------

DISK_BYTES = 64 * MB


@contextlib.contextmanager
def small_disk(where: Path, size: int) -> Iterator[Path]:
    """A real file system of `size` bytes (tmpfs) mounted at `where`."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the disk-full drill needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


class Filler:
    """Takes up a disk's free space with a file of zeros, down to what a drill wants left."""

    def __init__(self, disk: Path) -> None:
        self.path = disk / "filler.bin"
        self.path.touch()

    def leave(self, free: int) -> int:
        """Grow or shrink the filler until about `free` bytes are left (0: the disk is full);
        returns what is free now."""
        now = shutil.disk_usage(self.path.parent).free
        if now < free:
            size = self.path.stat().st_size
            os.truncate(self.path, max(0, size - (free - now)))
        elif now > free:
            block = b"\0" * MB
            left = now - free
            with self.path.open("ab") as f:
                try:
                    while left > 0:
                        left -= f.write(block[: min(MB, left)])
                    f.flush()
                except OSError:
                    pass  # the disk is full
        return shutil.disk_usage(self.path.parent).free

    def remove(self) -> None:
        self.path.unlink()


def _leftovers(s: Settings) -> list[str]:
    """Partial files an interrupted write could leave: temporary copies and uploads."""
    tmp = list(s.originals_dir.rglob(".tmp-*")) if s.originals_dir.exists() else []
    uploads = list(s.tmp_dir.glob("upload-*")) if s.tmp_dir.exists() else []
    return [str(p) for p in tmp + uploads]


def _originals_match_documents(s: Settings) -> None:
    """Every stored original belongs to a document, and every document has its original."""
    stored = {p.name for p in s.originals_dir.rglob("*") if p.is_file()}
    with db.session_scope(s) as session:
        rows, _ = documents.list_for_library(session, 1, limit=1000)
        digests = {d.sha256 for d in rows}
    assert stored == digests


def _disk_full(r: httpx.Response) -> str:
    assert r.status_code == 507, r.text
    error = r.json()["error"]
    assert error["code"] == "disk_full" and "free space" in error["message"], error
    return str(error["message"])


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_full_disk_refuses_uploads_clearly_and_corrupts_nothing(
    database_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """The data dir (originals, indexes, upload temp files, and with SQLite the database) on a
    64 MB file system. Below ZHIKU_MIN_FREE_BYTES uploads are refused up front; when the disk
    really runs out mid-upload the upload is refused and nothing of it stays; a document
    accepted before waits (not failed) until there is room; existing documents stay
    searchable and the index and database intact; once space is freed all works again."""
    redis.Redis.from_url(private_redis.url).flushdb()
    sqlite = database_url.startswith("sqlite")
    with small_disk(tmp_path / "disk", DISK_BYTES) as disk:
        # SQLite lives in the data dir, as in the embedded default (`make run`).
        s = _settings(
            disk / "data",
            None if sqlite else database_url,
            private_redis.url,
            min_free_bytes=16 * MB,
        )
        worker = WorkerProcess(s, tmp_path / "worker.log")
        worker.start()
        try:
            with (
                TestClient(create_app(s)) as client,
                TestClient(create_app(s.model_copy(update={"min_free_bytes": 0}))) as raw,
            ):
                token = _sign_in(s, client)
                lib = _library(client, token, "disk-drill")
                assert lib == 1
                run = uuid.uuid4().hex[:6]
                words = [f"before{i}x{run}" for i in range(2)]
                before = _accepted(
                    _upload(client, token, lib, [(f"{w}.txt", _note(w)) for w in words])
                )
                _wait_ready(s, before, timeout=180)
                version = _index_holds_exactly(s, lib, before)

                # Accepted while the worker is held (stopped with SIGSTOP, its model loaded):
                # it will meet the full disk.
                assert worker.proc is not None
                os.killpg(worker.proc.pid, signal.SIGSTOP)
                waiting_word = f"waiting{run}"
                (waiting,) = _accepted(
                    _upload(client, token, lib, [("waiting.txt", _note(waiting_word))])
                )

                filler = Filler(disk)
                # 1. Below the threshold: refused before a byte is read, with what to do.
                assert filler.leave(8 * MB) < 16 * MB
                message = _disk_full(_upload(client, token, lib, [("late.txt", _note("late"))]))
                assert "ZHIKU_MIN_FREE_BYTES" in message and "administrator" in message
                assert _found(client, token, lib, words[0]) == {before[0]}

                # 2. The disk runs out while an upload's temporary copy is written.
                assert filler.leave(1 * MB) < 2 * MB
                _disk_full(
                    _upload(
                        token=token,
                        client=raw,
                        lib=lib,
                        files=[
                            ("big.txt", _note(f"big{run}", 2 * MB)),
                        ],
                    )
                )
                # 3. ... and while the originals are stored: the first file of the upload
                # fits, the second does not; neither stays (no rows, no originals).
                free = filler.leave(3 * MB)
                assert 2 * MB < free < 4 * MB, free
                _disk_full(
                    _upload(
                        raw,
                        token,
                        lib,
                        [
                            ("fits.txt", _note(f"fits{run}", MB // 2)),
                            ("too-big.txt", _note(f"toobig{run}", MB + MB // 4)),
                        ],
                    )
                )
                assert not _leftovers(s), _leftovers(s)
                _originals_match_documents(s)
                with db.session_scope(s) as session:
                    assert documents.list_for_library(session, lib)[1] == 3

                # 4. Completely full: the waiting document must wait, not fail.
                filler.leave(0)
                worker_log = tmp_path / "worker.log"
                os.killpg(worker.proc.pid, signal.SIGCONT)
                started = time.monotonic()
                seen: set[DocStatus] = set()
                while True:
                    doc = _docs(s, [waiting])[waiting]
                    seen.add(doc.status)
                    assert doc.status not in (DocStatus.failed, DocStatus.ready), doc.reason
                    met = "disk is full" in worker_log.read_text(errors="replace")
                    if met and time.monotonic() - started > 10:
                        break  # the worker met the full disk and kept retrying
                    assert time.monotonic() - started < 120, "the worker never met the full disk"
                    time.sleep(0.5)
                if not sqlite:
                    # PostgreSQL has its own disk: the chunks were stored; publishing the
                    # index hit the full disk, and that is retried, not recorded as failure.
                    assert DocStatus.indexing in seen, seen
                    assert "index not published, the disk is full" in worker_log.read_text()
                _disk_full(_upload(client, token, lib, [("late.txt", _note("late"))]))
                searched = client.post(
                    f"{V1}/search",
                    json={"query": words[1], "library_ids": [lib], "mode": "bm25"},
                    headers=auth(token),
                )
                # With SQLite on the full disk, a search cannot write its audit event: a clear
                # 507, never a 500. Elsewhere the search just works.
                if searched.status_code != 200:
                    _disk_full(searched)
                manifest = read_manifest(s.indexes_dir, lib)
                assert manifest is not None and manifest.version == version
                load_snapshot(s.indexes_dir, lib, manifest)  # the published snapshot is whole

                # 5. Space is freed: the waiting document and new uploads go through.
                filler.remove()
                _wait_ready(s, [waiting], timeout=240)
                after_word = f"after{run}"
                after = _accepted(_upload(client, token, lib, [("after.txt", _note(after_word))]))
                _wait_ready(s, after, timeout=180)
                ids = [*before, waiting, *after]
                _index_holds_exactly(s, lib, ids)
                for word, doc_id in [
                    (words[0], before[0]),
                    (waiting_word, waiting),
                    (after_word, after[0]),
                ]:
                    assert _found(client, token, lib, word) == {doc_id}, word
                assert not _leftovers(s), _leftovers(s)
                _originals_match_documents(s)
        finally:
            if worker.proc is not None and worker.proc.poll() is None:
                os.killpg(worker.proc.pid, signal.SIGCONT)
            worker.stop()
            db.dispose_engines()
        if sqlite:
            with contextlib.closing(sqlite3.connect(s.data_dir / "zhiku.db")) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
