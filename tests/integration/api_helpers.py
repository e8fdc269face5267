"""Small helpers for tests that drive the REST API."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` served over HTTP on a free port (uvicorn in a thread); its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
