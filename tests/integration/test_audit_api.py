"""The audit log: filtered keyset pages, streamed CSV/JSONL exports (formula-safe, audited
themselves), admin only, retention purge (repo, worker schedule, CLI)."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from core import db
from core.audit_export import FORMULA_PREFIXES
from core.models import AuditEvent, utcnow
from core.repo import audit
from core.settings import Settings
from tests.conftest import REPO, settings_env
from tests.integration.api_helpers import V1, auth, create_user

pytestmark = pytest.mark.integration

BASE = datetime(2020, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _seed(settings: Settings, *events: dict[str, Any]) -> list[int]:
    """Insert events with chosen times; their ids in order."""
    rows = [AuditEvent(**e) for e in events]
    with db.session_scope(settings) as s:
        for row in rows:
            s.add(row)
            s.flush()
    return [r.id for r in rows if r.id is not None]


def _events(settings: Settings, action: str) -> list[AuditEvent]:
    with db.session_scope(settings) as s:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)  # type: ignore[arg-type]
        return list(s.exec(stmt))


def _ids(client: TestClient, token: str, **params: Any) -> list[int]:
    r = client.get(f"{V1}/audit", params={"limit": 1000, **params}, headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.json()["next_after_id"] is None
    return [item["id"] for item in r.json()["items"]]


def test_filters(app_client: TestClient, admin_token: str, settings: Settings) -> None:
    ids = _seed(
        settings,
        {"at": BASE, "action": "login.success", "actor_user_id": 9101, "client_ip": "10.0.0.1"},
        {"at": BASE + H, "action": "login.failure", "detail": {"username": "mallory"}},
        {"at": BASE + 2 * H, "action": "login.locked"},
        {
            "at": BASE + 3 * H,
            "action": "document.upload",
            "actor_user_id": 9101,
            "actor_api_key_id": 77,
            "target_type": "document",
            "target_id": "7",
        },
        {"at": BASE + 4 * H, "action": "docYx.thing", "actor_user_id": 9102},
        {"at": BASE + 5 * H, "action": "loginXsuccess"},
    )
    before_day_2 = (BASE + 24 * H).isoformat()
    # Prefix: every login.… in range (the admin's own sign-in today is outside `until`).
    assert _ids(app_client, admin_token, action="login.", until=before_day_2) == ids[:3]
    assert _ids(app_client, admin_token, action="login.*", until=before_day_2) == ids[:3]
    # Several actions: any of them; exact names are not prefixes.
    assert _ids(
        app_client, admin_token, action=["login.success", "document.upload"], until=before_day_2
    ) == [ids[0], ids[3]]
    assert _ids(app_client, admin_token, action="login", until=before_day_2) == []
    # LIKE wildcards in a prefix are literal.
    assert _ids(app_client, admin_token, action="doc_x.") == []
    assert _ids(app_client, admin_token, action="docYx.") == [ids[4]]
    # The admin's own sign-in is found without a time range.
    assert len(_ids(app_client, admin_token, action="login.success")) == 2

    assert _ids(app_client, admin_token, actor_user_id=9101) == [ids[0], ids[3]]
    assert _ids(app_client, admin_token, actor_api_key_id=77) == [ids[3]]
    assert _ids(app_client, admin_token, target_type="document", target_id="7") == [ids[3]]
    assert _ids(app_client, admin_token, target_type="document", target_id="8") == []

    # since inclusive, until exclusive; an offset is honoured (09:00+08:00 is 01:00Z).
    assert (
        _ids(
            app_client,
            admin_token,
            since="2020-01-01T09:00:00+08:00",
            until=(BASE + 3 * H).isoformat(),
        )
        == ids[1:3]
    )
    # A naive time is UTC.
    assert (
        _ids(app_client, admin_token, since="2020-01-01T04:00:00", until="2020-01-01T23:00:00")
        == ids[4:6]
    )

    r = app_client.get(f"{V1}/audit", params={"actor_user_id": 9101}, headers=auth(admin_token))
    item = r.json()["items"][1]
    assert item["action"] == "document.upload" and item["actor_api_key_id"] == 77
    assert datetime.fromisoformat(item["at"]) == BASE + 3 * H
    assert item["target_type"] == "document" and item["detail"] == {}

    for bad in ({"limit": 0}, {"limit": 1001}, {"since": "yesterday"}, {"after_id": -1}):
        r = app_client.get(f"{V1}/audit", params=bad, headers=auth(admin_token))
        assert r.status_code == 422, (bad, r.text)


def test_keyset_pagination_returns_every_event_once(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    seeded = _seed(settings, *({"at": BASE + i * H, "action": f"page.e{i}"} for i in range(23)))
    _seed(settings, {"at": BASE, "action": "other.noise"})

    def pages(**params: Any) -> tuple[list[int], int]:
        seen: list[int] = []
        after: int | None = None
        calls = 0
        while True:
            q = {**params, **({"after_id": after} if after is not None else {})}
            r = app_client.get(f"{V1}/audit", params=q, headers=auth(admin_token))
            assert r.status_code == 200, r.text
            body = r.json()
            calls += 1
            seen += [i["id"] for i in body["items"]]
            after = body["next_after_id"]
            if after is None:
                return seen, calls
            assert after == seen[-1]

    seen, calls = pages(action="page.", limit=5)
    assert seen == seeded and calls == 5  # 5+5+5+5+3
    seen, calls = pages(action="page.", limit=23)  # exactly one page: no empty second page
    assert seen == seeded and calls == 1
    everything, _ = pages(limit=4)
    assert len(everything) == len(set(everything)) and everything == sorted(everything)
    assert set(seeded) <= set(everything)
    with db.session_scope(settings) as s:
        assert everything == [e.id for e in audit.iter_events(s, batch=3)]
        assert audit.count(s) == len(everything)


def _unescape(cell: str) -> str:
    if cell.startswith("'") and cell[1:].startswith(FORMULA_PREFIXES):
        return cell[1:]
    return cell


def _from_csv(text: str) -> list[dict[str, Any]]:
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text[1:], newline="")))
    out = []
    for row in rows:
        row = {k: _unescape(v) for k, v in row.items()}
        out.append(
            {
                "id": int(row["id"]),
                "at": datetime.fromisoformat(row["at"]),
                "action": row["action"],
                "actor_user_id": int(row["actor_user_id"]) if row["actor_user_id"] else None,
                "actor_api_key_id": int(row["actor_api_key_id"])
                if row["actor_api_key_id"]
                else None,
                "target_type": row["target_type"],
                "target_id": row["target_id"],
                "client_ip": row["client_ip"],
                "detail": json.loads(row["detail"]),
            }
        )
    return out


def _normal(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**i, "at": i["at"] if isinstance(i["at"], datetime) else datetime.fromisoformat(i["at"])}
        for i in items
    ]


FORMULAS = {
    "action": "=1+2",
    "target_type": "+x",
    "target_id": "=cmd|' /C calc'!A0",
    "client_ip": "@SUM(A1)",
}


def test_exports_parse_back_and_are_audited(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    actor = 4242
    _seed(
        settings,
        {
            "at": BASE,
            "action": "document.upload",
            "actor_user_id": actor,
            "target_type": "document",
            "target_id": "12",
            "client_ip": "10.1.2.3",
            "detail": {"filename": "报销制度.txt", "quote": 'a "b", c\nd', "n": 3},
        },
        {"at": BASE + H, "actor_user_id": actor, **FORMULAS, "detail": {"x": "=2"}},
        {"at": BASE + 2 * H, "action": "-minus", "actor_user_id": actor, "target_id": "\tTAB"},
        {"at": BASE + 3 * H, "action": "login.failure", "actor_user_id": actor, "client_ip": "\r1"},
        {"at": BASE + 4 * H, "action": "not.mine", "actor_user_id": actor + 1},
    )
    expected = app_client.get(
        f"{V1}/audit", params={"actor_user_id": actor}, headers=auth(admin_token)
    ).json()["items"]
    assert len(expected) == 4
    assert _events(settings, "audit.export") == []  # listing is not an export

    today = utcnow().strftime("%Y%m%d")
    r = app_client.get(
        f"{V1}/audit/export",
        params={"format": "csv", "actor_user_id": actor},
        headers=auth(admin_token),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="zhiku-audit-{today}.csv"'
    raw = r.content.decode("utf-8")
    assert raw.startswith("\ufeffid,at,action,actor_user_id,actor_api_key_id,target_type,")
    assert _from_csv(raw) == _normal(expected)

    # Formula injection: every dangerous cell starts with a quote in the file itself.
    cells = list(csv.reader(io.StringIO(raw[1:], newline="")))
    header, rows = cells[0], cells[1:]
    formula_row = dict(zip(header, rows[1], strict=True))
    for column, value in FORMULAS.items():
        assert formula_row[column] == "'" + value
    assert json.loads(formula_row["detail"]) == {"x": "=2"}
    assert dict(zip(header, rows[2], strict=True))["action"] == "'-minus"
    assert dict(zip(header, rows[2], strict=True))["target_id"] == "'\tTAB"
    assert dict(zip(header, rows[3], strict=True))["client_ip"] == "'\r1"
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_PREFIXES), row

    # The export was audited exactly once, with who, how and what.
    (event,) = _events(settings, "audit.export")
    admin_id = app_client.get(f"{V1}/auth/me", headers=auth(admin_token)).json()["id"]
    assert event.actor_user_id == admin_id
    assert event.detail["format"] == "csv" and event.detail["via"] == "api"
    assert event.detail["filters"] == {"actor_user_id": actor}

    r = app_client.get(
        f"{V1}/audit/export",
        params={"format": "jsonl", "actor_user_id": actor, "since": BASE.isoformat()},
        headers=auth(admin_token),
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["content-disposition"] == (f'attachment; filename="zhiku-audit-{today}.jsonl"')
    lines = r.content.decode("utf-8").splitlines()
    assert _normal([json.loads(line) for line in lines]) == _normal(expected)
    assert len(_events(settings, "audit.export")) == 2
    assert _events(settings, "audit.export")[1].detail["filters"] == {
        "actor_user_id": actor,
        "since": "2020-01-01T00:00:00.000000Z",
    }

    # An export can include itself (the event is written before the stream starts).
    r = app_client.get(
        f"{V1}/audit/export",
        params={"format": "jsonl", "action": "audit."},
        headers=auth(admin_token),
    )
    assert [json.loads(line)["action"] for line in r.text.splitlines()] == ["audit.export"] * 3

    r = app_client.get(f"{V1}/audit/export", params={"format": "xml"}, headers=auth(admin_token))
    assert r.status_code == 422


def test_export_streams_in_batches(
    app_client: TestClient, admin_token: str, settings: Settings
) -> None:
    n = 2500  # more than one keyset batch of 1000
    with db.session_scope(settings) as s:
        for i in range(n):
            audit.record(s, "bulk.event", target_id=i, i=i)
    r = app_client.get(
        f"{V1}/audit/export", params={"format": "csv", "action": "bulk."}, headers=auth(admin_token)
    )
    rows = _from_csv(r.text)
    assert [row["target_id"] for row in rows] == [str(i) for i in range(n)]
    assert [row["detail"] for row in rows] == [{"i": i} for i in range(n)]


def test_admin_only(app_client: TestClient, admin_token: str, settings: Settings) -> None:
    _, staff = create_user(app_client, admin_token, "staffer")
    _, librarian = create_user(app_client, admin_token, "shelver", role="librarian")
    for path in (f"{V1}/audit", f"{V1}/audit/export"):
        assert app_client.get(path, headers=auth(staff)).status_code == 403
        assert app_client.get(path, headers=auth(librarian)).status_code == 403
        assert app_client.get(path).status_code == 401
        assert app_client.get(path, headers=auth("not-a-token")).status_code == 401
    assert _events(settings, "audit.export") == []


def test_purge_older_than(settings: Settings) -> None:
    now = utcnow()
    old = _seed(
        settings,
        {"at": now - timedelta(days=400), "action": "old.a"},
        {"at": now - timedelta(days=366), "action": "old.b"},
    )
    new = _seed(
        settings,
        {"at": now - timedelta(days=364), "action": "new.a"},
        {"at": now, "action": "new.b"},
    )
    cutoff = now - timedelta(days=365)
    with db.session_scope(settings) as s:
        assert audit.purge_older_than(s, cutoff) == 2
    with db.session_scope(settings) as s:
        left = [e.id for e in audit.iter_events(s)]
    assert not set(old) & set(left) and set(new) <= set(left)
    (purge,) = _events(settings, "audit.purge")
    assert purge.detail["count"] == 2
    assert datetime.fromisoformat(purge.detail["cutoff"]) == cutoff
    assert purge.at >= now

    # Nothing more to delete: recorded when asked for (CLI), silent for the schedule.
    with db.session_scope(settings) as s:
        assert audit.purge_older_than(s, cutoff) == 0
        assert audit.purge_older_than(s, cutoff, record_empty=False) == 0
    assert [e.detail["count"] for e in _events(settings, "audit.purge")] == [2, 0]


def test_worker_purges_past_retention_at_most_hourly(settings: Settings) -> None:
    from workers.reconcile import AUDIT_PURGE_EVERY_SECONDS, Reconciler
    from workers.retention import purge_expired_audit

    now = utcnow()
    _seed(settings, {"at": now - timedelta(days=40), "action": "old.x"})
    keep = settings.model_copy(update={"audit_retention_days": 0})
    assert purge_expired_audit(keep) == 0  # 0 keeps events for ever
    assert len(_events(settings, "old.x")) == 1 and _events(settings, "audit.purge") == []

    thirty = settings.model_copy(update={"audit_retention_days": 30})
    reconciler = Reconciler(thirty)
    assert reconciler.maybe_purge_audit(now=1000.0) == 1
    assert _events(settings, "old.x") == []
    (purge,) = _events(settings, "audit.purge")
    assert purge.detail["via"] == "worker" and purge.detail["retention_days"] == 30

    _seed(settings, {"at": now - timedelta(days=40), "action": "old.y"})
    assert reconciler.maybe_purge_audit(now=1000.0 + AUDIT_PURGE_EVERY_SECONDS - 1) is None
    assert len(_events(settings, "old.y")) == 1
    assert reconciler.maybe_purge_audit(now=1000.0 + AUDIT_PURGE_EVERY_SECONDS) == 1
    assert _events(settings, "old.y") == []
    # An empty scheduled purge leaves no trace.
    assert reconciler.maybe_purge_audit(now=1000.0 + 2 * AUDIT_PURGE_EVERY_SECONDS) == 0
    assert len(_events(settings, "audit.purge")) == 2


def _zhiku(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"zhiku {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_export_and_purge(settings: Settings, tmp_path: Path) -> None:
    now = utcnow()
    ids = _seed(
        settings,
        {"at": now - timedelta(days=3), "action": "cli.a", "target_id": "=x"},
        {"at": now - timedelta(days=2), "action": "cli.b", "detail": {"名字": "张三"}},
        {"at": now - timedelta(days=1), "action": "other.c"},
        {"at": now - timedelta(days=500), "action": "cli.ancient"},
    )
    out = tmp_path / "audit.jsonl"
    since = (now - timedelta(days=10)).isoformat()
    proc = _zhiku(
        settings, "audit", "export", "--format", "jsonl", "--out", str(out), "--since", since,
        "--action", "cli.",
    )  # fmt: skip
    assert proc.stdout == ""  # the rows went to the file; progress and summary to stderr
    assert "wrote 2 audit events" in proc.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ids[:2]
    assert lines[0]["target_id"] == "=x"  # JSON needs no formula escaping
    assert lines[1]["detail"] == {"名字": "张三"}
    (event,) = _events(settings, "audit.export")
    assert event.detail["via"] == "cli" and event.detail["format"] == "jsonl"
    assert event.detail["filters"]["actions"] == ["cli."]

    # CSV to stdout: no BOM (it is for files Excel opens), formula cells escaped.
    proc = _zhiku(settings, "audit", "export", "--action", "cli.a")
    rows = list(csv.DictReader(io.StringIO(proc.stdout, newline="")))
    assert [r["target_id"] for r in rows] == ["'=x"]

    proc = _zhiku(settings, "audit", "purge", "--older-than-days", "100")
    assert re.search(r"purged 1 audit events older than", proc.stdout), proc.stdout
    assert _events(settings, "cli.ancient") == []
    (purge,) = _events(settings, "audit.purge")
    assert purge.detail["via"] == "cli" and purge.detail["count"] == 1
