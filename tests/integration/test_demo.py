"""`zhiku demo load`: the shipped demo library goes through the real ingest pipeline (parser,
chunker, embedders, indexes) into a fresh data dir on SQLite and PostgreSQL; a second load adds
nothing; questions in both languages find the right demo document first with the real
retriever; and with the real vLLM server an answer cites a demo document."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from cli.demo import DEFAULT_LIBRARY, EXAMPLE_QUESTIONS, demo_files, load_demo
from cli.main import app as cli_app
from core import access, db
from core.models import DocStatus, Document, Role
from core.repo import groups, users
from core.settings import Settings
from retrieval.service import Retriever
from tests.conftest import TEST_MODEL, VllmServers

pytestmark = pytest.mark.integration

# question → the demo document that answers it
QUESTIONS = {
    "知库支持上传哪些文件格式？": "uploads.zh.md",
    "回答中的引用标记 [1] 是什么意思？": "quick-start.zh.md",
    "如何备份知库的数据？": "administration.zh.md",
    "知库的数据保存在哪里？如何备份？": "administration.zh.md",
    "Which scopes can an API key have?": "api-keys.en.md",
    "What does the Sources panel show?": "getting-started.en.md",
    "扫描的 PDF 能识别文字吗": "uploads.zh.md",
    "How do I give a department access to a library?": "access-control.en.md",
    "How do I create an API key for the OA system?": "api-keys.en.md",
    "What happens if I type the wrong password five times?": "getting-started.en.md",
    "Which base URL and model name does the OpenAI SDK use?": "api-keys.en.md",
}


def _documents(settings: Settings, library_id: int) -> list[Document]:
    with db.session_scope(settings) as session:
        return list(session.exec(select(Document).where(Document.library_id == library_id)))


def test_demo_docs_ship_with_the_package() -> None:
    files = demo_files()
    names = {f.name for f in files}
    assert 4 <= len(files) <= 6
    assert any(n.endswith(".zh.md") for n in names) and any(n.endswith(".en.md") for n in names)
    assert set(QUESTIONS.values()) <= names
    assert len(EXAMPLE_QUESTIONS) >= 4 and set(EXAMPLE_QUESTIONS) <= set(QUESTIONS)


def test_demo_load_is_idempotent_granted_and_searchable(settings: Settings) -> None:
    with db.session_scope(settings) as session:
        sales = groups.create(session, "Sales")
        assert sales.id is not None
        east = groups.create(session, "Sales East", parent_id=sales.id)
        assert east.id is not None
        member = users.create_user(session, "mei", "a long passphrase", role=Role.staff)
        loner = users.create_user(session, "lone-wolf", "a long passphrase", role=Role.staff)
        assert member.id is not None
        groups.add_member(session, east.id, member.id)

    first = load_demo(settings, quiet=True)
    files = demo_files()
    assert first.created and not first.failures, first.failures
    assert first.added == first.ready == first.files == len(files)
    assert not first.already_loaded
    assert first.granted == ["Sales"]  # top-level departments only; sub-departments inherit
    docs = _documents(settings, first.library_id)
    assert len(docs) == len(files)
    assert all(d.status == DocStatus.ready and d.chunk_count > 0 for d in docs), [
        (d.filename, d.status, d.reason) for d in docs
    ]
    assert {d.filename for d in docs} == {f.name for f in files}

    second = load_demo(settings, quiet=True)
    assert second.already_loaded and not second.created
    assert second.added == 0 and second.ready == len(files) and second.granted == []
    again = _documents(settings, first.library_id)
    assert sorted((d.id, d.version) for d in again) == sorted((d.id, d.version) for d in docs)

    with db.session_scope(settings) as session:
        member = users.get_by_username(session, "mei")
        loner = users.get_by_username(session, "lone-wolf")
        assert member is not None and loner is not None
        readable = access.readable_library_ids(session, access.Principal(user=member))
        assert first.library_id in readable  # through Sales East → Sales
        assert first.library_id not in access.readable_library_ids(
            session, access.Principal(user=loner)
        )

        retriever = Retriever(settings)
        for question, expected in QUESTIONS.items():
            result = retriever.search(session, question, [first.library_id], top_k=3)
            got = [p.filename for p in result.passages]
            assert got and got[0] == expected, (question, got)


@pytest.mark.vllm
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_demo_cli_reports_and_the_answer_cites_a_demo_document(
    settings: Settings, vllm: VllmServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import reset_settings

    env = {
        "ZHIKU_DATA_DIR": str(settings.data_dir),
        "ZHIKU_DATABASE_URL": settings.db_url,
        "ZHIKU_REDIS_URL": settings.redis_url,
        "ZHIKU_MAIN_BASE_URLS": vllm.wait("main"),
        "ZHIKU_MAIN_MODEL": "zhiku-main",
        "ZHIKU_MAIN_TOKENIZER": str(TEST_MODEL),
        "ZHIKU_MAIN_READ_TIMEOUT": "120",
        "ZHIKU_ANSWER_MAX_TOKENS": "96",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    runner = CliRunner()
    try:
        loaded = runner.invoke(cli_app, ["demo", "load", "--no-grant"])
        assert loaded.exit_code == 0, loaded.output
        assert f"into '{DEFAULT_LIBRARY}'" in loaded.output
        assert "Only administrators can read it" in loaded.output
        for question in EXAMPLE_QUESTIONS:
            assert question in loaded.output
        again = runner.invoke(cli_app, ["demo", "load", "--json"])
        assert again.exit_code == 0, again.output
        summary = json.loads(again.output.strip().splitlines()[-1])
        assert summary["already_loaded"] is True and summary["added"] == 0

        # The bundled 135M model is small: this one is answered with a citation greedily.
        question = "What does the Sources panel show?"
        asked = runner.invoke(cli_app, ["ask", question, "--json"])
    finally:
        reset_settings()
    assert asked.exit_code == 0, asked.output
    out = json.loads(asked.output.strip().splitlines()[-1])
    assert out["not_found"] is False and out["blocked"] is False, out
    assert out["answer"].strip() and out["citations"], out
    demo_names = {f.name for f in demo_files()}
    cited = {s["marker"]: s for s in out["sources"]}
    assert all(cited[c["marker"]]["filename"] in demo_names for c in out["citations"]), out
    assert any(
        cited[c["marker"]]["filename"] == "getting-started.en.md" for c in out["citations"]
    ), out
