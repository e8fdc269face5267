"""Scale-out with the real components (docs/scale-out.md): two Celery worker processes and two
api processes (uvicorn, own ports) on one broker, one PostgreSQL database and one data dir,
as replicas on several machines share them.

- A batch uploaded through one api is ingested by both workers: every document ready once,
  no chunk twice, the index holding each chunk once.
- The other api replica finds what was ingested, and picks up a new index version by itself.
- A sign-in made on one replica works on the other; the rate limit counts across both
  (another user than the one above, so the admin's earlier requests do not count).
- The image's health checks (deploy/healthcheck.py) see a live api and a live worker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import db
from core.models import DocStatus, Role
from core.repo import chunks as chunk_repo
from core.repo import documents, users
from retrieval.index_store import read_manifest
from tests.conftest import REPO, WorkerProcess, _free_port, settings_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]
V1 = "/api/v1"
ADMIN = ("scale-admin", "correct horse battery staple")
SERVE = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1"]
RATE_LIMIT = 60  # requests per user and minute, on both replicas
WORDS = [
    "aurora",
    "basalt",
    "cobalt",
    "dahlia",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kestrel",
    "lantern",
]


class ApiReplica:
    """`zhiku serve` in its own process on a free port, like one api container."""

    def __init__(self, settings: Any, log_path: Path, extra_env: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**settings_env(settings), **extra_env}
        self.proc = subprocess.Popen(
            [*SERVE, "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"api exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"api did not start: {self.log_path.read_text()[-3000:]}")

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)


@pytest.fixture
def cluster(
    settings: Any, tmp_path: Path
) -> Iterator[tuple[list[WorkerProcess], list[ApiReplica]]]:
    import redis

    redis.Redis.from_url(settings.redis_url).flushdb()  # no stale jobs from earlier tests
    workers = [WorkerProcess(settings, tmp_path / f"worker-{i}.log") for i in (1, 2)]
    extra = {"ZHIKU_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT)}
    apis = [ApiReplica(settings, tmp_path / f"api-{n}.log", extra) for n in ("a", "b")]
    errors: list[BaseException] = []

    def start(w: WorkerProcess) -> None:
        try:
            w.start(timeout=300)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(w,)) for w in workers]
    try:
        for t in threads:
            t.start()
        for api in apis:
            api.wait_ready()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        yield workers, apis
    finally:
        for t in threads:
            t.join()
        for api in apis:
            api.stop()
        for w in workers:
            w.stop()


def _document(i: int, word: str) -> tuple[str, bytes]:
    body = (
        f"# Procedure zk{word}\n\n"
        f"The zk{word} procedure tells team {i} how to file its quarterly report. "
        f"Collect the receipts of the quarter, check them against the ledger of team {i}, "
        f"and send the summary to the finance office before the tenth day of the month.\n\n"
        f"## Exceptions\n\nTravel abroad needs the approval of the head of team {i}; "
        f"the zk{word} form lists who signs. 出差需要第{i}组组长批准。\n"
    )
    return f"procedure-{word}.md", body.encode()


def _wait_terminal(settings: Any, ids: list[int], timeout: float) -> dict[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        with db.session_scope(settings) as s:
            docs = {i: documents.get(s, i) for i in ids}
            for d in docs.values():
                if d is not None:
                    s.expunge(d)
        if all(
            d is not None and d.status in (DocStatus.ready, DocStatus.failed) for d in docs.values()
        ):
            return docs
        if time.monotonic() > deadline:
            pending = {i: d.status for i, d in docs.items() if d is not None}
            raise AssertionError(f"not finished after {timeout}s: {pending}")
        time.sleep(0.5)


def _hits(client: httpx.Client, query: str, lib: int) -> list[int]:
    r = client.post(f"{V1}/search", json={"query": query, "library_ids": [lib], "top_k": 3})
    assert r.status_code == 200, r.text
    return [int(p["document_id"]) for p in r.json()["results"]]


def _ingest_task_successes(log: Path) -> int:
    return sum(
        1
        for line in log.read_text(errors="replace").splitlines()
        if "zhiku.ingest_document[" in line and "succeeded" in line
    )


def test_workers_and_api_replicas_share_the_work(
    settings: Any, cluster: tuple[list[WorkerProcess], list[ApiReplica]]
) -> None:
    workers, (api_a, api_b) = cluster
    with db.session_scope(settings) as s:
        users.create_user(s, ADMIN[0], ADMIN[1], role=Role.admin)

    # A sign-in made on replica A is good on replica B (tokens live in the database).
    login = api_a.client().post(
        f"{V1}/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    a, b = api_a.client(token), api_b.client(token)
    me = b.get(f"{V1}/auth/me")
    assert me.status_code == 200 and me.json()["username"] == ADMIN[0], me.text

    r = a.post(f"{V1}/libraries", json={"name": "scale-out"})
    assert r.status_code == 201, r.text
    lib = int(r.json()["id"])

    # One batch through replica A; both workers take from the queue.
    files = [_document(i, w) for i, w in enumerate(WORDS)]
    r = a.post(
        f"{V1}/libraries/{lib}/documents",
        files=[("files", (name, body, "text/markdown")) for name, body in files],
    )
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert [i["status"] for i in items] == ["queued"] * len(WORDS), items
    ids = [int(i["document_id"]) for i in items]
    by_word = dict(zip(WORDS, ids, strict=True))
    docs = _wait_terminal(settings, ids, timeout=600)
    assert all(w.proc is not None and w.proc.poll() is None for w in workers)

    # Every document ready, once: first version, its chunks written once.
    with db.session_scope(settings) as s:
        all_chunks = []
        for doc_id, doc in docs.items():
            assert doc.status == DocStatus.ready, (doc.filename, doc.reason)
            assert doc.version == 1
            chunks = chunk_repo.for_document(s, doc_id)
            assert len(chunks) == doc.chunk_count > 0, doc.filename
            all_chunks += [(c.document_id, c.doc_version, c.ordinal) for c in chunks]
    dupes = [k for k, n in Counter(all_chunks).items() if n > 1]
    assert not dupes, f"chunks stored twice: {dupes}"
    manifest = read_manifest(settings.indexes_dir, lib)
    assert manifest is not None and manifest.count == len(all_chunks)

    # Both workers did part of it (each logs the ingestion tasks it finished).
    done = [_ingest_task_successes(w.log_path) for w in workers]
    assert all(n >= 1 for n in done), f"ingestion tasks per worker: {done}"
    assert sum(done) >= len(WORDS), done

    # Replica B, which never saw the upload, finds every document in the shared index.
    for word in (WORDS[0], WORDS[5], WORDS[-1]):
        assert _hits(b, f"zk{word} procedure", lib)[0] == by_word[word], word

    # A new index version (one more document through A) reaches B without a restart: B keeps
    # answering from the snapshot it holds and swaps in the new one when it notices.
    name, body = _document(99, "meridian")
    r = a.post(f"{V1}/libraries/{lib}/documents", files=[("files", (name, body, "text/markdown"))])
    assert r.status_code == 202, r.text
    new_id = int(r.json()["items"][0]["document_id"])
    assert _wait_terminal(settings, [new_id], timeout=300)[new_id].status == DocStatus.ready
    newer = read_manifest(settings.indexes_dir, lib)
    assert newer is not None and newer.version > manifest.version
    deadline = time.monotonic() + 60
    while new_id not in _hits(b, "zkmeridian procedure", lib):
        assert time.monotonic() < deadline, "replica B never loaded the new index version"
        time.sleep(2)
    assert _hits(b, "zkmeridian procedure", lib)[0] == new_id

    # The image's health checks, against these processes.
    check = [sys.executable, str(REPO / "deploy" / "healthcheck.py")]
    env = settings_env(settings)
    api_ok = subprocess.run([*check, "api", f"{api_a.url}/healthz"], env=env, check=False)
    assert api_ok.returncode == 0
    ok = subprocess.run([*check, "worker"], env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    dead = subprocess.run(
        [*check, "worker", "celery@no-such-worker"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert dead.returncode == 1 and "did not answer" in dead.stderr
    down = subprocess.run(
        [*check, "api", f"http://127.0.0.1:{_free_port()}/healthz"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 1

    _rate_limit_is_shared(settings, api_a, api_b)


def _rate_limit_is_shared(settings: Any, api_a: ApiReplica, api_b: ApiReplica) -> None:
    """A user's requests count in one window whichever replica serves them."""
    with db.session_scope(settings) as s:
        users.create_user(s, "scale-staff", ADMIN[1], role=Role.staff)
    login = api_b.client().post(
        f"{V1}/auth/login", json={"username": "scale-staff", "password": ADMIN[1]}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    a, b = api_a.client(token), api_b.client(token)
    first = RATE_LIMIT * 2 // 3
    for n in range(first):
        r = a.get(f"{V1}/auth/me")
        assert r.status_code == 200, (n, r.text)
    # Replica B has counted none of these itself, yet refuses once the shared window is full.
    allowed_on_b = 0
    refused = None
    for _ in range(RATE_LIMIT):
        r = b.get(f"{V1}/auth/me")
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
        allowed_on_b += 1
    assert refused is not None, "replica B never applied the limit reached through A"
    assert allowed_on_b <= RATE_LIMIT - first, allowed_on_b
    assert re.fullmatch(r"\d+", refused.headers.get("Retry-After", "")), refused.headers
    # ... and so does A now.
    assert a.get(f"{V1}/auth/me").status_code == 429
