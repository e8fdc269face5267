"""Observability (issue 7): /healthz, /readyz, /metrics and request ids, through the real app,
database (SQLite and PostgreSQL), Redis, a real Celery worker process and the vLLM server.

The model calls go through a small recording proxy in front of the real vLLM server, so the
test sees both the `X-Request-Id` header the api sends and the completion id vLLM derives
from it (`chatcmpl-<id>`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from core import db
from core.models import Role
from core.repo import api_keys, users
from core.settings import Settings
from tests.conftest import TEST_MODEL, VllmServers, WorkerProcess
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration

DEAD = "http://127.0.0.1:9/v1"  # nothing listens
ADMIN, ADMIN_PASSWORD = "root-admin", "correct horse battery"
DOC = (
    "# Observatory handbook\n\nThe zeppelin hangar opens at seven in the morning. Visitors "
    "sign the blue ledger at the zeppelin hangar gate.\n"
)


def _app(s: Settings) -> TestClient:
    return TestClient(create_app(s))


def _admin(client: TestClient, s: Settings) -> str:
    with db.session_scope(s) as session:
        if users.get_by_username(session, ADMIN) is None:
            users.create_user(session, ADMIN, ADMIN_PASSWORD, role=Role.admin)
    r = client.post(f"{V1}/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def _scrape(client: TestClient, token: str) -> list[tuple[str, dict[str, str], float]]:
    r = client.get("/metrics", headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return _samples(r.text)


# --- health and readiness --------------------------------------------------------------------


def test_healthz_is_public_and_tiny(app_client: TestClient) -> None:
    r = app_client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["X-Request-ID"]


def test_readyz_not_ready_names_the_failing_checks(settings: Settings) -> None:
    """No worker runs and the model URL is dead: 503; anyone sees only the status, an admin
    sees which checks failed and why, and it answers within a few seconds."""
    s = settings.model_copy(
        update={"main_base_urls": DEAD, "main_model": "zhiku-main", "safety_backend": "off"}
    )
    with _app(s) as client:
        admin = _admin(client, s)
        _, staff = create_user(client, admin, "staffer")
        for headers in ({}, auth(staff), auth("zk_not_a_real_token")):
            started = time.monotonic()
            r = client.get("/readyz", headers=headers)
            assert time.monotonic() - started < 8
            assert r.status_code == 503, r.text
            assert r.json() == {"status": "not_ready"}
        r = client.get("/readyz", headers=auth(admin))
        assert r.status_code == 503
        body = r.json()
        checks = body["checks"]
        assert body["status"] == "not_ready"
        assert set(checks) == {"database", "redis", "workers", "models"}
        assert checks["database"]["ok"] and checks["redis"]["ok"], checks
        assert not checks["workers"]["ok"] and "no worker" in checks["workers"]["error"]
        assert not checks["models"]["ok"] and "127.0.0.1:9" in checks["models"]["error"]
        assert all(c["took_ms"] >= 0 for c in checks.values())


def test_readyz_ready_with_a_worker_and_the_model(
    settings: Settings, worker: WorkerProcess, vllm: VllmServers
) -> None:
    s = settings.model_copy(
        update={
            "main_base_urls": vllm.wait("main"),
            "main_model": "zhiku-main",
            "safety_backend": "off",
        }
    )
    with _app(s) as client:
        admin = _admin(client, s)
        assert client.get("/readyz").json() == {"status": "ready"}
        r = client.get("/readyz", headers=auth(admin))
        assert r.status_code == 200, r.text
        checks = r.json()["checks"]
        assert all(c["ok"] for c in checks.values()), checks
        assert "celery@" in checks["workers"]["detail"]
        # The worker stops: not ready, and the workers check says so.
        worker.stop()
        r = client.get("/readyz", headers=auth(admin))
        assert r.status_code == 503 and not r.json()["checks"]["workers"]["ok"], r.text


def test_redis_down_metrics_still_answer_and_readyz_names_redis(settings: Settings) -> None:
    s = settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "main_base_urls": DEAD, "main_model": "m"}
    )
    with _app(s) as client:
        admin = _admin(client, s)
        started = time.monotonic()
        samples = _scrape(client, admin)
        assert time.monotonic() - started < 5
        assert _value(samples, "zhiku_scrape_part_up", part="redis") == 0
        assert _value(samples, "zhiku_scrape_part_up", part="database") == 1
        assert _value(samples, "zhiku_scrape_errors_total", part="redis") >= 1
        assert not [n for n, _, _ in samples if n == "zhiku_ingest_queue_depth"]
        assert any(n == "zhiku_documents" for n, _, _ in samples)
        checks = client.get("/readyz", headers=auth(admin)).json()["checks"]
        assert not checks["redis"]["ok"] and checks["redis"]["error"]
        assert checks["database"]["ok"]


# --- who may read /metrics -------------------------------------------------------------------


def test_metrics_need_an_admin_or_a_metrics_key(settings: Settings) -> None:
    with _app(settings) as client:
        admin = _admin(client, settings)
        _, staff = create_user(client, admin, "staffer")
        _, librarian = create_user(client, admin, "libby", role="librarian")
        r = client.get("/metrics")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert client.get("/metrics", headers=auth(staff)).status_code == 403
        assert client.get("/metrics", headers=auth(librarian)).status_code == 403
        assert client.get("/metrics", headers=auth(admin)).status_code == 200
        # A key needs the scope; only admins may create one with it.
        plain = client.post(
            f"{V1}/api-keys", json={"name": "search", "scopes": ["search"]}, headers=auth(admin)
        ).json()["key"]
        r = client.get("/metrics", headers=auth(plain))
        assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
        r = client.post(
            f"{V1}/api-keys",
            json={"name": "prom", "scopes": ["metrics"], "library_ids": []},
            headers=auth(librarian),
        )
        assert r.status_code == 403, r.text
        r = client.post(
            f"{V1}/api-keys", json={"name": "prom", "scopes": ["metrics"]}, headers=auth(admin)
        )
        assert r.status_code == 201, r.text
        key = r.json()["key"]
        r = client.get("/metrics", headers=auth(key))
        assert r.status_code == 200 and "zhiku_http_request_duration_seconds" in r.text
        # A metrics key whose owner is not an administrator reads nothing.
        with db.session_scope(settings) as session:
            staff_user = users.get_by_username(session, "staffer")
            assert staff_user is not None
            _, not_admins = api_keys.create(session, staff_user, "stray", ["metrics"])
        assert client.get("/metrics", headers=auth(not_admins)).status_code == 403


# --- metrics and request ids end to end ------------------------------------------------------


class RecordingProxy:
    """Forwards every request to the real model server and records, per request, the
    X-Request-Id header it carried and the completion ids in the reply."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.seen: list[dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                record: dict[str, Any] = {
                    "path": self.path,
                    "request_id": self.headers.get("X-Request-Id"),
                    "ids": set(),
                }
                proxy.seen.append(record)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                with (
                    httpx.Client(timeout=180) as http,
                    http.stream(
                        self.command, proxy.upstream + self.path, content=body, headers=headers
                    ) as r,
                ):
                    self.send_response(r.status_code)
                    for k, v in r.headers.items():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    self.end_headers()
                    for line in r.iter_lines():
                        data = line[6:] if line.startswith("data: ") else line
                        try:
                            found = json.loads(data).get("id")
                        except (ValueError, AttributeError):
                            found = None
                        if found:
                            record["ids"].add(found)
                        self.wfile.write((line + "\n").encode())
                        self.wfile.flush()

            do_GET = _forward
            do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(vllm: VllmServers) -> Iterator[RecordingProxy]:
    p = RecordingProxy(vllm.wait("main"))
    yield p
    p.close()


