"""Every security-relevant action leaves exactly one audit event, attributed to its actor."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from api.app import create_app
from core import db
from core.models import AuditEvent
from core.settings import Settings
from tests.integration.api_helpers import PASSWORD, V1, auth, create_user

pytestmark = pytest.mark.integration


def _ok(r, status: int = 200):  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    return r.json() if r.content else None


def test_each_action_is_audited_exactly_once(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    # A model nobody serves: the one question asked is answered "not found" before any call.
    dead = settings.model_copy(
        update={"main_base_urls": "http://127.0.0.1:9/v1", "main_model": "zhiku-main"}
    )
    with TestClient(create_app(dead)) as c:
        _actions(c, admin_token, settings)


def _actions(c: TestClient, admin_token: str, settings: Settings) -> None:
    admin = auth(admin_token)
    with db.session_scope(settings) as s:
        before = {e.id for e in s.exec(select(AuditEvent))}

    lib = _ok(c.post(f"{V1}/libraries", json={"name": "Audited"}, headers=admin), 201)["id"]
    uid, token = create_user(c, admin_token, "ann")  # user.create + login.success
    gid = _ok(c.post(f"{V1}/groups", json={"name": "Ops"}, headers=admin), 201)["id"]
    _ok(c.patch(f"{V1}/groups/{gid}", json={"name": "Operations"}, headers=admin))
    _ok(c.post(f"{V1}/groups/{gid}/members", json={"user_id": uid}, headers=admin))
    _ok(c.delete(f"{V1}/groups/{gid}/members/{uid}", headers=admin), 204)
    grant = _ok(
        c.post(
            f"{V1}/libraries/{lib}/grants",
            json={"user_id": uid, "permission": "read"},
            headers=admin,
        ),
        201,
    )
    up = _ok(
        c.post(
            f"{V1}/libraries/{lib}/documents",
            files=[("files", ("HR/pay.txt", b"salary bands for 2026"))],
            headers=admin,
        ),
        202,
    )
    doc = up["items"][0]["document_id"]
    scoped = _ok(
        c.post(
            f"{V1}/libraries/{lib}/scoped-grants",
            json={"group_id": gid, "document_id": doc},
            headers=admin,
        ),
        201,
    )
    _ok(c.delete(f"{V1}/libraries/{lib}/scoped-grants/{scoped['id']}", headers=admin), 204)
    _ok(c.post(f"{V1}/documents/{doc}/reingest", headers=admin), 202)
    _ok(c.delete(f"{V1}/documents/{doc}", headers=admin), 204)
    key = _ok(c.post(f"{V1}/api-keys", json={"name": "OA"}, headers=admin), 201)
    _ok(c.delete(f"{V1}/api-keys/{key['id']}", headers=admin), 204)
    _ok(c.post(f"{V1}/search", json={"query": "salary"}, headers=auth(token)))
    answer = _ok(c.post(f"{V1}/chat", json={"question": "天气怎么样？"}, headers=auth(token)))
    assert answer["not_found"] is True  # nothing readable matches: no model call
    _ok(c.delete(f"{V1}/libraries/{lib}/grants/{grant['id']}", headers=admin), 204)
    _ok(c.patch(f"{V1}/users/{uid}", json={"display_name": "Ann"}, headers=admin))
    _ok(
        c.post(
            f"{V1}/users/{uid}/password", json={"password": "fresh passphrase 77"}, headers=admin
        ),
        204,
    )
    _ok(c.patch(f"{V1}/users/{uid}", json={"is_active": False}, headers=admin))
    assert (
        c.post(f"{V1}/auth/login", json={"username": "ann", "password": PASSWORD}).status_code
        == 401
    )
    _ok(c.delete(f"{V1}/groups/{gid}", headers=admin), 204)
    _ok(c.post(f"{V1}/auth/logout", headers=admin), 204)

    with db.session_scope(settings) as s:
        events = [e for e in s.exec(select(AuditEvent)) if e.id not in before]
    counts = Counter(e.action for e in events)
    expected = {
        "library.create": 1,
        "user.create": 1,
        "login.success": 1,
        "group.create": 1,
        "group.update": 1,
        "group.member_add": 1,
        "group.member_remove": 1,
        "grant.set": 1,
        "document.upload": 1,
        "grant.scope_set": 1,
        "grant.scope_revoke": 1,
        "document.reingest": 1,
        "document.delete": 1,
        "api_key.create": 1,
        "api_key.revoke": 1,
        "search": 1,
        "ask": 1,
        "grant.revoke": 1,
        "user.update": 1,
        "user.password_reset": 1,
        "user.disable": 1,
        "login.failure": 1,
        "group.delete": 1,
        "logout": 1,
    }
    assert dict(counts) == expected
    by_action = {e.action: e for e in events}
    admin_id = by_action["library.create"].actor_user_id
    assert admin_id is not None
    for action in expected:
        if action in ("search", "ask", "login.success"):
            assert by_action[action].actor_user_id == uid
        elif action != "login.failure":
            assert by_action[action].actor_user_id == admin_id, action
    ask = by_action["ask"]
    assert ask.detail["libraries"] == [lib] and ask.detail["blocked"] is False
    assert ask.detail["documents"] == [] and ask.detail["not_found"] is True
    assert by_action["login.failure"].detail["username"] == "ann"
