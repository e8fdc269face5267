"""Search end to end: real ingestion pipeline (inline), real indexes, real embedder and
reranker, real database (SQLite and PostgreSQL), through the REST API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from cli.ingest_cmd import ingest_paths
from cli.main import app as cli_app
from core import db
from core.models import Chunk, Document
from core.repo import chunks as chunk_repo
from core.settings import Settings
from core.types import DocFilter
from retrieval.index_store import read_manifest
from retrieval.service import Retriever
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration

ENGLISH = {
    "pump-manual.md": """# XR-7731-B circulation pump

## Maintenance
Replace the shaft seal of the XR-7731-B every six months. Use only genuine seal kits.
A leaking seal shows as drops of coolant below the motor housing.

## Wiring
The pump takes a 400 V three-phase supply. Connect the earth wire first.
""",
    "travel-policy.md": """# Business trips

Staff who travel for work may claim lodging expenses up to 600 yuan per night in tier-one
cities and 400 yuan elsewhere. Keep the original invoice from the hotel and submit the
claim within thirty days of returning.
""",
    "security.md": """# Account security

Choose a passphrase of at least twelve characters. Never share your credentials with
colleagues. Lock your screen whenever you leave your desk.
""",
    "canteen.md": """# Canteen

The canteen opens at 11:30 and closes at 13:30. Vegetarian dishes are marked green.
""",
}

CHINESE = {
    "设备保养.md": """# 空压机保养

设备编号 ZK-2024-017 的空压机每季度保养一次，保养时需要更换空气滤芯并检查润滑油位。
""",
    "采购联系人.md": """# 采购部

办公用品采购请联系张伟，分机号 8021。大宗采购需要部门经理审批。
""",
    "年假制度.md": """# 年假

员工入职满一年后享有五天带薪年假，满十年后享有十天。年假须提前两周在系统中申请。
""",
    "食堂.md": """# 食堂

食堂中午十一点半开放，素食窗口在二楼。
""",
}

SECRET = {
    "merger.md": """# Project Falcon

