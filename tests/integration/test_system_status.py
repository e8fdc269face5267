"""GET /api/v1/system/status: workers (a real Celery worker), the ingest queue in Redis,
documents by status, the model servers, per-library indexes (a real ingestion) and the disk —
and it answers within about 5 s with each part's own error when Redis, workers or model servers
are dead or hang.

Its Redis database is one of its own: workers of other tests (on the shared test database)
would answer the broadcast too (kombu prefixes broadcasts with the database number)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api import system_status
from api.app import create_app
from core import db, tasks
from core.models import DocStatus, Document
from core.settings import Settings
from tests.conftest import TEST_REDIS_URL, WorkerProcess
from tests.integration.api_helpers import V1, auth, create_user, serving
from workers.batch import run_inline

pytestmark = pytest.mark.integration

STATUS = f"{V1}/system/status"
DEAD_MODEL = "http://127.0.0.1:9/v1"  # nothing listens
BUDGET = 5.0  # seconds the whole call may take


@pytest.fixture
def redis_url() -> str:
    """A Redis database of this module's own (see the module docstring)."""
    url = TEST_REDIS_URL.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(url).flushdb()
    return url


def _status(client: TestClient, token: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    r = client.get(STATUS, headers=auth(token))
    took = time.monotonic() - started
    assert r.status_code == 200, r.text
    return r.json(), took


def _add_documents(settings: Settings, library_id: int, statuses: list[DocStatus]) -> None:
    with db.session_scope(settings) as s:
        for i, status in enumerate(statuses):
            s.add(
                Document(
                    library_id=library_id,
                    sha256=f"{i:064x}",
                    filename=f"doc-{i}.txt",
                    status=status,
                )
            )


def test_with_a_worker(
    settings: Settings, worker: WorkerProcess, app_client: TestClient, admin_token: str
) -> None:
    c = app_client
    lib = c.post(f"{V1}/libraries", json={"name": "Counted"}, headers=auth(admin_token)).json()
    # terminal states only: the worker's reconciler leaves them alone
    _add_documents(settings, lib["id"], [DocStatus.ready, DocStatus.ready, DocStatus.failed])
    originals = settings.originals_dir / "ab"
    originals.mkdir(parents=True, exist_ok=True)
    (originals / "one").write_bytes(b"x" * 1000)
    (originals / "two").write_bytes(b"y" * 234)

    out, took = _status(c, admin_token)
    assert took < BUDGET, took
    workers = out["workers"]
    assert workers["ok"] is True and workers["error"] is None, workers
    assert workers["online"] == 1
    (only,) = workers["workers"]
    assert only["name"].startswith("celery@") and only["active_tasks"] == 0
    assert out["queue"] == {
        "ok": True,
        "error": None,
        "took_ms": out["queue"]["took_ms"],
        "name": tasks.INGEST_QUEUE,
        "depth": 0,
        "unacked": 0,
    }
    docs = out["documents"]
    assert docs["ok"] is True and docs["total"] == 3
    assert docs["by_status"] == {s.value: 0 for s in DocStatus} | {"ready": 2, "failed": 1}
    disk = out["disk"]
    assert disk["ok"] is True and disk["originals_bytes"] == 1234 and disk["originals_complete"]
    assert disk["total_bytes"] >= disk["used_bytes"] > 0 and disk["free_bytes"] > 0
    assert out["indexes"]["libraries"] == [
        {
            "library_id": lib["id"],
            "library_name": "Counted",
            "chunks": 0,
            "vectors": None,
            "vectors_en": None,
            "version": None,
            "bytes": 0,
            "error": None,
        }
    ]
    # nothing configured: the main model part says so
    models = out["models"]
    assert models["ok"] is False and "no main model server" in models["error"]
    assert models["main"] == {
        "role": "main",
        "configured": False,
        "model": None,
        "note": None,
        "replicas": [],
    }
    assert models["safety"]["configured"] is False
    assert "classifier" in models["safety"]["note"]


def test_without_workers_the_queue_fills(
    settings: Settings, app_client: TestClient, admin_token: str
) -> None:
    """No worker listens on this Redis database: none online, and what is enqueued (by the real
    Celery producer, to kombu's list named after the queue) waits there."""
    for doc_id in (1, 2, 3):
        tasks.enqueue_ingest(doc_id, 1, settings)
    out, took = _status(app_client, admin_token)
    assert took < BUDGET
    workers = out["workers"]
    assert (workers["ok"], workers["online"], workers["workers"]) == (False, 0, [])
    assert workers["error"] == "no worker answered within 1 s"
    assert out["queue"]["ok"] is True and out["queue"]["depth"] == 3
    assert redis.Redis.from_url(settings.redis_url).llen(tasks.INGEST_QUEUE) == 3


def test_indexes_after_a_real_ingestion(
    settings: Settings, app_client: TestClient, admin_token: str
) -> None:
    c, admin = app_client, auth(admin_token)
    libs = [
        c.post(f"{V1}/libraries", json={"name": n}, headers=admin).json()["id"]
        for n in ("Indexed", "Empty", "Damaged")
    ]
    text = "# Leave\n\nStaff get ten days of leave a year. Part-timers get leave pro rata.\n"
    report = c.post(
        f"{V1}/libraries/{libs[0]}/documents",
        files=[("files", ("leave.md", text.encode()))],
        headers=admin,
    ).json()
    doc_id = report["items"][0]["document_id"]
    (result,) = run_inline(settings, libs[0], [(doc_id, 1)])
    damaged = settings.indexes_dir / str(libs[2])
    damaged.mkdir(parents=True)
    (damaged / "manifest.json").write_text("{not json")

    out, _ = _status(c, admin_token)
    indexes = out["indexes"]
    by_id = {x["library_id"]: x for x in indexes["libraries"]}
    assert list(by_id) == libs
    indexed = by_id[libs[0]]
    chunks = c.get(f"{V1}/documents/{doc_id}/chunks", headers=admin).json()
    assert indexed["chunks"] == len(chunks) > 0
    assert indexed["vectors"] == len(chunks) and indexed["version"] >= 1
    on_disk = sum(
        p.stat().st_size for p in (settings.indexes_dir / str(libs[0])).rglob("*") if p.is_file()
    )
    assert indexed["bytes"] == on_disk > 0 and indexed["error"] is None
    assert by_id[libs[1]]["version"] is None and by_id[libs[1]]["bytes"] == 0
    assert by_id[libs[2]]["error"].startswith("JSONDecodeError")
    assert indexes["ok"] is False and f"library {libs[2]}: JSONDecodeError" in indexes["error"]
    assert indexes["total_bytes"] == on_disk + len("{not json")
    assert out["documents"]["by_status"]["ready"] == 1, result


def test_dead_redis_and_model_server(settings: Settings, admin_token: str) -> None:
    dead = settings.model_copy(
        update={
            "redis_url": "redis://127.0.0.1:9/0",
            "main_base_urls": DEAD_MODEL,
            "main_model": "zhiku-main",
        }
    )
    with TestClient(create_app(dead, migrate=False)) as c:
        out, took = _status(c, admin_token)
    assert took < BUDGET, took
    for part in ("workers", "queue"):
        assert out[part]["ok"] is False and "ConnectionError" in out[part]["error"], out[part]
    assert out["workers"]["online"] == 0 and out["queue"]["depth"] is None
    (replica,) = out["models"]["main"]["replicas"]
    assert replica["url"] == DEAD_MODEL and replica["up"] is False
    assert replica["error"].startswith("ConnectError") and replica["serves_model"] is None
    assert out["models"]["ok"] is False and DEAD_MODEL in out["models"]["error"]
    # the parts that do not need them still answer
    assert out["documents"]["ok"] is True and out["disk"]["ok"] is True
    assert out["indexes"]["ok"] is True


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never says a
    word: a hung Redis or model server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def test_hung_redis_and_model_server_answer_in_time(settings: Settings, admin_token: str) -> None:
    with silent_server() as port:
        hung = settings.model_copy(
            update={
                "redis_url": f"redis://127.0.0.1:{port}/0",
                "main_base_urls": f"http://127.0.0.1:{port}/v1",
                "main_model": "zhiku-main",
                "safety_backend": "guard",
                "safety_base_urls": DEAD_MODEL,
                "safety_model": "guard",
            }
        )
        with TestClient(create_app(hung, migrate=False)) as c:
            # the rate limiter waits for Redis once, then counts in memory for a while: that
            # first wait is not the status report's
            assert c.get(f"{V1}/auth/me", headers=auth(admin_token)).status_code == 200
            out, took = _status(c, admin_token)
    assert took < BUDGET, took
    for part in ("workers", "queue"):
        assert out[part]["ok"] is False and "Timeout" in out[part]["error"], out[part]
    (main,) = out["models"]["main"]["replicas"]
    assert main["up"] is False and "Timeout" in main["error"], main
    (safety,) = out["models"]["safety"]["replicas"]
    assert safety["up"] is False and safety["error"].startswith("ConnectError")
    assert out["documents"]["ok"] is True


def test_a_model_server_that_answers(
    settings: Settings, app_client: TestClient, admin_token: str
) -> None:
    """A real OpenAI-compatible server: Zhiku's own /v1 facade (which lists the model
    `zhiku`), asked with an API key, as the status asks a vLLM server with main_api_key."""
    key = app_client.post(
        f"{V1}/api-keys", json={"name": "probe", "scopes": ["chat"]}, headers=auth(admin_token)
    ).json()["key"]
    with serving(create_app(settings, migrate=False)) as base:
        for model, serves in (("zhiku", True), ("zhiku-main", False)):
            up = settings.model_copy(
                update={
                    "main_base_urls": f"{base}/v1,{DEAD_MODEL}",
                    "main_model": model,
                    "main_api_key": key,
                }
            )
            with TestClient(create_app(up, migrate=False)) as c:
                out, _ = _status(c, admin_token)
            live, dead = out["models"]["main"]["replicas"]
            assert (live["url"], live["up"], live["serves_model"]) == (f"{base}/v1", True, serves)
            assert live["response_ms"] > 0
            assert dead["up"] is False
            if serves:
                assert live["error"] is None
            else:
                assert live["error"] == "does not serve 'zhiku-main' (it serves zhiku)"
            assert out["models"]["main"]["model"] == model
        # without the key the server refuses: down, with the reason
        nokey = settings.model_copy(update={"main_base_urls": f"{base}/v1", "main_model": "zhiku"})
        with TestClient(create_app(nokey, migrate=False)) as c:
            out, _ = _status(c, admin_token)
        (replica,) = out["models"]["main"]["replicas"]
        assert replica["up"] is False and replica["error"] == f"HTTP 401 from {base}/v1/models"


def test_only_admins(settings: Settings, app_client: TestClient, admin_token: str) -> None:
    c = app_client
    for name, role in (("lib", "librarian"), ("ann", "staff")):
        _, token = create_user(c, admin_token, name, role)
        r = c.get(STATUS, headers=auth(token))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    key = c.post(f"{V1}/api-keys", json={"name": "k"}, headers=auth(admin_token)).json()["key"]
    r = c.get(STATUS, headers=auth(key))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "user_session_required")
    assert c.get(STATUS).status_code == 401


def test_a_part_past_the_deadline_is_reported_not_awaited(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(_: Settings) -> system_status.DiskStatus:
        release.wait(30)
        return system_status.DiskStatus(ok=True)

    monkeypatch.setitem(system_status.PARTS, "disk", (stuck, system_status.DiskStatus))
    try:
        started = time.monotonic()
        out = system_status.collect(settings, deadline=1.5)
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 2.5, took
    assert out.disk.ok is False and out.disk.error == "no answer within 1.5 s"
    assert out.documents.ok is True and out.queue.ok is True
