"""`zhiku backup` / `zhiku restore` with the real pieces: a Celery worker process ingesting
while the backup runs, the real index store and retriever, SQLite and PostgreSQL, the REST
API on the restored system, and the `zhiku` command itself for the refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from api import admission
from api.app import create_app
from cli.ingest_cmd import collect, ingest_paths
from cli.main import app as cli_app
from core import db
from core.backup import MANIFEST_NAME, read_backup_manifest, restore_backup
from core.models import Chunk, DocStatus, Document, Role
from core.repo import users
from core.settings import Settings, reset_settings
from core.tasks import enqueue_ingest
from retrieval.index_store import load_snapshot, read_manifest
from tests.conftest import WorkerProcess, _create_pg_database, _drop_pg_database
from tests.integration.api_helpers import V1, auth
from workers.backup import create_backup

pytestmark = pytest.mark.integration

PASSWORD = "restore me exactly"

FIRST = {
    "pump-manual.md": "# XR-7731-B circulation pump\n\n## Maintenance\nReplace the shaft seal "
    "of the XR-7731-B every six months. Use only genuine seal kits. A leaking seal shows as "
    "drops of coolant below the motor housing.\n\n## Wiring\nThe pump takes a 400 V "
    "three-phase supply. Connect the earth wire first.\n",
    "travel-policy.md": "# Business trips\n\nStaff who travel for work may claim lodging "
    "expenses up to 600 yuan per night in tier-one cities and 400 yuan elsewhere. Keep the "
    "original invoice from the hotel and submit the claim within thirty days.\n",
    "canteen.md": "# Canteen\n\nThe canteen opens at 11:30 and closes at 13:30. Vegetarian "
    "dishes are marked green.\n",
    "设备保养.md": "# 空压机保养\n\n设备编号 ZK-2024-017 的空压机每季度保养一次，保养时需要"
    "更换空气滤芯并检查润滑油位。\n",
    "采购联系人.md": "# 采购部\n\n办公用品采购请联系张伟，分机号 8021。大宗采购需要部门经理"
    "审批。\n",
    "年假制度.md": "# 年假\n\n员工入职满一年后享有五天带薪年假，满十年后享有十天。年假须提前"
    "两周在系统中申请。\n",
}

QUERIES = [
    "how often is the pump shaft seal replaced",
    "lodging expenses per night",
    "canteen opening hours",
    "calibration of the pressure gauge",
    "空压机多久保养一次",
    "年假有几天",
    "办公用品采购联系谁",
    "压力表校准周期",
]


def _late_doc(i: int) -> tuple[str, str]:
    """Documents the worker ingests while the backup runs (each one distinct)."""
    if i % 2:
        return (
            f"gauge-{i}.md",
            f"# Pressure gauge PG-{i}\n\nThe calibration of the pressure gauge PG-{i} is due "
            f"every {i + 2} months. Record the reading of gauge PG-{i} before and after the "
            f"calibration.\n\n## Storage\nKeep gauge PG-{i} in cabinet {i} of workshop B.\n",
        )
    return (
        f"压力表-{i}.md",
        f"# 压力表 PG-{i}\n\n压力表 PG-{i} 的校准周期是 {i + 2} 个月。校准前后都要记录读数。"
        f"\n\n## 存放\n压力表 PG-{i} 存放在 B 车间 {i} 号柜。\n",
    )


def _search(client: TestClient, token: str, query: str) -> list[dict[str, Any]]:
    r = client.post(f"{V1}/search", json={"query": query, "top_k": 8}, headers=auth(token))
    assert r.status_code == 200, r.text
    return [
        {
            "chunk_id": p["chunk_id"],
            "chunk_ids": p["chunk_ids"],
            "document_id": p["document_id"],
            "text": p["text"],
            "score": p["score"],
        }
        for p in r.json()["results"]
    ]


def _login(client: TestClient, username: str) -> str:
    r = client.post(f"{V1}/auth/login", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _fresh_database(kind: str, tmp: Path) -> tuple[str, str | None]:
    """A new empty database of the same kind: (url, PostgreSQL name to drop)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'zhiku.db'}", None
    name, url = _create_pg_database()
    return url, name


def _target(settings: Settings, tmp: Path, url: str) -> Settings:
    return settings.model_copy(update={"data_dir": tmp, "database_url": url})


def _cli(s: Settings, *args: str) -> Any:
    """The `zhiku` command on `s` (in-process: CliRunner with the environment a user sets)."""
    env = {"ZHIKU_DATA_DIR": str(s.data_dir), "ZHIKU_DATABASE_URL": s.db_url}
    reset_settings()
    try:
        return CliRunner().invoke(cli_app, list(args), env=env)
    finally:
        reset_settings()


