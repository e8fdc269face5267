"""API keys for office systems: who may create them, scopes, expiry, revocation, act_as and
the audit trail of requests made with a key."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import select

from core import db
from core.models import ApiKey, AuditEvent, utcnow
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration


def _library(client: TestClient, admin: str, name: str) -> int:
    r = client.post(f"{V1}/libraries", json={"name": name}, headers=auth(admin))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _grant(client: TestClient, admin: str, lib: int, uid: int, perm: str) -> None:
    r = client.post(
        f"{V1}/libraries/{lib}/grants",
        json={"user_id": uid, "permission": perm},
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text


def _key(client: TestClient, token: str, **body):  # type: ignore[no-untyped-def]
    return client.post(f"{V1}/api-keys", json={"name": "OA", **body}, headers=auth(token))


def test_who_creates_keys_and_what_they_see(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    mine = _library(app_client, admin_token, "Mine")
    theirs = _library(app_client, admin_token, "Theirs")
    libr_id, librarian = create_user(app_client, admin_token, "libby", role="librarian")
    staff_id, staff = create_user(app_client, admin_token, "stan")
    _grant(app_client, admin_token, mine, libr_id, "manage")
    _grant(app_client, admin_token, theirs, libr_id, "read")
    assert _key(app_client, staff, library_ids=[mine]).status_code == 403
    # Librarians name libraries they manage.
    assert _key(app_client, librarian).status_code == 422
    assert _key(app_client, librarian, library_ids=[theirs]).status_code == 403
    hidden = _library(app_client, admin_token, "Hidden")
    assert _key(app_client, librarian, library_ids=[hidden]).status_code == 404
    r = _key(app_client, librarian, library_ids=[mine], scopes=["search"])
    assert r.status_code == 201, r.text
    created = r.json()
    plaintext = created["key"]
    assert plaintext.startswith("zk_key_") and created["prefix"] == plaintext[:13]
    # Shown once: listings never carry it, and only its hash is stored.
    listed = app_client.get(f"{V1}/api-keys", headers=auth(librarian)).json()
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    assert plaintext not in app_client.get(f"{V1}/api-keys", headers=auth(admin_token)).text
    with db.session_scope(settings) as s:
        row = s.get(ApiKey, created["id"])
        assert row is not None and plaintext not in (row.key_hash, row.prefix)
    # Another librarian's key is not there for them.
    other_id, other = create_user(app_client, admin_token, "olive", role="librarian")
    assert app_client.get(f"{V1}/api-keys/{created['id']}", headers=auth(other)).status_code == 404
    assert (
        app_client.delete(f"{V1}/api-keys/{created['id']}", headers=auth(other)).status_code == 404
    )

    # The key works within its scope and library only.
    key = auth(plaintext)
    assert [x["id"] for x in app_client.get(f"{V1}/libraries", headers=key).json()] == [mine]
    assert app_client.get(f"{V1}/libraries/{theirs}", headers=key).status_code == 404
    r = app_client.post(f"{V1}/search", json={"query": "leave"}, headers=key)
    assert r.status_code == 200 and r.json()["library_ids"] == [mine]
    r = app_client.post(f"{V1}/chat", json={"question": "leave?"}, headers=key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    r = app_client.post(
        f"{V1}/libraries/{mine}/documents", files=[("files", ("a.txt", b"x"))], headers=key
    )
    assert r.status_code == 403
    for method, path in (("GET", "/users"), ("GET", "/api-keys"), ("GET", "/auth/me")):
        r = app_client.request(method, f"{V1}{path}", headers=key)
        assert r.status_code == 403 and r.json()["error"]["code"] == "user_session_required"
    # Requests with a key are audited under it.
    with db.session_scope(settings) as s:
        ev = s.exec(select(AuditEvent).where(AuditEvent.action == "search")).one()
        assert ev.actor_api_key_id == created["id"] and ev.actor_user_id == libr_id
        fetched = s.get(ApiKey, created["id"])
        assert fetched is not None and fetched.last_used_at is not None
    # Revoked: the next request fails.
    r = app_client.delete(f"{V1}/api-keys/{created['id']}", headers=auth(librarian))
    assert r.status_code == 204
    assert app_client.get(f"{V1}/libraries", headers=key).status_code == 401
    with db.session_scope(settings) as s:
        actions = [e.action for e in s.exec(select(AuditEvent)) if e.action.startswith("api_key")]
    assert actions == ["api_key.create", "api_key.revoke"]
    # Losing the grant narrows an existing key at once.
    r = _key(app_client, librarian, library_ids=[mine], scopes=["search"])
    key2 = auth(r.json()["key"])
    with db.session_scope(settings) as s:
        from core.models import LibraryGrant

        g = s.exec(
            select(LibraryGrant).where(
                LibraryGrant.user_id == libr_id, LibraryGrant.library_id == mine
            )
        ).one()
        gid = g.id
    assert (
        app_client.delete(
            f"{V1}/libraries/{mine}/grants/{gid}", headers=auth(admin_token)
        ).status_code
        == 204
    )
    assert app_client.get(f"{V1}/libraries", headers=key2).json() == []
    assert staff_id and other_id


def test_expired_key_is_refused(app_client: TestClient, admin_token: str, settings) -> None:  # type: ignore[no-untyped-def]
    r = _key(app_client, admin_token, expires_in_days=1)
    assert r.status_code == 201
    with db.session_scope(settings) as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == r.json()["id"])  # type: ignore[arg-type]
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert app_client.get(f"{V1}/libraries", headers=auth(r.json()["key"])).status_code == 401


def test_act_as_sees_the_intersection_and_is_audited_as_both(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    a = _library(app_client, admin_token, "A")
    b = _library(app_client, admin_token, "B")
    c = _library(app_client, admin_token, "C")
    alice_id, _ = create_user(app_client, admin_token, "alice")
    _grant(app_client, admin_token, a, alice_id, "read")
    _grant(app_client, admin_token, c, alice_id, "read")
    plain = _key(app_client, admin_token, library_ids=[a, b], scopes=["search"]).json()["key"]
    r = app_client.get(f"{V1}/libraries", headers={**auth(plain), "X-Zhiku-User": "alice"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "missing_scope"
    key = _key(app_client, admin_token, library_ids=[a, b], scopes=["search", "act_as"]).json()
    as_alice = {**auth(key["key"]), "X-Zhiku-User": "alice"}
    # The key alone: A and B; alice alone: A and C; together: A only.
    assert {
        x["id"] for x in app_client.get(f"{V1}/libraries", headers=auth(key["key"])).json()
    } == {a, b}
    assert [x["id"] for x in app_client.get(f"{V1}/libraries", headers=as_alice).json()] == [a]
    assert app_client.get(f"{V1}/libraries/{c}", headers=as_alice).status_code == 404
    assert app_client.get(f"{V1}/libraries/{b}", headers=as_alice).status_code == 404
    r = app_client.post(f"{V1}/search", json={"query": "x", "library_ids": [b]}, headers=as_alice)
    assert r.status_code == 404
    r = app_client.post(f"{V1}/search", json={"query": "x"}, headers=as_alice)
    assert r.status_code == 200 and r.json()["library_ids"] == [a]
    r = app_client.get(f"{V1}/libraries", headers={**auth(key["key"]), "X-Zhiku-User": "ghost"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "act_as_denied"
    # A user token cannot act for someone else.
    r = app_client.get(f"{V1}/libraries", headers={**auth(admin_token), "X-Zhiku-User": "alice"})
    assert r.status_code == 403
    with db.session_scope(settings) as s:
        ev = s.exec(select(AuditEvent).where(AuditEvent.action == "search")).one()
        admin_id = s.get(ApiKey, key["id"]).owner_id  # type: ignore[union-attr]
    assert ev.actor_user_id == alice_id and ev.actor_api_key_id == key["id"]
    assert ev.detail["key_owner_id"] == admin_id
