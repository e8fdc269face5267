"""Feedback on answers: a reader rates an answer of their own conversation (upsert, withdraw),
sees it again with the conversation, and it outlives the conversation; administrators review
all of it, librarians the feedback on libraries they manage (redacted to what they read).

Answers are stored through core.repo.conversations, as the chat route stores them: no model
server is needed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from core import db
from core.models import AuditEvent, Feedback, User
from core.repo import api_keys, conversations
from core.settings import Settings
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration


def _ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json() if r.content and status != 204 else None


def _cite(library_id: int, document_id: int, marker: int) -> dict[str, Any]:
    return {
        "marker": marker,
        "library_id": library_id,
        "document_id": document_id,
        "chunk_id": 1000 + marker,
        "title": f"doc {document_id}",
        "text": f"passage {marker}",
    }


@dataclass
class Setup:
    c: TestClient
    settings: Settings
    admin: dict[str, str]
    libs: dict[str, int]  # A, B, C
    docs: dict[str, int]  # A, B
    users: dict[str, int]  # ann (reads A, B), bob (reads A), cara (reads B), lib (manages A)
    tokens: dict[str, dict[str, str]]

    def conversation(
        self,
        who: str,
        libs: str,
        turns: list[tuple[str, str, str]],
        api_key_id: int | None = None,
    ) -> tuple[int, list[int]]:
        """A stored conversation of `who` over `libs` ("AB"): (question, answer, cited
        libraries) per turn. Its id and its message ids in order."""
        ids: list[int] = []
        with db.session_scope(self.settings) as s:
            conv = conversations.create(
                s, self.users[who], "q", [self.libs[x] for x in libs], api_key_id=api_key_id
            )
            for question, answer, cited in turns:
                ids.append(conversations.add_message(s, conv, "user", question).id or 0)
                cites = [_cite(self.libs[x], self.docs[x], i + 1) for i, x in enumerate(cited)]
                msg = conversations.add_message(
                    s, conv, "assistant", answer, citations=cites, sources=cites
                )
                ids.append(msg.id or 0)
            assert conv.id is not None
            return conv.id, ids

    def url(self, conv: int, msg: int) -> str:
        return f"{V1}/conversations/{conv}/messages/{msg}/feedback"

    def rows(self) -> list[Feedback]:
        with db.session_scope(self.settings) as s:
            return list(s.exec(select(Feedback).order_by(Feedback.id)))  # type: ignore[arg-type]

    def events(self, action: str) -> list[AuditEvent]:
        with db.session_scope(self.settings) as s:
            stmt = select(AuditEvent).where(AuditEvent.action == action)
            return list(s.exec(stmt.order_by(AuditEvent.id)))  # type: ignore[arg-type]


@pytest.fixture
def setup(app_client: TestClient, admin_token: str, settings: Settings) -> Setup:
    c, admin = app_client, auth(admin_token)
    libs = {
        x: _ok(c.post(f"{V1}/libraries", json={"name": f"Library {x}"}, headers=admin), 201)["id"]
        for x in "ABC"
    }
    docs = {}
    for x in "AB":
        report = _ok(
            c.post(
                f"{V1}/libraries/{libs[x]}/documents",
                files=[("files", (f"{x}.txt", f"leave policy {x}".encode()))],
                headers=admin,
            ),
            202,
        )
        docs[x] = report["items"][0]["document_id"]
    users, tokens = {}, {}
    for name, role, grants in (
        ("ann", "staff", {"A": "read", "B": "read"}),
        ("bob", "staff", {"A": "read"}),
        ("cara", "staff", {"B": "read"}),
        ("lib", "librarian", {"A": "manage", "C": "read"}),
    ):
        uid, token = create_user(c, admin_token, name, role)
        users[name], tokens[name] = uid, auth(token)
        for lib, perm in grants.items():
            body = {"user_id": uid, "permission": perm}
            _ok(c.post(f"{V1}/libraries/{libs[lib]}/grants", json=body, headers=admin), 201)
    return Setup(c, settings, admin, libs, docs, users, tokens)


def test_rating_an_answer_is_an_upsert_with_a_snapshot(setup: Setup) -> None:
    w = setup
    conv, (q1, a1, q2, a2) = w.conversation(
        "ann",
        "AB",
        [
            ("How much leave?", "Ten days [1] and more [2].", "AB"),
            ("And for part-timers?", "Pro rata [1].", "A"),
        ],
    )
    ann = w.tokens["ann"]
    first = _ok(w.c.put(w.url(conv, a1), json={"rating": 1}, headers=ann))
    assert first["conversation_id"] == conv and first["message_id"] == a1
    assert (first["rating"], first["comment"]) == (1, "")
    (row,) = w.rows()
    assert row.id == first["id"] and row.user_id == w.users["ann"]
    assert row.question == "How much leave?"
    assert row.answer == "Ten days [1] and more [2]."
    assert row.library_ids == sorted([w.libs["A"], w.libs["B"]])
    assert row.document_ids == sorted([w.docs["A"], w.docs["B"]])

    again = _ok(
        w.c.put(w.url(conv, a1), json={"rating": -1, "comment": "  too vague  "}, headers=ann)
    )
    assert again["id"] == first["id"]
    assert (again["rating"], again["comment"]) == (-1, "too vague")
    assert again["created_at"] == first["created_at"]
    assert datetime.fromisoformat(again["updated_at"]) > datetime.fromisoformat(first["updated_at"])
    (row,) = w.rows()
    assert (row.rating, row.comment) == (-1, "too vague")

    # The second answer: its question is the one right before it, its citations its own.
    second = _ok(w.c.put(w.url(conv, a2), json={"rating": 1, "comment": "x" * 2000}, headers=ann))
    row2 = next(r for r in w.rows() if r.id == second["id"])
    assert row2.question == "And for part-timers?" and row2.answer == "Pro rata [1]."
    assert row2.document_ids == [w.docs["A"]]

    messages = _ok(w.c.get(f"{V1}/conversations/{conv}", headers=ann))["messages"]
    assert [m["id"] for m in messages] == [q1, a1, q2, a2]
    assert [m["feedback"] for m in messages] == [
        None,
        {"rating": -1, "comment": "too vague"},
        None,
        {"rating": 1, "comment": "x" * 2000},
    ]
    submits = w.events("feedback.submit")
    assert [(e.actor_user_id, e.target_type, e.target_id) for e in submits] == [
        (w.users["ann"], "message", str(a1)),
        (w.users["ann"], "message", str(a1)),
        (w.users["ann"], "message", str(a2)),
    ]
    assert [(e.detail["rating"], e.detail["replaced"]) for e in submits] == [
        (1, False),
        (-1, True),
        (1, False),
    ]
    assert submits[0].detail["conversation_id"] == conv


def test_feedback_is_refused_for_questions_others_and_bad_bodies(setup: Setup) -> None:
    w = setup
    conv, (question, answer) = w.conversation("ann", "A", [("Q?", "A [1].", "A")])
    _, (_, other_answer) = w.conversation("ann", "A", [("Q2?", "B [1].", "A")])
    bobs_conv, (_, bobs_answer) = w.conversation("bob", "A", [("Q3?", "C [1].", "A")])
    ann, bob = w.tokens["ann"], w.tokens["bob"]
    good = {"rating": 1}

    r = w.c.put(w.url(conv, question), json=good, headers=ann)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "not_an_answer"), r.text
    assert "not an answer" in r.json()["error"]["message"]
    # a message of another conversation (even one's own), a missing one: 404
    for msg in (other_answer, bobs_answer, 987_654_321):
        r = w.c.put(w.url(conv, msg), json=good, headers=ann)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), r.text
        assert r.json()["error"]["message"] == f"message {msg} not found"
    # someone else's conversation looks like a missing one
    r = w.c.put(w.url(bobs_conv, bobs_answer), json=good, headers=ann)
    missing = w.c.put(w.url(987_654_321, bobs_answer), json=good, headers=ann)
    assert r.status_code == missing.status_code == 404
    assert r.text.replace(str(bobs_conv), "ID") == missing.text.replace("987654321", "ID")
    r = w.c.delete(w.url(bobs_conv, bobs_answer), headers=ann)
    assert r.status_code == 404
    for body in (
        {"rating": 0},
        {"rating": 2},
        {"rating": "good"},
        {},
        {"rating": 1, "comment": "x" * 2001},
        {"rating": 1, "comment": "a\x00b"},
    ):
        r = w.c.put(w.url(conv, answer), json=body, headers=ann)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), body
    # a lone surrogate (valid JSON, not encodable text: PostgreSQL would refuse it)
    raw = b'{"rating": 1, "comment": "lone \\ud800 surrogate"}'
    r = w.c.put(
        w.url(conv, answer),
        content=raw,
        headers={**ann, "Content-Type": "application/json"},
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), r.text
    assert w.rows() == []
    # bob's own answer is his to rate
    _ok(w.c.put(w.url(bobs_conv, bobs_answer), json=good, headers=bob))
    assert [(r.user_id, r.message_id) for r in w.rows()] == [(w.users["bob"], bobs_answer)]


def test_withdrawing_feedback(setup: Setup) -> None:
    w = setup
    conv, (_, answer) = w.conversation("ann", "A", [("Q?", "A [1].", "A")])
    ann = w.tokens["ann"]
    _ok(w.c.put(w.url(conv, answer), json={"rating": -1, "comment": "wrong"}, headers=ann))
    _ok(w.c.delete(w.url(conv, answer), headers=ann), 204)
    assert w.rows() == []
    messages = _ok(w.c.get(f"{V1}/conversations/{conv}", headers=ann))["messages"]
    assert messages[1]["feedback"] is None
    _ok(w.c.delete(w.url(conv, answer), headers=ann), 204)  # nothing left: still 204
    (event,) = w.events("feedback.withdraw")
    assert (event.actor_user_id, event.target_id) == (w.users["ann"], str(answer))
    assert event.detail["rating"] == -1
    # rating afresh after withdrawing is a new verdict
    again = _ok(w.c.put(w.url(conv, answer), json={"rating": 1}, headers=ann))
    assert [r.id for r in w.rows()] == [again["id"]]


def test_deleting_the_conversation_keeps_the_feedback(setup: Setup) -> None:
    """The row stays with its snapshot; only its link to the (deleted) message goes. On
    PostgreSQL (and SQLite with foreign keys on) the delete would otherwise fail."""
    w = setup
    conv, (_, a1, _, a2) = w.conversation(
        "ann", "A", [("First?", "One [1].", "A"), ("Second?", "Two [1].", "A")]
    )
    kept, (_, kept_answer) = w.conversation("ann", "A", [("Other?", "Three [1].", "A")])
    ann = w.tokens["ann"]
    for msg in (a1, a2):
        _ok(w.c.put(w.url(conv, msg), json={"rating": -1, "comment": f"c{msg}"}, headers=ann))
    _ok(w.c.put(w.url(kept, kept_answer), json={"rating": 1}, headers=ann))
    _ok(w.c.delete(f"{V1}/conversations/{conv}", headers=ann), 204)
    assert w.c.get(f"{V1}/conversations/{conv}", headers=ann).status_code == 404
    rows = w.rows()
    assert [(r.message_id, r.question, r.answer, r.comment) for r in rows] == [
        (None, "First?", "One [1].", f"c{a1}"),
        (None, "Second?", "Two [1].", f"c{a2}"),
        (kept_answer, "Other?", "Three [1].", ""),
    ]
    listed = _ok(w.c.get(f"{V1}/feedback", headers=w.admin))
    assert [(i["message_id"], i["question"]) for i in listed["items"]] == [
        (kept_answer, "Other?"),
        (None, "Second?"),
        (None, "First?"),
    ]
    # the other conversation still shows its feedback
    messages = _ok(w.c.get(f"{V1}/conversations/{kept}", headers=ann))["messages"]
    assert messages[1]["feedback"] == {"rating": 1, "comment": ""}


def test_review_list_for_admins_and_librarians(setup: Setup) -> None:
    w = setup
    both, (_, both_answer) = w.conversation("ann", "AB", [("Both?", "From A and B.", "AB")])
    only_a, (_, a_answer) = w.conversation("bob", "A", [("Only A?", "From A.", "A")])
    only_b, (_, b_answer) = w.conversation("cara", "B", [("Only B?", "From B.", "B")])
    _ok(w.c.put(w.url(both, both_answer), json={"rating": -1}, headers=w.tokens["ann"]))
    _ok(
        w.c.put(
            w.url(only_a, a_answer), json={"rating": 1, "comment": "ok"}, headers=w.tokens["bob"]
        )
    )
    _ok(w.c.put(w.url(only_b, b_answer), json={"rating": 1}, headers=w.tokens["cara"]))
    A, B, C = w.libs["A"], w.libs["B"], w.libs["C"]

    def listed(who: dict[str, str], **params: Any) -> dict[str, Any]:
        out: dict[str, Any] = _ok(w.c.get(f"{V1}/feedback", params=params, headers=who))
        return out

    every = listed(w.admin)
    assert every["total"] == 3 and (every["offset"], every["limit"]) == (0, 50)
    assert [i["question"] for i in every["items"]] == ["Only B?", "Only A?", "Both?"]  # newest 1st
    first = every["items"][2]
    assert first["username"] == "ann" and first["user_id"] == w.users["ann"]
    assert (first["rating"], first["answer"], first["answer_withheld"]) == (
        -1,
        "From A and B.",
        False,
    )
    assert first["library_ids"] == sorted([A, B])
    assert first["document_ids"] == sorted([w.docs["A"], w.docs["B"]])
    assert [i["question"] for i in listed(w.admin, rating=-1)["items"]] == ["Both?"]
    assert [i["question"] for i in listed(w.admin, rating=1)["items"]] == ["Only B?", "Only A?"]
    assert [i["question"] for i in listed(w.admin, library_id=B)["items"]] == ["Only B?", "Both?"]
    page = listed(w.admin, offset=1, limit=1)
    assert page["total"] == 3 and [i["question"] for i in page["items"]] == ["Only A?"]
    assert listed(w.admin, library_id=C)["total"] == 0

    # The librarian of A: the feedback on A, with what rests on B left out.
    lib = w.tokens["lib"]
    mine = listed(lib)
    assert mine["total"] == 2
    by_question = {i["question"]: i for i in mine["items"]}
    assert set(by_question) == {"Only A?", "Both?"}
    assert by_question["Only A?"]["answer"] == "From A."
    assert by_question["Only A?"]["comment"] == "ok"
    assert not by_question["Only A?"]["answer_withheld"]
    assert by_question["Both?"]["answer_withheld"] is True
    assert by_question["Both?"]["answer"] == ""
    assert by_question["Both?"]["library_ids"] == [A]
    assert by_question["Both?"]["document_ids"] == [w.docs["A"]]
    assert "From B" not in w.c.get(f"{V1}/feedback", headers=lib).text
    assert listed(lib, rating=-1)["total"] == 1
    assert listed(lib, library_id=A)["total"] == 2
    r = w.c.get(f"{V1}/feedback", params={"library_id": B}, headers=lib)  # not readable
    missing = w.c.get(f"{V1}/feedback", params={"library_id": 987_654_321}, headers=lib)
    assert r.status_code == missing.status_code == 404
    assert r.text.replace(str(B), "ID") == missing.text.replace("987654321", "ID")
    r = w.c.get(f"{V1}/feedback", params={"library_id": C}, headers=lib)  # read, not managed
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")

    # Staff and API keys do not review.
    r = w.c.get(f"{V1}/feedback", headers=w.tokens["ann"])
    assert (r.status_code, r.json()["error"]["code"]) == (403, "forbidden")
    with db.session_scope(w.settings) as s:
        admin_user = s.exec(select(User).where(User.username == "root-admin")).one()
        _, secret = api_keys.create(s, admin_user, "oa", ["search", "chat"], [A], None)
    r = w.c.get(f"{V1}/feedback", headers=auth(secret))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "user_session_required")
    for params in ({"rating": 0}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
        r = w.c.get(f"{V1}/feedback", params=params, headers=w.admin)
        assert r.status_code == 422, params


def test_a_key_rates_only_the_answers_held_through_it(setup: Setup) -> None:
    w = setup
    with db.session_scope(w.settings) as s:
        ann = s.get(User, w.users["ann"])
        assert ann is not None
        key, secret = api_keys.create(s, ann, "oa", ["chat"], [w.libs["A"]], None)
        key_id = key.id
    held, (_, held_answer) = w.conversation("ann", "A", [("Via OA?", "Yes [1].", "A")], key_id)
    web, (_, web_answer) = w.conversation("ann", "A", [("In the web?", "Yes [1].", "A")])
    oa = auth(secret)
    _ok(w.c.put(w.url(held, held_answer), json={"rating": 1}, headers=oa))
    assert w.c.put(w.url(web, web_answer), json={"rating": 1}, headers=oa).status_code == 404
    # the user sees the key's verdict (it is theirs) in the web UI
    messages = _ok(w.c.get(f"{V1}/conversations/{held}", headers=w.tokens["ann"]))["messages"]
    assert messages[1]["feedback"] == {"rating": 1, "comment": ""}
    (event,) = w.events("feedback.submit")
    assert (event.actor_user_id, event.actor_api_key_id) == (w.users["ann"], key_id)
    _ok(w.c.delete(w.url(held, held_answer), headers=oa), 204)
    assert w.rows() == []