class Uploader(threading.Thread):
    """Keeps adding documents (stored original + row, enqueued) until stopped: load."""

    def __init__(self, settings: Settings, library_id: int, folder: Path):
        super().__init__(daemon=True)
        self.settings, self.library_id, self.folder = settings, library_id, folder
        self.stop = threading.Event()
        self.ids: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set() and i < 40:
                i += 1
                name, content = _late_doc(i)
                path = self.folder / name
                path.write_text(content, encoding="utf-8")
                with db.session_scope(self.settings) as session:
                    _, queued = admission.admit(
                        session, self.settings, self.library_id, collect([path]), None
                    )
                for doc_id, version in queued:
                    enqueue_ingest(doc_id, version, self.settings)
                    self.ids.append(doc_id)
                self.stop.wait(0.4)
        except BaseException as exc:  # reported by the test
            self.error = exc


def _statuses(settings: Settings) -> dict[int, str]:
    with db.session_scope(settings) as session:
        return {d.id: d.status for d in session.exec(select(Document)).all() if d.id}


def _chunk_ids_by_doc(settings: Settings) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    with db.session_scope(settings) as session:
        for c in session.exec(select(Chunk)).all():
            assert c.id is not None
            out.setdefault(c.document_id, set()).add(c.id)
    return out


@pytest.fixture
def cleanup_pg() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        _drop_pg_database(name)