The XR-7731-B pump line will be sold to Falcon Industries. Board approval expected in Q3.
Lodging expenses for the negotiation team are covered by the merger budget.
""",
}


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _ingest(settings: Settings, tmp_path: Path, name: str, files: dict[str, str]) -> int:
    summary = ingest_paths(settings, [_write(tmp_path / name, files)], name, True, True, True, 0)
    assert not summary.failures, summary.failures
    assert summary.ready == len(files)
    return summary.library_id


def _grant(client: TestClient, admin: str, lib: int, user_id: int) -> None:
    r = client.post(
        f"{V1}/libraries/{lib}/grants",
        json={"user_id": user_id, "permission": "read"},
        headers=auth(admin),
    )
    assert r.status_code == 201, r.text


def _search(client: TestClient, token: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"{V1}/search", json=body, headers=auth(token))
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _titles(result: dict[str, Any]) -> list[str]:
    return [p["filename"] for p in result["results"]]


def test_search_sees_only_granted_libraries_and_forbidden_ones_change_nothing(
    settings: Settings, tmp_path: Path, app_client: TestClient, admin_token: str
) -> None:
    public = _ingest(settings, tmp_path, "Public", ENGLISH)
    alice_id, alice = create_user(app_client, admin_token, "alice")
    bob_id, bob = create_user(app_client, admin_token, "bob")
    _grant(app_client, admin_token, public, alice_id)
    _grant(app_client, admin_token, public, bob_id)
    queries = ["XR-7731-B pump", "Who pays for my hotel during the negotiation?"]
    before = [_search(app_client, alice, query=q, top_k=5) for q in queries]

    # A second library appears, with text that matches both queries strongly.
    secret = _ingest(settings, tmp_path, "Secret", SECRET)
    _grant(app_client, admin_token, secret, bob_id)
    after = [_search(app_client, alice, query=q, top_k=5) for q in queries]

    for b, a in zip(before, after, strict=True):
        assert a["library_ids"] == [public]
        keep = ("chunk_id", "chunk_ids", "document_id", "text", "score", "scores")
        assert [{k: p[k] for k in keep} for p in a["results"]] == [
            {k: p[k] for k in keep} for p in b["results"]
        ]
        assert "merger.md" not in _titles(a)
    # Bob may read both, and does see the secret library's passage.
    bob_result = _search(app_client, bob, query=queries[0], top_k=5)
    assert bob_result["library_ids"] == [public, secret]
    assert "merger.md" in _titles(bob_result)
    # Asking for the forbidden library by id looks exactly like asking for a missing one.
    forbidden = app_client.post(
        f"{V1}/search", json={"query": "pump", "library_ids": [secret]}, headers=auth(alice)
    )
    missing = app_client.post(
        f"{V1}/search", json={"query": "pump", "library_ids": [9999]}, headers=auth(alice)
    )
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json()["error"]["code"] == missing.json()["error"]["code"]
    # A user with no grant at all gets nothing, not an error.
    _, carol = create_user(app_client, admin_token, "carol")
    assert _search(app_client, carol, query="pump")["results"] == []


def test_ranking_on_english_and_chinese(
    settings: Settings, tmp_path: Path, app_client: TestClient, admin_token: str
) -> None:
    en = _ingest(settings, tmp_path, "English", ENGLISH)
    zh = _ingest(settings, tmp_path, "中文", CHINESE)

    def top(query: str, mode: str = "hybrid", lib: int | None = None) -> list[str]:
        body: dict[str, Any] = {"query": query, "top_k": 3, "mode": mode}
        if lib is not None:
            body["library_ids"] = [lib]
        return _titles(_search(app_client, admin_token, **body))

    # Exact codes, names and full-width input: keyword search carries them.
    assert top("XR-7731-B")[0] == "pump-manual.md"
    assert top("ZK-2024-017")[0] == "设备保养.md"
    assert top("ＺＫ－２０２４－０１７")[0] == "设备保养.md"
    assert top("张伟")[0] == "采购联系人.md"
    assert top("张伟", mode="bm25")[0] == "采购联系人.md"
    # Paraphrase with no shared content word: dense retrieval carries it.
    paraphrase = "How much can I get back for a hotel room on a business journey?"
    assert top(paraphrase, lib=en)[0] == "travel-policy.md"
    assert top("我工作满一年了，可以休几天假？", lib=zh)[0] == "年假制度.md"
    # Mixed Chinese and English.
    assert top("ZK-2024-017 空压机多久保养一次")[0] == "设备保养.md"

    result = _search(app_client, admin_token, query="XR-7731-B seal", top_k=3, rerank=False)
    best = result["results"][0]
    # Found by all three rankers (multilingual and English embedders, BM25), fused.
    assert set(best["scores"]) == {"dense", "dense_en", "bm25"}
    assert best["library_name"] == "English"
    assert (best["title"], best["filename"]) == ("XR-7731-B circulation pump", "pump-manual.md")
    assert best["heading_path"][:1] == ["XR-7731-B circulation pump"]
    assert result["language"] == "en" and result["reranked"] is False
    zh_result = _search(app_client, admin_token, query="年假几天", rerank=False)
    assert zh_result["language"] == "zh"
    assert "dense_en" not in zh_result["results"][0]["scores"]  # English embedder: English only

    # English chunks carry a second, English embedding; Chinese chunks do not.
    with db.session_scope(settings) as session:
        rows = session.exec(select(Chunk.library_id, Chunk.embedding_en)).all()
    assert all(e is not None for lib, e in rows if lib == en)
    assert all(e is None for lib, e in rows if lib == zh)
    manifest = read_manifest(settings.indexes_dir, en)
    assert manifest is not None and manifest.embedder_en == "bge-small-en-v1.5-int8"
    assert manifest.count_en == manifest.count


def test_document_filters_apply_inside_the_search(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lib = _ingest(settings, tmp_path, "English", ENGLISH)
    with db.session_scope(settings) as session:
        rows = session.exec(
            select(Document.filename, Document.id).where(Document.library_id == lib)
        )
        docs = {name: int(i) for name, i in rows if i is not None}
        chunks = {
            name: {c.id for c in chunk_repo.for_document(session, i)} for name, i in docs.items()
        }
    pump, travel = docs["pump-manual.md"], docs["travel-policy.md"]
    retriever = Retriever(settings)
    query = "XR-7731-B pump seal hotel lodging passphrase canteen"

    def search(filters: dict[int, DocFilter] | None) -> list[Any]:
        with db.session_scope(settings) as session:
            return retriever.search(
                session, query, [lib], top_k=10, rerank=False, filters=filters
            ).passages

    def chunk_ids(passages: list[Any]) -> set[int]:
        return {cid for p in passages for cid in [*p.chunk_ids, *p.duplicate_chunk_ids]}

    whole = search(None)
    assert chunk_ids(whole) & chunks["pump-manual.md"]
    denied = search({lib: DocFilter(frozenset({pump}), allow=False)})
    assert denied and pump not in {p.document_id for p in denied}
    assert not chunk_ids(denied) & chunks["pump-manual.md"]
    assert {p.document_id for p in denied} == set(docs.values()) - {pump}
    allowed = search({lib: DocFilter(frozenset({travel}), allow=True)})
    assert allowed and {p.document_id for p in allowed} == {travel}
    assert search({lib: DocFilter(frozenset(), allow=True)}) == []
    assert search({lib: DocFilter(frozenset(), allow=False)}) == whole
    # Applied inside the indexes: the after-the-fact check never had to withhold a chunk.
    assert not [r for r in caplog.records if r.name == "retrieval.service"]
    # Chunk ids of many documents at once: the IN list is split (SQLite's parameter limit).
    with db.session_scope(settings) as session:
        many = chunk_repo.ids_for_documents(session, [*range(10_000, 12_500), pump, travel])
    assert many == sorted(chunks["pump-manual.md"] | chunks["travel-policy.md"])


def test_english_queries_are_reranked_by_default(
    settings: Settings, tmp_path: Path, app_client: TestClient, admin_token: str
) -> None:
    _ingest(settings, tmp_path, "English", ENGLISH)
    result = _search(app_client, admin_token, query="When should the pump seal be replaced?")
    assert result["reranked"] is True
    assert "rerank" in result["results"][0]["scores"]
    assert result["results"][0]["filename"] == "pump-manual.md"
    # The reranker is English-only: Chinese queries keep the fused order.
    assert _search(app_client, admin_token, query="空压机保养")["reranked"] is False


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"query": ""}, 422),
        ({"query": "   "}, 422),
        ({"query": "x" * 2001}, 422),
        ({"query": "pump", "top_k": 0}, 422),
        ({"query": "pump", "top_k": 51}, 422),
        ({"query": "pump", "mode": "magic"}, 422),
    ],
)
def test_bad_search_requests_get_clear_errors(
    app_client: TestClient, admin_token: str, body: dict[str, Any], status: int
) -> None:
    r = app_client.post(f"{V1}/search", json=body, headers=auth(admin_token))
    assert r.status_code == status, r.text
    assert "error" in r.json() or "detail" in r.json()


def test_cli_search(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _ingest(settings, tmp_path, "English", ENGLISH)
    _ingest(settings, tmp_path, "中文", CHINESE)
    monkeypatch.setenv("ZHIKU_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ZHIKU_DATABASE_URL", settings.db_url)
    from core.settings import reset_settings

    reset_settings()
    runner = CliRunner()
    out = runner.invoke(cli_app, ["search", "XR-7731-B", "--library", "English", "-k", "2"])
    assert out.exit_code == 0, out.output
    assert "XR-7731-B circulation pump (pump-manual.md) · English" in out.output
    out = runner.invoke(cli_app, ["search", "年假", "--json"])
    assert out.exit_code == 0, out.output
    top = json.loads(out.output)["results"][0]
    assert (top["filename"], top["title"]) == ("年假制度.md", "年假"), top
    out = runner.invoke(cli_app, ["search", "pump", "--library", "Nope"])
    assert out.exit_code != 0 and "no library named 'Nope'" in out.output
    reset_settings()
