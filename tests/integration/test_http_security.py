"""HTTP hardening: security headers on every response (JSON, errors, 500s, health), no-store on
API answers, HSTS only over https, CORS closed by default and open only to configured origins,
no CDN-backed doc pages, no stack traces, and streamed bodies passed on unbuffered."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from api.app import create_app
from api.http_security import CONTENT_SECURITY_POLICY, SecurityHeadersMiddleware
from tests.integration.api_helpers import V1, auth

pytestmark = pytest.mark.integration

EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
ALLOWED_ORIGIN = "https://oa.example.com"
OTHER_ORIGIN = "https://evil.example"


def assert_hardened(headers: Mapping[str, str]) -> None:
    for name, value in EXPECTED.items():
        assert headers[name] == value, name


def test_csp_is_the_documented_policy() -> None:
    assert CONTENT_SECURITY_POLICY == (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def test_headers_on_json_error_and_health_responses(
    app_client: TestClient, admin_token: str
) -> None:
    ok = app_client.get(f"{V1}/libraries", headers=auth(admin_token))
    assert ok.status_code == 200
    assert_hardened(ok.headers)
    assert ok.headers["cache-control"] == "no-store"

    unauthorized = app_client.get(f"{V1}/libraries")
    assert unauthorized.status_code == 401
    assert_hardened(unauthorized.headers)
    assert unauthorized.headers["cache-control"] == "no-store"

    missing = app_client.get(f"{V1}/no-such-thing", headers=auth(admin_token))
    assert missing.status_code == 404
    assert_hardened(missing.headers)

    v1_compat = app_client.get("/v1/models")
    assert_hardened(v1_compat.headers)
    assert v1_compat.headers["cache-control"] == "no-store"

    health = app_client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert_hardened(health.headers)
    assert "cache-control" not in health.headers  # not an API answer
    assert "strict-transport-security" not in health.headers  # plain http


def test_hsts_only_over_https(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings, migrate=False)
    with TestClient(app, base_url="https://testserver") as client:
        r = client.get("/healthz")
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert_hardened(r.headers)


def test_route_set_headers_are_kept(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings, migrate=False)

    @app.get(f"{V1}/test-cached")
    def cached() -> JSONResponse:
        return JSONResponse(
            {"ok": True},
            headers={"Cache-Control": "private, max-age=60", "Content-Security-Policy": "sandbox"},
        )

    with TestClient(app) as client:
        r = client.get(f"{V1}/test-cached")
    assert r.headers["cache-control"] == "private, max-age=60"
    assert r.headers["content-security-policy"] == "sandbox"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers.get_list("cache-control") == ["private, max-age=60"]  # not doubled


def test_no_cdn_doc_pages_but_the_openapi_schema(app_client: TestClient) -> None:
    assert app_client.get("/docs").status_code == 404
    assert app_client.get("/redoc").status_code == 404
    schema = app_client.get("/openapi.json")
    assert schema.status_code == 200
    assert f"{V1}/search" in schema.json()["paths"]
    assert_hardened(schema.headers)


def preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        f"{V1}/libraries",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )


def test_cors_is_closed_by_default(app_client: TestClient, admin_token: str) -> None:
    r = preflight(app_client, OTHER_ORIGIN)
    assert "access-control-allow-origin" not in r.headers
    assert_hardened(r.headers)
    got = app_client.get(f"{V1}/libraries", headers={"Origin": OTHER_ORIGIN, **auth(admin_token)})
    assert got.status_code == 200
    assert not [h for h in got.headers if h.lower().startswith("access-control-")]


def test_cors_opens_only_to_configured_origins(settings, admin_token: str) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"cors_origins": f" {ALLOWED_ORIGIN}/ , https://b.example"})
    with TestClient(create_app(s, migrate=False)) as client:
        allowed = preflight(client, ALLOWED_ORIGIN)
        assert allowed.status_code == 200
        h = allowed.headers
        assert h["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert h["access-control-allow-credentials"] == "true"
        methods = {m.strip() for m in h["access-control-allow-methods"].split(",")}
        assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE"}
        allowed_headers = h["access-control-allow-headers"].lower()
        for name in ("authorization", "content-type", "x-csrf-token", "x-zhiku-user"):
            assert name in allowed_headers
        assert_hardened(h)

        other = preflight(client, OTHER_ORIGIN)
        assert "access-control-allow-origin" not in other.headers

        got = client.get(f"{V1}/libraries", headers={"Origin": ALLOWED_ORIGIN, **auth(admin_token)})
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert got.headers["access-control-allow-credentials"] == "true"
        assert_hardened(got.headers)

        not_allowed = client.get(
            f"{V1}/libraries", headers={"Origin": OTHER_ORIGIN, **auth(admin_token)}
        )
        assert "access-control-allow-origin" not in not_allowed.headers


def test_500_is_generic_json_without_a_trace(settings) -> None:  # type: ignore[no-untyped-def]
    s = settings.model_copy(update={"cors_origins": ALLOWED_ORIGIN})
    app = create_app(s, migrate=False)
    secret = "db password is hunter2 at /srv/zhiku/secret.py line 42"

    @app.get(f"{V1}/test-boom")
    def boom() -> dict[str, str]:
        raise RuntimeError(secret)

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get(f"{V1}/test-boom", headers={"Origin": ALLOWED_ORIGIN})
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "error": {
            "code": "internal",
            "message": "something went wrong on the server; it has been logged",
        }
    }
    assert "Traceback" not in r.text and "hunter2" not in r.text and "RuntimeError" not in r.text
    # the hardening wraps Starlette's error middleware, so a 500 carries it too
    assert_hardened(r.headers)
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


def test_streamed_responses_get_headers_and_stay_streamed(settings) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings, migrate=False)

    @app.get(f"{V1}/test-stream")
    def stream() -> StreamingResponse:
        return StreamingResponse(
            (f"data: {i}\n\n" for i in range(3)), media_type="text/event-stream"
        )

    with TestClient(app) as client, client.stream("GET", f"{V1}/test-stream") as r:
        assert_hardened(r.headers)
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "".join(r.iter_text()) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_middleware_passes_each_body_message_through_at_once() -> None:
    """No buffering: each body chunk reaches the server before the app sends the next."""
    seen: list[Message] = []
    chunks_seen_when_sending: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            chunks_seen_when_sending.append(len(seen))
            await send({"type": "http.response.body", "body": b"x%d" % i, "more_body": i < 2})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        seen.append(message)

    scope: Scope = {"type": "http", "path": "/api/v1/chat", "scheme": "http", "headers": []}
    asyncio.run(SecurityHeadersMiddleware(app)(scope, receive, send))
    assert chunks_seen_when_sending == [1, 2, 3]
    assert [m["type"] for m in seen] == ["http.response.start"] + ["http.response.body"] * 3
    names = {k.decode().lower() for k, _ in seen[0]["headers"]}
    assert {"content-security-policy", "cache-control", "x-frame-options"} <= names


def test_app_built_without_cors_sends_no_cors_headers() -> None:
    """A bare app wrapped the same way, no settings origins: nothing CORS at all."""
    from api import http_security
    from core.settings import Settings

    app = FastAPI()

    @app.get("/x")
    def x() -> dict[str, int]:
        return {"x": 1}

    http_security.install(app, Settings(cors_origins=""))
    with TestClient(app) as client:
        r = client.get("/x", headers={"Origin": OTHER_ORIGIN})
    assert r.json() == {"x": 1}
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    assert_hardened(r.headers)
