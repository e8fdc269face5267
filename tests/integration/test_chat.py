"""Answers end to end against real vLLM CPU servers running the prepared W4A16 model: the
real ingestion pipeline, indexes, embedder, safety classifier and database, through the REST
API, the OpenAI-compatible facade (with the official `openai` client) and the CLI.

The servers start in the background at session start (tests/conftest.py); the tests that kill
a server run last, on the second replica.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.html_render import markdown_html
from cli.ingest_cmd import ingest_paths
from cli.main import app as cli_app
from core import db
from core.models import Role
from core.repo import api_keys, users
from core.settings import Settings
from tests.conftest import TEST_MODEL, VllmServers
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

HANDBOOK = {
    "leave.md": "# Annual leave\n\nEmployees get 15 days of annual leave per year. "
    "Leave requests go through the HR portal.\n",
    "helpdesk.md": "# IT helpdesk\n\nHelpdesk phone: 13812345678.\n",
    "travel.md": "# Travel\n\nTravel expenses above 5000 yuan need director approval.\n",
}
DEAD = "http://127.0.0.1:9/v1"  # nothing listens: any model call would fail loudly


def _settings(base: Settings, url: str) -> Settings:
    return base.model_copy(
        update={
            "main_base_urls": url,
            "main_model": "zhiku-main",
            "main_tokenizer": str(TEST_MODEL),
            "main_read_timeout": 120.0,
            "answer_max_tokens": 96,
        }
    )


def _ingest(settings: Settings, tmp_path: Path, name: str, files: dict[str, str]) -> int:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    for fname, text in files.items():
        (folder / fname).write_text(text, encoding="utf-8")
    summary = ingest_paths(settings, [folder], name, True, True, True, 0)
    assert not summary.failures, summary.failures
    return summary.library_id


def _sse(response: httpx.Response) -> list[tuple[str, dict[str, Any], float]]:
    """(event, data, arrival time) of each server-sent event, as it arrives."""
    events = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:]), time.monotonic()))
    return events


@pytest.fixture
def chat_env(settings: Settings, tmp_path: Path, vllm: VllmServers):  # type: ignore[no-untyped-def]
    s = _settings(settings, vllm.wait("main"))
    lib = _ingest(s, tmp_path, "Handbook", HANDBOOK)
    with TestClient(create_app(s)) as client:
        with db.session_scope(s) as session:
            users.create_user(session, "root-admin", "correct horse battery", role=Role.admin)
        r = client.post(
            f"{V1}/auth/login",
            json={"username": "root-admin", "password": "correct horse battery"},
        )
        yield s, client, str(r.json()["access_token"]), lib


def test_streamed_answer_cites_real_passages_and_is_stored(chat_env) -> None:  # type: ignore[no-untyped-def]
    _s, client, admin, lib = chat_env
    body = {"question": "How many days of annual leave do employees get?", "stream": True}
    with client.stream("POST", f"{V1}/chat", json=body, headers=auth(admin)) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r)
    kinds = [e for e, _, _ in events]
    tokens = [d["text"] for e, d, _ in events if e == "token"]
    assert len(tokens) >= 3, events  # token by token, not one blob
    assert kinds[-1] == "done" and "error" not in kinds
    done = events[-1][1]
    assert "15" in done["answer"]
    # The answer so far as safe HTML (what the web UI shows while it streams): the first
    # right after the first token, each covering exactly the tokens before it.
    assert kinds.index("html") == kinds.index("token") + 1, kinds
    for i, (kind, data, _) in enumerate(events):
        if kind == "html":
            so_far = "".join(d["text"] for e, d, _ in events[:i] if e == "token")
            assert data["html"] == markdown_html(so_far), (so_far, data)
    assert done["citations"], done
    docs = {
        d["id"]: d
        for d in client.get(f"{V1}/libraries/{lib}/documents", headers=auth(admin)).json()["items"]
    }
    for c in done["citations"]:
        assert c["document_id"] in docs and c["library_id"] == lib
        source = next(x for x in done["sources"] if x["marker"] == c["marker"])
        assert source["text"][c["snippet_start"] : c["snippet_end"]] == c["snippet"]
        assert done["answer"][c["start"] : c["end"]] == f"[{c['marker']}]"
    assert {x["marker"] for x in done["sources"]} == {c["marker"] for c in done["citations"]}
    assert any(docs[c["document_id"]]["filename"] == "leave.md" for c in done["citations"])

    conv = done["conversation_id"]
    listed = client.get(f"{V1}/conversations", headers=auth(admin)).json()
    assert [c["id"] for c in listed] == [conv]
    detail = client.get(f"{V1}/conversations/{conv}", headers=auth(admin)).json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"]
    assert detail["messages"][1]["id"] == done["message_id"]
    _, other = create_user(client, admin, "mallory")
    assert client.get(f"{V1}/conversations/{conv}", headers=auth(other)).status_code == 404
    assert client.delete(f"{V1}/conversations/{conv}", headers=auth(other)).status_code == 404

    # A follow-up in the same conversation is answered too (rewritten, then retrieved).
    r = client.post(
        f"{V1}/chat",
        json={
            "question": "And who approves travel expenses above 5000 yuan?",
            "conversation_id": conv,
        },
        headers=auth(admin),
    )
    assert r.status_code == 200, r.text
    assert r.json()["conversation_id"] == conv
    assert (
        len(client.get(f"{V1}/conversations/{conv}", headers=auth(admin)).json()["messages"]) == 4
    )


def test_personal_data_in_an_answer_is_redacted(chat_env) -> None:  # type: ignore[no-untyped-def]
    _s, client, admin, _lib = chat_env
    body = {"question": "What is the helpdesk phone number?", "stream": True}
    with client.stream("POST", f"{V1}/chat", json=body, headers=auth(admin)) as r:
        events = _sse(r)
    streamed = "".join(d["text"] for e, d, _ in events if e == "token")
    done = events[-1][1]
    assert "13812345678" not in streamed and "13812345678" not in done["answer"]
    assert "[REDACTED:mobile]" in done["answer"], done["answer"]
    assert "mobile" in done["flags"]["redacted"]


def test_not_found_and_lexicon_blocks_never_call_the_model(
    settings: Settings, tmp_path: Path, vllm: VllmServers
) -> None:
    s = _settings(settings, DEAD)
    _ingest(s, tmp_path, "Handbook", HANDBOOK)
    with TestClient(create_app(s)) as client:
        with db.session_scope(s) as session:
            users.create_user(session, "root-admin", "correct horse battery", role=Role.admin)
        admin = client.post(
            f"{V1}/auth/login", json={"username": "root-admin", "password": "correct horse battery"}
        ).json()["access_token"]
        r = client.post(
            f"{V1}/chat",
            json={"question": "What is the melting point of tungsten carbide?"},
            headers=auth(admin),
        )
        assert r.status_code == 200, r.text
        assert r.json()["not_found"] is True
        assert r.json()["answer"] == "I could not find this in the knowledge base."
        r = client.post(f"{V1}/chat", json={"question": "钨的熔点是多少？"}, headers=auth(admin))
        assert r.json()["not_found"] is True and "知识库" in r.json()["answer"]

        lexicon = client.get(f"{V1}/admin/lexicon", headers=auth(admin)).json()["text"]
        r = client.put(
            f"{V1}/admin/lexicon",
            json={"text": lexicon + "\nproject nightingale\tconfidential\n"},
            headers=auth(admin),
        )
        assert r.status_code == 200 and r.json()["terms"] > 1
        r = client.post(
            f"{V1}/chat",
            json={"question": "How many leave days does Project  NIGHTINGALE give?"},
            headers=auth(admin),
        )
        out = r.json()
        assert out["blocked"] is True and out["flags"]["blocked_by"] == "lexicon"
        assert out["flags"]["blocked_categories"] == ["confidential"]
        _, staff = create_user(client, admin, "staffer")
        assert client.get(f"{V1}/admin/lexicon", headers=auth(staff)).status_code == 403


def test_openai_facade_with_the_official_client(chat_env) -> None:  # type: ignore[no-untyped-def]
    import openai

    s, client, admin, _lib = chat_env
    with db.session_scope(s) as session:
        owner = users.get_by_username(session, "root-admin")
        assert owner is not None
        _, key = api_keys.create(session, owner, "oa-system", scopes=["chat"])
    oa = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client)
    names = [m.id for m in oa.models.list()]
    assert names == ["zhiku", "Handbook"]

    reply = oa.chat.completions.create(
        model="Handbook",
        messages=[{"role": "user", "content": "How many days of annual leave do employees get?"}],
    )
    assert "15" in (reply.choices[0].message.content or "")
    extra = reply.model_extra["zhiku"] if reply.model_extra else {}
    assert extra["citations"] and extra["sources"]
    assert extra["not_found"] is False

    pieces, finals = [], []
    for chunk in oa.chat.completions.create(
        model="zhiku",
        # The bundled 135M model echoes the passages for some questions (a stop sequence then
        # leaves nothing); this one it answers. What is tested here is the streaming.
        messages=[{"role": "user", "content": "How many days of annual leave do employees get?"}],
        stream=True,
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.model_extra and "zhiku" in chunk.model_extra:
            finals.append(chunk.model_extra["zhiku"])
            assert chunk.choices[0].finish_reason == "stop"
    assert len(pieces) >= 3  # streamed in pieces
    assert len(finals) == 1 and finals[0]["not_found"] is False  # sources ride on the last

    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="Nope", messages=[{"role": "user", "content": "hi"}])
    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="zk_key_wrong", http_client=client)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    # A user's web token is not an API key.
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url="http://testserver/v1", api_key=admin, http_client=client
        ).models.list()


def test_ask_cli_prints_json(chat_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    s, _, _, _ = chat_env
    env = {
        "ZHIKU_DATA_DIR": str(s.data_dir),
        "ZHIKU_DATABASE_URL": s.db_url,
        "ZHIKU_MAIN_BASE_URLS": s.main_base_urls,
        "ZHIKU_MAIN_MODEL": "zhiku-main",
        "ZHIKU_MAIN_TOKENIZER": str(TEST_MODEL),
        "ZHIKU_ANSWER_MAX_TOKENS": "96",
    }
    from core.settings import reset_settings

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    reset_settings()
    try:
        result = CliRunner().invoke(
            cli_app, ["ask", "How many days of annual leave do employees get?", "--json"]
        )
    finally:
        reset_settings()
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert set(out) >= {"answer", "citations", "sources", "not_found", "blocked", "conversation_id"}
    assert "15" in out["answer"] and out["citations"] and out["not_found"] is False


# --- the tests below use the second replica and end by killing it: keep them last ------------


def _affinity_homes(main_url: str, replica_url: str) -> dict[str, str]:
    """Which replica each of a few conversations lands on (asked twice: it must not move)."""
    import asyncio

    from serving.llm_client import EndpointConfig, LLMClient

    async def run() -> dict[str, str]:
        cfg = EndpointConfig((main_url, replica_url), "zhiku-main", read_timeout=120.0)
        homes: dict[str, str] = {}
        async with LLMClient(cfg) as llm:
            for i in range(8):
                key = f"conv-{i}"
                first = await llm.chat(
                    [{"role": "user", "content": "Say hello."}], affinity_key=key, max_tokens=4
                )
                again = await llm.chat(
                    [{"role": "user", "content": "Say hi."}], affinity_key=key, max_tokens=4
                )
                assert first.replica == again.replica, key  # one conversation, one replica
                homes[key] = first.replica
        return homes

    return asyncio.run(run())


def test_replicas_keep_each_conversation_on_one_replica(vllm: VllmServers) -> None:
    main_url, replica_url = vllm.wait("main"), vllm.wait("replica")
    homes = _affinity_homes(main_url, replica_url)
    assert set(homes.values()) == {main_url, replica_url}  # and both replicas are used


def test_killing_the_model_server_mid_answer_gives_a_clean_error(
    tmp_path: Path, redis_url: str, vllm: VllmServers
) -> None:
    from serving import model_server

    victim = vllm.process("replica")
    base = Settings(data_dir=tmp_path / "data", redis_url=redis_url)
    base.data_dir.mkdir(parents=True)
    db.migrate(base)
    s = _settings(base, vllm.wait("replica")).model_copy(
        update={"answer_max_tokens": 400, "main_read_timeout": 10.0}
    )
    _ingest(s, tmp_path, "Handbook", HANDBOOK)
    with TestClient(create_app(s)) as client:
        with db.session_scope(s) as session:
            users.create_user(session, "root-admin", "correct horse battery", role=Role.admin)
        admin = client.post(
            f"{V1}/auth/login",
            json={"username": "root-admin", "password": "correct horse battery"},
        ).json()["access_token"]
        body = {"question": "Describe everything about annual leave in detail.", "stream": True}
        killed = False
        events: list[tuple[str, dict[str, Any]]] = []
        started = time.monotonic()
        with client.stream("POST", f"{V1}/chat", json=body, headers=auth(admin)) as r:
            name = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, json.loads(line[6:])))
                    if name == "token" and not killed:
                        model_server.stop(victim, grace=0.1)  # type: ignore[arg-type]
                        killed = True
        kinds = [e for e, _ in events]
        assert killed and kinds[0] == "token"
        assert kinds[-1] == "error", kinds
        assert events[-1][1]["code"] == "model_unavailable"
        assert "try again" in events[-1][1]["message"]
        assert time.monotonic() - started < 60
        # Without streaming: a 503 with a clear message, quickly, not a 500 or a hang.
        t = time.monotonic()
        r2 = client.post(
            f"{V1}/chat", json={"question": "How many days of annual leave?"}, headers=auth(admin)
        )
        assert r2.status_code == 503 and "try again" in r2.json()["error"]["message"]
        assert r2.headers["retry-after"]
        assert time.monotonic() - t < 30
    db.dispose_engines()


def test_a_conversation_moves_to_a_healthy_replica_when_its_own_is_down(
    vllm: VllmServers,
) -> None:
    import asyncio

    from serving.llm_client import EndpointConfig, LLMClient

    main_url = vllm.wait("main")
    replica_url = str(vllm.process("replica").spec.base_url)  # type: ignore[attr-defined]
    # The previous test stopped the replica; conversations homed there must still be answered.

    async def run() -> None:
        cfg = EndpointConfig((main_url, replica_url), "zhiku-main", read_timeout=120.0)
        async with LLMClient(cfg) as llm:
            for i in range(8):
                reply = await llm.chat(
                    [{"role": "user", "content": "Say hello."}],
                    affinity_key=f"conv-{i}",
                    max_tokens=4,
                )
                assert reply.replica == main_url
            status = {r.url: r for r in await llm.health()}
            assert status[replica_url].healthy is False and status[main_url].healthy is True

    asyncio.run(run())
