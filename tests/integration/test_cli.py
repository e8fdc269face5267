"""The `zhiku` command as a user runs it (a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from core import db
from core.models import DocStatus
from core.repo import documents, libraries
from retrieval.analyzer import analyze
from retrieval.index_store import LibraryReader, read_manifest
from tests.conftest import REPO, settings_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


def zhiku(settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"zhiku {' '.join(args)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _folder(tmp: Path) -> Path:
    root = tmp / "handbook"
    (root / "hr").mkdir(parents=True)
    (root / "hr" / "leave.md").write_text("# Annual leave\n\nStaff get 20 days of annual leave.\n")
    (root / "报销制度.txt").write_text(
        "差旅报销须在出差结束后十个工作日内提交。\n", encoding="utf-8"
    )
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntruncated")
    (root / "memo.pdf").write_text("Memo: the canteen closes at 14:00 on Fridays.\n")
    with zipfile.ZipFile(tmp / "more.zip", "w") as zf:
        zf.writestr("it/vpn.md", "# VPN\n\nUse the ZK-VPN-42 profile from home.")
    return root


def test_create_user_and_inline_ingest_with_json_summary(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = zhiku(
        settings, "admin", "create-user", "boss", "--password", "a long passphrase", "--admin"
    )
    assert "created admin boss" in out.stdout
    weak = zhiku(settings, "admin", "create-user", "weak", "--password", "123", check=False)
    assert weak.returncode == 1 and "password" in weak.stderr
    out = zhiku(settings, "admin", "reset-password", "boss", "--password", "another long phrase")
    assert "password of boss changed" in out.stdout
    from core import db
    from core.repo import users
    from core.security import verify_password

    with db.session_scope(settings) as s:
        boss = users.get_by_username(s, "boss")
        assert boss is not None and boss.role == "admin"
        assert verify_password(boss.password_hash, "another long phrase")

    root = _folder(tmp_path)
    proc = zhiku(
        settings,
        "ingest",
        str(root),
        str(tmp_path / "more.zip"),
        "--library",
        "Handbook",
        "--create",
        "--inline",
        "--json",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr  # one file failed: exit status says so
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ready"] == 4 and summary["failed"] == 1 and summary["duplicates"] == 0
    assert summary["failures"][0]["file"].endswith("broken.pdf")
    assert summary["failures"][0]["reason"]
    assert summary["chunks"] >= 3 and summary["seconds"] > 0

    with db.session_scope(settings) as s:
        lib = libraries.get_by_name(s, "Handbook")
        assert lib is not None and lib.id is not None
        docs, _ = documents.list_for_library(s, lib.id)
        assert {(d.folder, d.filename) for d in docs if d.status == DocStatus.ready} == {
            ("handbook/hr", "leave.md"),
            ("handbook", "报销制度.txt"),
            ("handbook", "memo.pdf"),
            ("more/it", "vpn.md"),
        }
        memo = next(d for d in docs if d.filename == "memo.pdf")
        assert any("says .pdf" in w for w in memo.warnings), memo.warnings
    snap = LibraryReader(settings.indexes_dir, lib.id).current()
    assert snap is not None and snap.keywords.search(analyze("ZK-VPN-42"), 3)
    assert snap.keywords.search(analyze("差旅报销"), 3)

    # The same folder again: everything is a duplicate, nothing is ingested twice.
    again = zhiku(
        settings, "ingest", str(root), "--library", "Handbook", "--inline", "--json", check=False
    )
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    # A file that failed is tried again (and fails again); the rest are duplicates.
    assert summary["duplicates"] == 4 - 1 and summary["ready"] == 0 and summary["failed"] == 1

    # Rebuilding from the Chunk rows gives the same content under a new version.
    before = read_manifest(settings.indexes_dir, lib.id)
    assert before is not None
    out = zhiku(settings, "index", "rebuild", "--library", "Handbook")
    after = read_manifest(settings.indexes_dir, lib.id)
    assert after is not None and after.version == before.version + 1 and after.count == before.count
    assert "index version" in out.stdout


def test_unknown_library_without_create_is_a_clear_error(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.txt").write_text("x")
    proc = zhiku(
        settings, "ingest", str(tmp_path / "a.txt"), "--library", "Nope", "--inline", check=False
    )
    assert proc.returncode != 0 and "--create" in (proc.stderr + proc.stdout)


def test_ingest_through_the_workers_waits_and_reports(settings, worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "faq.md").write_text("# FAQ\n\nThe help desk number is 8800.\n")
    (tmp_path / "empty.txt").write_bytes(b"")
    proc = zhiku(
        settings,
        "ingest",
        str(tmp_path / "faq.md"),
        str(tmp_path / "empty.txt"),
        "--library",
        "Desk",
        "--create",
        "--json",
        "--timeout",
        "180",
        check=False,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ready"] == 1 and summary["failed"] == 1, summary
    assert summary["failures"] == [{"file": "empty.txt", "reason": "file is empty"}]
    with db.session_scope(settings) as s:
        lib = libraries.get_by_name(s, "Desk")
        assert lib is not None and lib.id is not None
    snap = LibraryReader(settings.indexes_dir, lib.id).current()
    assert snap is not None and snap.keywords.search(analyze("help desk 8800"), 3)
