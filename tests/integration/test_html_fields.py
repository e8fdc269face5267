"""The API's pre-rendered HTML fields: a chat answer's `answer_html` and its citations'
`snippet_html` (from `serialize`), and the same fields on a stored conversation's messages,
rendered when read (a hostile answer or passage comes back inert)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from api.answers import serialize
from core import db
from core.models import User
from core.repo import conversations
from core.types import Passage
from serving.answering import AnswerResult
from serving.citations import Citation, SentenceCheck
from tests.integration.api_helpers import V1, auth

pytestmark = pytest.mark.integration

PASSAGE_TEXT = (
    "Intro line. Staff get <b>ten</b> days of leave <script>alert(1)</script>. Other text."
)
ANSWER = "**Leave:** ten days [1].\n\n<img src=x onerror=alert(1)>"


def _result() -> AnswerResult:
    passage = Passage(
        chunk_id=7,
        document_id=3,
        library_id=1,
        text=PASSAGE_TEXT,
        title="Leave <policy>",
        heading_path=[],
        page_start=None,
        page_end=None,
        score=1.0,
        chunk_ids=[7],
        library_name="HR",
        filename="leave.md",
    )
    marker_at = ANSWER.index("[1]")
    sentence_end = ANSWER.index(".") + 1
    return AnswerResult(
        question="How much leave?",
        lang="en",
        standalone_question="How much leave?",
        answer=ANSWER,
        citations=[Citation(1, passage, marker_at, marker_at + 3)],
        sources=[passage],
        sentences=[SentenceCheck(ANSWER[:sentence_end], 0, sentence_end, [1], 1.0, None)],
        passages=[passage],
    )


def test_serialize_renders_answer_and_snippet_html() -> None:
    out = serialize(_result(), 5, 6)
    assert out.answer == ANSWER  # the text fields stay as they were
    assert out.answer_html.startswith('<p><strong>Leave:</strong> ten days <sup class="cite">')
    assert '<a href="#source-1" data-cite="1">[1]</a>' in out.answer_html
    assert "<img" not in out.answer_html and "&lt;img" in out.answer_html
    (citation,) = out.citations
    assert PASSAGE_TEXT[citation.snippet_start : citation.snippet_end] == citation.snippet
    assert "<mark>" in citation.snippet_html
    assert "<script" not in citation.snippet_html and "<b>" not in citation.snippet_html
    assert "&lt;b&gt;ten&lt;/b&gt;" in citation.snippet_html


def test_stored_messages_come_back_with_rendered_html(
    settings: Any, app_client: TestClient, admin_token: str
) -> None:
    # the library the stored answer cites must exist: stored passages follow current access
    r = app_client.post(f"{V1}/libraries", json={"name": "Leave"}, headers=auth(admin_token))
    assert r.status_code == 201 and r.json()["id"] == 1, r.text
    out = serialize(_result(), None, None)
    with db.session_scope(settings) as session:
        user = session.exec(select(User).where(User.username == "root-admin")).one()
        assert user.id is not None
        conv = conversations.create(session, user.id, "leave", [1])
        conversations.add_message(session, conv, "user", "How much <b>leave</b>? [1]")
        # an older message stored before snippet_html existed
        old_citations = [c.model_dump(exclude={"snippet_html"}) for c in out.citations]
        conversations.add_message(
            session,
            conv,
            "assistant",
            ANSWER,
            citations=old_citations,
            sources=[s.model_dump() for s in out.sources],
        )
        conv_id = conv.id

    r = app_client.get(f"{V1}/conversations/{conv_id}", headers=auth(admin_token))
    assert r.status_code == 200, r.text
    user_msg, answer_msg = r.json()["messages"]
    assert user_msg["answer_html"] == ""
    assert user_msg["content"] == "How much <b>leave</b>? [1]"
    assert answer_msg["content"] == ANSWER
    assert answer_msg["answer_html"] == out.answer_html
    (citation,) = answer_msg["citations"]
    assert citation["snippet_html"] == out.citations[0].snippet_html
    assert citation["snippet"] == out.citations[0].snippet
