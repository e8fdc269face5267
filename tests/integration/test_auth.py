"""Identity: password policy, lockout, web sessions with CSRF, forced password change, idle
expiry, disabling and resetting accounts, generated secrets."""

from __future__ import annotations

import json
import stat
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api.app import create_app
from core import db
from core.models import AuditEvent, AuthToken, Role
from core.repo import users
from tests.integration.api_helpers import PASSWORD, V1, auth, create_user

pytestmark = pytest.mark.integration


def _events(settings, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    from sqlmodel import select

    with db.session_scope(settings) as s:
        return list(s.exec(select(AuditEvent).where(AuditEvent.action == action)))


def _login(client: TestClient, name: str, password: str):  # type: ignore[no-untyped-def]
    return client.post(f"{V1}/auth/login", json={"username": name, "password": password})


@pytest.mark.parametrize(
    ("name", "password", "why"),
    [
        ("alice", "short-pass", "too short"),
        ("alice.wong", "alice.wong12", "username"),
        ("alice", "Password1234", "common"),
        ("alice", "123456789012345", "common"),
        ("alice", "aaaaaaaaaaaaaaa", "common"),
    ],
)
def test_password_policy(
    app_client: TestClient, admin_token: str, name: str, password: str, why: str
) -> None:
    r = app_client.post(
        f"{V1}/users", json={"username": name, "password": password}, headers=auth(admin_token)
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "weak_password"
    assert why in r.json()["error"]["message"]


def test_lockout_after_repeated_failures_and_unlock(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    uid, _ = create_user(app_client, admin_token, "victim")
    for _ in range(settings.login_max_failures):
        assert _login(app_client, "victim", "wrong password!").status_code == 401
    # Locked: even the right password is refused, with when to try again.
    r = _login(app_client, "victim", PASSWORD)
    assert r.status_code == 429 and r.json()["error"]["code"] == "account_locked"
    assert int(r.headers["Retry-After"]) > 0
    assert len(_events(settings, "login.failure")) == settings.login_max_failures
    assert len(_events(settings, "login.lockout")) == 1
    assert len(_events(settings, "login.locked")) == 1
    # A name that does not exist behaves exactly the same (no enumeration).
    for _ in range(settings.login_max_failures):
        assert _login(app_client, "nobody-here", "wrong password!").status_code == 401
    assert _login(app_client, "nobody-here", "wrong password!").status_code == 429
    # An admin lifts the lockout.
    assert app_client.post(f"{V1}/users/{uid}/unlock", headers=auth(admin_token)).status_code == 204
    assert _login(app_client, "victim", PASSWORD).status_code == 200
    assert len(_events(settings, "user.unlock")) == 1


def test_throttle_per_client_address(settings, admin_token: str, app_client: TestClient) -> None:  # type: ignore[no-untyped-def]
    strict = settings.model_copy(update={"login_ip_max_failures": 3, "login_max_failures": 50})
    with TestClient(create_app(strict)) as client:
        for i in range(3):
            assert _login(client, f"someone{i}", "wrong password!").status_code == 401
        r = _login(client, "root-admin", "correct horse battery")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_web_session_cookie_and_csrf(app_client: TestClient, admin_token: str) -> None:
    create_user(app_client, admin_token, "webby")
    r = app_client.post(f"{V1}/auth/session", json={"username": "webby", "password": PASSWORD})
    assert r.status_code == 200, r.text
    csrf = r.json()["csrf_token"]
    cookies = r.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("zhiku_session="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    assert "Secure" not in session_cookie  # plain http in the test; https sets it
    client = app_client  # the test client keeps cookies
    assert client.get(f"{V1}/auth/me").json()["username"] == "webby"
    # State-changing requests need the CSRF token bound to this session.
    r = client.post(f"{V1}/search", json={"query": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
    r = client.post(f"{V1}/search", json={"query": "x"}, headers={"X-CSRF-Token": "f" * 64})
    assert r.status_code == 403
    r = client.post(f"{V1}/search", json={"query": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    # Logout revokes the session itself, not just the cookie.
    stolen = client.cookies.get("zhiku_session")
    assert client.post(f"{V1}/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    client.cookies.set("zhiku_session", stolen or "")
    assert client.get(f"{V1}/auth/me").status_code == 401
    client.cookies.clear()
    # A bearer token is not a cookie session and vice versa.
    token = _login(client, "webby", PASSWORD).json()["access_token"]
    client.cookies.set("zhiku_session", token)
    assert client.get(f"{V1}/auth/me").status_code == 401
    client.cookies.clear()


def test_first_sign_in_must_change_password(
    app_client: TestClient, admin_token: str, settings
) -> None:  # type: ignore[no-untyped-def]
    r = app_client.post(
        f"{V1}/users",
        json={"username": "newbie", "password": "temporary passphrase 1"},
        headers=auth(admin_token),
    )
    assert r.status_code == 201 and r.json()["must_change_password"] is True
    login = _login(app_client, "newbie", "temporary passphrase 1").json()
    assert login["must_change_password"] is True
    token = login["access_token"]
    r = app_client.get(f"{V1}/libraries", headers=auth(token))
    assert r.status_code == 403 and r.json()["error"]["code"] == "password_change_required"
    assert app_client.get(f"{V1}/auth/me", headers=auth(token)).status_code == 200
    r = app_client.post(
        f"{V1}/auth/password",
        json={"current_password": "wrong one entirely", "new_password": "my own passphrase 9"},
        headers=auth(token),
    )
    assert r.status_code == 401
    r = app_client.post(
        f"{V1}/auth/password",
        json={"current_password": "temporary passphrase 1", "new_password": "newbie"},
        headers=auth(token),
    )
    assert r.status_code == 422
    r = app_client.post(
        f"{V1}/auth/password",
        json={"current_password": "temporary passphrase 1", "new_password": "my own passphrase 9"},
        headers=auth(token),
    )
    assert r.status_code == 204, r.text
    assert app_client.get(f"{V1}/libraries", headers=auth(token)).status_code == 200
    assert _login(app_client, "newbie", "my own passphrase 9").status_code == 200
    assert len(_events(settings, "password.change")) == 1


def test_idle_and_absolute_expiry(app_client: TestClient, admin_token: str, settings) -> None:  # type: ignore[no-untyped-def]
    _, token = create_user(app_client, admin_token, "sleepy")
    assert app_client.get(f"{V1}/auth/me", headers=auth(token)).status_code == 200
    from core.models import utcnow
    from core.security import token_digest

    with db.session_scope(settings) as s:
        s.execute(
            update(AuthToken)
            .where(AuthToken.token_hash == token_digest(token))  # type: ignore[arg-type]
            .values(last_seen_at=utcnow() - timedelta(minutes=settings.session_idle_minutes + 1))
        )
    assert app_client.get(f"{V1}/auth/me", headers=auth(token)).status_code == 401
    _, token2 = create_user(app_client, admin_token, "oldtimer")
    with db.session_scope(settings) as s:
        s.execute(
            update(AuthToken)
            .where(AuthToken.token_hash == token_digest(token2))  # type: ignore[arg-type]
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert app_client.get(f"{V1}/auth/me", headers=auth(token2)).status_code == 401


def test_disable_and_reset_end_sign_ins(app_client: TestClient, admin_token: str, settings) -> None:  # type: ignore[no-untyped-def]
    uid, token = create_user(app_client, admin_token, "leaver")
    r = app_client.patch(f"{V1}/users/{uid}", json={"is_active": False}, headers=auth(admin_token))
    assert r.status_code == 200 and r.json()["is_active"] is False
    assert app_client.get(f"{V1}/auth/me", headers=auth(token)).status_code == 401
    assert _login(app_client, "leaver", PASSWORD).status_code == 401
    assert len(_events(settings, "user.disable")) == 1
    app_client.patch(f"{V1}/users/{uid}", json={"is_active": True}, headers=auth(admin_token))
    token = _login(app_client, "leaver", PASSWORD).json()["access_token"]
    r = app_client.post(
        f"{V1}/users/{uid}/password",
        json={"password": "a temporary one 42"},
        headers=auth(admin_token),
    )
    assert r.status_code == 204
    assert app_client.get(f"{V1}/auth/me", headers=auth(token)).status_code == 401
    assert _login(app_client, "leaver", "a temporary one 42").json()["must_change_password"]
    # The last administrator cannot be demoted or disabled.
    me = app_client.get(f"{V1}/auth/me", headers=auth(admin_token)).json()
    r = app_client.patch(
        f"{V1}/users/{me['id']}", json={"role": "staff"}, headers=auth(admin_token)
    )
    assert r.status_code == 409


def test_secrets_generated_private_and_stable(settings) -> None:  # type: ignore[no-untyped-def]
    create_app(settings)
    path = settings.data_dir / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(path.read_text())
    assert len(first["csrf_key"]) == 64
    path.chmod(0o644)
    create_app(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == first
    # No account exists until someone creates one: there is no default password.
    with db.session_scope(settings) as s:
        assert users.list_users(s) == []


def test_rate_limit_per_user(settings, admin_token: str, app_client: TestClient) -> None:  # type: ignore[no-untyped-def]
    tight = settings.model_copy(update={"rate_limit_per_minute": 5})
    with TestClient(create_app(tight)) as client:
        codes = [
            client.get(f"{V1}/auth/me", headers=auth(admin_token)).status_code for _ in range(7)
        ]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        r = client.get(f"{V1}/auth/me", headers=auth(admin_token))
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.json()["error"]["code"] == "rate_limited"


def test_roles_in_accounts(app_client: TestClient, admin_token: str, settings) -> None:  # type: ignore[no-untyped-def]
    uid, lib_token = create_user(app_client, admin_token, "libby", role="librarian")
    me = app_client.get(f"{V1}/auth/me", headers=auth(lib_token)).json()
    assert me["role"] == "librarian" and me["is_admin"] is False
    # Librarians may list accounts (to grant) but not create or change them.
    assert app_client.get(f"{V1}/users", headers=auth(lib_token)).status_code == 200
    r = app_client.patch(f"{V1}/users/{uid}", json={"role": "admin"}, headers=auth(lib_token))
    assert r.status_code == 403
    with db.session_scope(settings) as s:
        user = users.get(s, uid)
        assert user is not None and user.role == Role.librarian
