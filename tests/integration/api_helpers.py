"""Small helpers for tests that drive the REST API."""

from __future__ import annotations

from fastapi.testclient import TestClient

V1 = "/api/v1"
PASSWORD = "a long passphrase"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_user(client: TestClient, admin: str, name: str, role: str = "staff") -> tuple[int, str]:
    """Create a user as `admin` (with a password they need not change), sign in as them;
    their id and token."""
    r = client.post(
        f"{V1}/users",
        json={
            "username": name,
            "password": PASSWORD,
            "role": role,
            "must_change_password": False,
        },
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text
    login = client.post(f"{V1}/auth/login", json={"username": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return int(r.json()["id"]), str(login.json()["access_token"])
