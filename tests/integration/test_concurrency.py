"""Many requests at once against a real uvicorn server, on SQLite and PostgreSQL.

The database pool holds 15 connections (5 + 10 overflow). A request that kept its connection
while it awaited something (the next dependency in the threadpool, an upload's body) let a burst
of requests take them all; the next checkout then blocked the event loop that would have given
them back, for the pool's 30 s timeout, and answered 500. The load test of 50 chat streams found
it. Every status here must be a success: a 500 or a client timeout is the failure.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from core import db
from core.repo import tokens as sign_ins
from core.repo import users
from core.settings import Settings
from tests.integration.api_helpers import V1, auth, serving

BURST = 60
UPLOADS = 24  # more than the pool's 15 connections, all inside their body at once


def _statuses(responses: list[httpx.Response | BaseException]) -> Counter[str]:
    return Counter(
        str(r.status_code) if isinstance(r, httpx.Response) else type(r).__name__ for r in responses
    )


def test_a_burst_of_signed_in_requests(
    settings: Settings, app_client: TestClient, admin_token: str
) -> None:
    with db.session_scope(settings) as session:  # signed in without 60 password hashes
        staff = [
            users.create_user(session, f"burst{i}", None, auth_source="ldap") for i in range(BURST)
        ]
        session.flush()
        tokens = [sign_ins.issue(session, user, 1) for user in staff]
    fast = settings.model_copy(update={"rate_limit_per_minute": 10_000})

    async def burst(base: str) -> list[httpx.Response | BaseException]:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            calls = [client.get(f"{V1}/conversations", headers=auth(t)) for t in tokens]
            calls += [client.get(f"{V1}/libraries", headers=auth(t)) for t in tokens]
            return await asyncio.gather(*calls, return_exceptions=True)

    with serving(create_app(fast, migrate=False)) as base:
        statuses = _statuses(asyncio.run(burst(base)))
    assert statuses == Counter({"200": 2 * BURST}), statuses


def _multipart(boundary: str, name: str, text: str) -> tuple[bytes, bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    return head + text.encode(), f"\r\n--{boundary}--\r\n".encode()


def test_slow_uploads_at_once_do_not_hold_the_pool(
    settings: Settings, app_client: TestClient, admin_token: str
) -> None:
    lib = app_client.post(f"{V1}/libraries", json={"name": "burst"}, headers=auth(admin_token))
    assert lib.status_code == 201, lib.text
    lib_id = lib.json()["id"]
    fast = settings.model_copy(update={"rate_limit_per_minute": 10_000})
    boundary = "zhikuburstboundary"
    all_started = asyncio.Event()
    started = 0

    async def body(i: int) -> AsyncIterator[bytes]:
        nonlocal started
        first, last = _multipart(boundary, f"note-{i}.txt", f"Burst upload number {i}. " * 20)
        yield first
        started += 1
        if started == UPLOADS:
            all_started.set()
        # Every upload is inside its body before any of them ends it.
        await asyncio.wait_for(all_started.wait(), 60)
        await asyncio.sleep(0.5)
        yield last

    async def uploads(base: str) -> list[httpx.Response | BaseException]:
        headers = {
            **auth(admin_token),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        limits = httpx.Limits(max_connections=UPLOADS + 1)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
            calls = [
                client.post(f"{V1}/libraries/{lib_id}/documents", content=body(i), headers=headers)
                for i in range(UPLOADS)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    with serving(create_app(fast, migrate=False)) as base:
        results = asyncio.run(uploads(base))
    assert _statuses(results) == Counter({"202": UPLOADS}), [
        r.text[:200] if isinstance(r, httpx.Response) else repr(r) for r in results
    ]
    listed = app_client.get(
        f"{V1}/libraries/{lib_id}/documents", params={"limit": 100}, headers=auth(admin_token)
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == UPLOADS
