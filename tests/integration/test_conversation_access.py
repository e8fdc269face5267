"""Stored answers follow current permissions: after a grant is revoked, the passages an earlier
answer cited are withheld from its conversation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from core import db
from core.repo import conversations
from core.settings import Settings
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration


def test_revoked_library_is_withheld_from_stored_answers(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    c = app_client
    libs = [
        c.post(f"{V1}/libraries", json={"name": n}, headers=auth(admin_token)).json()["id"]
        for n in ("Open", "Closed")
    ]
    uid, token = create_user(c, admin_token, "ann")
    grants = [
        c.post(
            f"{V1}/libraries/{lib}/grants",
            json={"user_id": uid, "permission": "read"},
            headers=auth(admin_token),
        ).json()["id"]
        for lib in libs
    ]
    cited = [
        {"marker": i + 1, "library_id": lib, "document_id": 100 + i, "text": f"passage {i}"}
        for i, lib in enumerate(libs)
    ]
    with db.session_scope(settings) as s:
        conv = conversations.create(s, uid, "q", libs)
        conversations.add_message(s, conv, "user", "q")
        conversations.add_message(
            s, conv, "assistant", "a [1] b [2]", citations=cited, sources=cited
        )
        conv_id = conv.id
    got = c.get(f"{V1}/conversations/{conv_id}", headers=auth(token)).json()
    assert len(got["messages"][1]["sources"]) == 2
    r = c.delete(f"{V1}/libraries/{libs[1]}/grants/{grants[1]}", headers=auth(admin_token))
    assert r.status_code == 204
    r = c.get(f"{V1}/conversations/{conv_id}", headers=auth(token))
    answer = r.json()["messages"][1]
    assert [x["library_id"] for x in answer["sources"]] == [libs[0]]
    assert [x["library_id"] for x in answer["citations"]] == [libs[0]]
    assert answer["flags"]["sources_withheld"] == 1
    assert "passage 1" not in r.text