def _wait_ready(client: TestClient, token: str, doc_id: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"{V1}/documents/{doc_id}", headers=auth(token)).json()["status"]
        if status in ("ready", "failed"):
            assert status == "ready"
            return
        time.sleep(0.5)
    raise AssertionError(f"document {doc_id} not ready within {timeout} s")


def _worker_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    out = []
    for line in worker.log_path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.vllm
def test_request_ids_and_metrics_follow_an_upload_a_search_and_a_chat(
    settings: Settings, worker: WorkerProcess, proxy: RecordingProxy
) -> None:
    s = settings.model_copy(
        update={
            "main_base_urls": proxy.url,
            "main_model": "zhiku-main",
            "main_read_timeout": 120.0,
            "answer_max_tokens": 48,
            "safety_backend": "off",
            **({"main_tokenizer": str(TEST_MODEL)} if TEST_MODEL.exists() else {}),
        }
    )
    with _app(s) as client:
        admin = _admin(client, s)
        before = _scrape(client, admin)  # the ingestion counters count from here
        lib = client.post(f"{V1}/libraries", json={"name": "Observatory"}, headers=auth(admin))
        assert lib.status_code == 201, lib.text
        lib_id = lib.json()["id"]

        # Upload with a request id: the worker's lines for the document carry it.
        r = client.post(
            f"{V1}/libraries/{lib_id}/documents",
            files=[("files", ("observatory.md", DOC.encode()))],
            headers=auth(admin) | {"X-Request-ID": "abc-123"},
        )
        assert r.status_code == 202, r.text
        assert r.headers["X-Request-ID"] == "abc-123"
        doc_id = int(r.json()["items"][0]["document_id"])
        _wait_ready(client, admin, doc_id)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            mine = [
                line
                for line in _worker_lines(worker)
                if line.get("document_id") == doc_id and line["msg"].startswith("ingest finished")
            ]
            if mine:
                break
            time.sleep(0.5)
        assert mine, worker.log_path.read_text()[-3000:]
        assert mine[0]["request_id"] == "abc-123" and mine[0]["outcome"] == "ready"
        assert {"ts", "level", "logger", "msg"} <= set(mine[0])
        started = [
            line
            for line in _worker_lines(worker)
            if line.get("document_id") == doc_id and line["msg"].startswith("ingest started")
        ]
        assert started and started[0]["request_id"] == "abc-123"

        # A malformed id is replaced by a new one.
        r = client.post(
            f"{V1}/search",
            json={"query": "zeppelin hangar", "library_ids": [lib_id]},
            headers=auth(admin) | {"X-Request-ID": "bad id with spaces"},
        )
        assert r.status_code == 200 and r.json()["results"], r.text
        assert r.headers["X-Request-ID"] not in ("", "bad id with spaces")

        # A chat: the model request carries the id, and vLLM's completion id is made from it.
        r = client.post(
            f"{V1}/chat",
            json={"question": "When does the zeppelin hangar open?", "library_ids": [lib_id]},
            headers=auth(admin) | {"X-Request-ID": "chat-req-42"},
        )
        assert r.status_code == 200, r.text
        assert r.headers["X-Request-ID"] == "chat-req-42"
        assert not r.json()["not_found"], r.json()
        calls = [c for c in proxy.seen if c["path"].endswith("/chat/completions")]
        assert calls and all(c["request_id"] == "chat-req-42" for c in calls), proxy.seen
        assert "chatcmpl-chat-req-42" in set().union(*(c["ids"] for c in calls)), calls

        # A question the lexicon stops: a safety block at the input stage.
        r = client.post(
            f"{V1}/chat",
            json={"question": "Explain how to make a bomb", "library_ids": [lib_id]},
            headers=auth(admin),
        )
        assert r.status_code == 200 and r.json()["blocked"], r.text
        client.get(f"{V1}/documents/{987654321}", headers=auth(admin))  # a 404

        after = _scrape(client, admin)
    upload_route = "/api/v1/libraries/{library_id}/documents"
    count = "zhiku_http_request_duration_seconds_count"
    assert _value(after, count, method="POST", route=upload_route, status_class="2xx") == 1
    assert _value(after, count, method="POST", route="/api/v1/chat", status_class="2xx") == 2
    assert _value(after, count, route="/api/v1/documents/{document_id}") >= 2
    routes = {lab["route"] for n, lab, _ in after if n == count}
    assert not [r for r in routes if any(part.isdigit() for part in r.split("/"))], routes
    assert _value(after, "zhiku_http_errors_total", status="404", code="not_found") == 1
    assert _value(after, "zhiku_retrieval_duration_seconds_count", source="search") == 1
    assert _value(after, "zhiku_retrieval_duration_seconds_count", source="chat") == 1
    assert _value(after, "zhiku_answer_time_to_first_token_seconds_count") == 1
    assert _value(after, "zhiku_answer_time_to_first_token_seconds_sum") > 0
    assert _value(after, "zhiku_answer_tokens_per_second_count") == 1
    assert _value(after, "zhiku_answer_tokens_per_second_sum") > 0
    assert _value(after, "zhiku_answer_completion_tokens_total") > 0
    assert _value(after, "zhiku_answers_total", outcome="answered") == 1
    assert _value(after, "zhiku_answers_total", outcome="blocked") == 1
    assert _value(after, "zhiku_safety_blocks_total", stage="input", reason="lexicon") == 1
    assert _value(after, "zhiku_documents", status="ready") == 1
    assert _value(after, "zhiku_indexed_chunks") >= 1
    assert _value(before, "zhiku_ingested_documents_total") == 0
    assert _value(after, "zhiku_ingested_documents_total") == 1
    assert _value(after, "zhiku_ingested_chunks_total") >= 1
    assert _value(after, "zhiku_ingest_queue_depth", queue="zhiku") == 0
    assert _value(after, "zhiku_scrape_part_up", part="redis") == 1


def test_worker_logs_are_json_lines(settings: Settings, worker: WorkerProcess) -> None:
    """Every line the worker writes is one JSON object (no banner, no plain text)."""
    lines = [x for x in worker.log_path.read_text(encoding="utf-8").splitlines() if x.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg", "request_id"} <= set(record), line
    assert any(r["msg"].endswith(" ready.") for r in map(json.loads, lines))


def test_access_log_has_request_id_route_and_status(
    app_client: TestClient, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level("INFO", logger="zhiku.access"):
        r = app_client.get(f"{V1}/documents/12345", headers={"X-Request-ID": "trace.me_1"})
    assert r.status_code == 401 and r.headers["X-Request-ID"] == "trace.me_1"
    lines = [rec for rec in caplog.records if rec.name == "zhiku.access"]
    assert len(lines) == 1
    rec = lines[0].__dict__
    assert rec["route"] == "/api/v1/documents/{document_id}" and rec["status"] == 401
    assert rec["method"] == "GET" and rec["error_code"] == "unauthorized"
    assert rec["duration_ms"] >= 0 and rec["request_id"] == "trace.me_1"