def test_backup_under_load_restores_identical_search_originals_and_sign_in(
    settings: Settings,
    worker: WorkerProcess,
    app_client: TestClient,
    tmp_path: Path,
    cleanup_pg: list[str],
) -> None:
    kind = "sqlite" if settings.db_url.startswith("sqlite") else "postgresql"
    with db.session_scope(settings) as session:
        users.create_user(session, "keeper", PASSWORD, role=Role.admin)
    token = _login(app_client, "keeper")

    folder = tmp_path / "first"
    folder.mkdir()
    for name, text in FIRST.items():
        (folder / name).write_text(text, encoding="utf-8")
    summary = ingest_paths(settings, [folder], "Handbook", True, False, True, 300)  # by the worker
    assert summary.ready == len(FIRST), summary.failures
    library_id = summary.library_id
    _search(app_client, token, QUERIES[0])  # loads the retriever before the clock matters

    # Load: a stream of uploads the worker ingests while the backup runs.
    late = tmp_path / "late"
    late.mkdir()
    uploader = Uploader(settings, library_id, late)
    uploader.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # some late documents are ready, others on the way
        states = _statuses(settings)
        if sum(states.get(i) == DocStatus.ready for i in uploader.ids) >= 2:
            break
        assert uploader.error is None, uploader.error
        time.sleep(0.3)
    else:
        pytest.fail(f"the worker ingested nothing: {worker.log_path.read_text()[-3000:]}")

    at_snapshot: dict[str, Any] = {}

    def observe() -> None:
        """The source at the moment of the snapshot (every index writer lock is held)."""
        retriever = app_client.app.state.retriever  # type: ignore[attr-defined]
        retriever.searcher.reader(library_id).wait_loaded()
        at_snapshot["search"] = {q: _search(app_client, token, q) for q in QUERIES}
        at_snapshot["statuses"] = _statuses(settings)

    dest = tmp_path / "backup"
    stages: set[str] = set()
    started = time.perf_counter()
    result = create_backup(
        settings, dest, lambda stage, _d, _t: stages.add(stage), on_snapshot=observe
    )
    backup_s = time.perf_counter() - started
    time.sleep(1.0)  # the uploads and the worker go on after the snapshot
    uploader.stop.set()
    uploader.join(30)
    assert uploader.error is None, uploader.error

    manifest = result.manifest
    assert {"originals", "database", "indexes"} <= stages
    assert not dest.with_name("backup.partial").exists()
    assert (dest / MANIFEST_NAME).is_file()
    assert manifest.database["kind"] == kind
    assert manifest.counts["libraries"] == 1
    late_states = [at_snapshot["statuses"][i] for i in uploader.ids if i in at_snapshot["statuses"]]
    assert DocStatus.ready in late_states, "no late document was ready at the snapshot"
    assert any(s != DocStatus.ready for s in late_states), (
        "every late document was ready at the snapshot: the backup did not run under load"
    )
    # (rows may be added between the snapshot and `observe`; `ready` only changes under the
    # index writer lock, which the backup held)
    assert manifest.counts["documents"] <= len(at_snapshot["statuses"])
    assert manifest.counts["documents_ready"] == sum(
        s == DocStatus.ready for s in at_snapshot["statuses"].values()
    )
    assert any(r for r in at_snapshot["search"].values()), "the source found nothing"
    # secrets and backup files: private
    assert (dest / "secrets.json").is_file()
    assert (dest.stat().st_mode & 0o777) == 0o700
    for entry in manifest.files:
        assert ((dest / entry.path).stat().st_mode & 0o777) == 0o600, entry.path

    # Refused: a destination that is not empty (the command says what to do, exit code 1).
    out = _cli(settings, "backup", str(dest))
    assert out.exit_code == 1, out.output
    assert "not empty" in out.output and "new or empty directory" in out.output

    # The source worker stops (the restored system gets its own); Redis forgets its jobs.
    worker.stop()
    redis.Redis.from_url(settings.redis_url).flushdb()

    # Restore into a fresh data dir and a fresh database (migrated, as a new install's is).
    url, pg_name = _fresh_database(kind, tmp_path / "restored")
    if pg_name:
        cleanup_pg.append(pg_name)
    target = _target(settings, tmp_path / "restored", url)
    target.data_dir.mkdir()
    db.migrate(target)
    started = time.perf_counter()
    out = _cli(target, "restore", str(dest), "--json")
    restore_s = time.perf_counter() - started
    assert out.exit_code == 0, out.output
    restored_info = json.loads(out.output.strip().splitlines()[-1])
    assert restored_info["counts"] == manifest.counts
    print(
        f"\n[{kind}] backup {backup_s:.2f} s, restore {restore_s:.2f} s, "
        f"{manifest.total_bytes / 1e6:.2f} MB, {len(manifest.files)} files, {manifest.counts}"
    )

    # Never half: the restored index holds exactly the chunks of the documents the restored
    # database calls ready (plus any already indexed but not yet marked), each one whole.
    chunks_of = _chunk_ids_by_doc(target)
    states = _statuses(target)
    assert {i for i, s in states.items() if s == DocStatus.ready} == {
        i for i, s in at_snapshot["statuses"].items() if s == DocStatus.ready
    }
    assert set(states) <= set(at_snapshot["statuses"])
    index_manifest = read_manifest(target.indexes_dir, library_id)
    assert index_manifest is not None
    indexed = set(load_snapshot(target.indexes_dir, library_id, index_manifest).chunk_ids.tolist())
    for doc_id, status in states.items():
        mine = chunks_of.get(doc_id, set())
        if status == DocStatus.ready:
            assert mine and mine <= indexed, f"ready document {doc_id} is not wholly indexed"
        elif status != DocStatus.indexing:
            assert not (mine & indexed), f"document {doc_id} ({status}) is half indexed"
    assert indexed <= set().union(*chunks_of.values())

    with TestClient(create_app(target)) as restored:
        # The same user signs in with the same password.
        restored_token = _login(restored, "keeper")
        # Identical search results: same chunks, texts, scores and order.
        for query in QUERIES:
            got = _search(restored, restored_token, query)
            want = at_snapshot["search"][query]
            assert [(p["chunk_id"], p["chunk_ids"], p["text"]) for p in got] == [
                (p["chunk_id"], p["chunk_ids"], p["text"]) for p in want
            ], query
            assert [p["score"] for p in got] == pytest.approx([p["score"] for p in want]), query
        # Every original of a document in the backup downloads byte for byte.
        sources = {p.name: p.read_bytes() for p in [*folder.iterdir(), *late.iterdir()]}
        with db.session_scope(target) as session:
            docs = session.exec(select(Document)).all()
        assert docs
        for doc in docs:
            r = restored.get(f"{V1}/documents/{doc.id}/file", headers=auth(restored_token))
            assert r.status_code == 200, r.text
            assert r.content == sources[Path(doc.filename).name], doc.filename

    # Nothing lost: a worker on the restored system finishes what was under way.
    w2 = WorkerProcess(target, tmp_path / "restored-worker.log")
    w2.start()
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            states = _statuses(target)
            if all(s in (DocStatus.ready, DocStatus.failed) for s in states.values()):
                break
            time.sleep(1)
        assert all(s == DocStatus.ready for s in states.values()), states
    finally:
        w2.stop()
    with TestClient(create_app(target)) as restored:
        found = _search(restored, _login(restored, "keeper"), "压力表 PG-2 校准周期")
        assert any("PG-2" in p["text"] for p in found), found

    # Refused: a data dir and database that are not empty.
    out = _cli(target, "restore", str(dest))
    assert out.exit_code == 1, out.output
    assert "already holds Zhiku data" in out.output

    # Refused: an empty data dir but a database that holds data (the source's).
    out = _cli(_target(settings, tmp_path / "empty-dir", settings.db_url), "restore", str(dest))
    assert out.exit_code == 1, out.output
    assert "already holds data" in out.output and "restore needs an empty database" in out.output

    # Refused: a tampered file; nothing is written to the (empty) target.
    tampered = tmp_path / "tampered"
    shutil.copytree(dest, tampered)
    victim = next(f for f in manifest.files if f.path.startswith("originals/"))
    data = bytearray((tampered / victim.path).read_bytes())
    data[0] ^= 0x20
    (tampered / victim.path).write_bytes(bytes(data))
    url3, pg3 = _fresh_database(kind, tmp_path / "third")
    if pg3:
        cleanup_pg.append(pg3)
    third = _target(settings, tmp_path / "third", url3)
    out = _cli(third, "restore", str(tampered))
    assert out.exit_code == 1, out.output
    assert f"{victim.path} does not match its sha256" in out.output
    assert "nothing was restored" in out.output
    assert not (third.data_dir / "originals").exists()
    assert not (third.data_dir / "indexes").exists()
    if kind == "sqlite":
        assert not (third.data_dir / "zhiku.db").exists()
    # ...and the intact backup restores into that same target.
    restore_backup(third, dest)
    assert read_backup_manifest(dest).counts == manifest.counts
    assert (third.data_dir / "secrets.json").read_bytes() == (dest / "secrets.json").read_bytes()


def test_unreachable_database_and_full_disk_are_clear_errors(
    settings: Settings, tmp_path: Path
) -> None:
    # PostgreSQL that does not answer: backup and restore both say so.
    down = settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/zhiku"}
    )
    out = _cli(down, "backup", str(tmp_path / "b"))
    assert out.exit_code == 1, out.output
    assert "cannot reach the database at 127.0.0.1:1/zhiku" in out.output
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Note\n\nThe archive room is on floor three.\n")
    ingest_paths(settings, [folder], "Notes", True, True, True, 0)
    good = tmp_path / "good"
    create_backup(settings, good)
    empty = tmp_path / "empty-target"
    empty.mkdir()
    out = _cli(down.model_copy(update={"data_dir": empty}), "restore", str(good))
    assert out.exit_code == 1, out.output
    kind = "sqlite" if settings.db_url.startswith("sqlite") else "postgresql"
    if kind == "postgresql":
        assert "cannot reach the database" in out.output
    else:  # a SQLite backup never goes into PostgreSQL
        assert "same kind of database" in out.output

    # A full disk: a 64 KiB file system as the destination.
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (the full-disk check) needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        out = _cli(settings, "backup", str(small / "b"))
        assert out.exit_code == 1, out.output
        assert "free some space or choose another place" in out.output
        assert list(small.iterdir()) == []  # nothing that looks like a backup
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_backup_of_an_older_schema_is_migrated_on_restore(
    database_url: str, tmp_path: Path, cleanup_pg: list[str]
) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from core.models import Library

    old = Settings(data_dir=tmp_path / "old", database_url=database_url)
    old.data_dir.mkdir()
    cfg = db.alembic_config(old)
    with db.get_engine(old).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0006")  # before libraries had `allow_download`
        conn.execute(
            text(
                "INSERT INTO library (name, description, created_at) "
                "VALUES ('Archive', '', CURRENT_TIMESTAMP)"
            )
        )
    with db.session_scope(old) as session:
        users.create_user(session, "veteran", PASSWORD, role=Role.admin)
    dest = tmp_path / "backup"
    manifest = create_backup(old, dest).manifest
    assert manifest.database["revision"] == "0006"
    assert manifest.counts["libraries"] == 1 and manifest.counts["users"] == 1

    kind = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    url, pg_name = _fresh_database(kind, tmp_path / "new")
    if pg_name:
        cleanup_pg.append(pg_name)
    new = Settings(data_dir=tmp_path / "new", database_url=url)
    restore_backup(new, dest)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with db.session_scope(new) as session:
        revision = session.exec(text("SELECT version_num FROM alembic_version")).one()[0]  # type: ignore[call-overload]
        assert revision == head
        (library,) = session.exec(select(Library)).all()
        assert library.name == "Archive" and library.allow_download is True
        veteran = users.get_by_username(session, "veteran")
        assert veteran is not None
        # ids handed out after the restore follow the restored ones
        session.add(Library(name="After restore"))
        session.flush()
    with TestClient(create_app(new)) as client:
        assert _login(client, "veteran")
