"""Restore a backup into an empty data dir and an empty database.

Everything is checked before anything is written: the manifest, the target (empty data dir,
empty database of the same kind, a schema revision this code knows), the sha256 of every
file and the free space. Files are then copied into a staging directory inside the data dir,
the database is loaded (one transaction on PostgreSQL), and only then are the staged files
renamed into place, so a restore that fails leaves no data files behind.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.backup.archive import (
    BackupError,
    BackupManifest,
    FileWriter,
    ProgressFn,
    disk_errors,
    no_progress,
    read_backup_manifest,
    safe_relative,
    space_error,
    verify_backup,
)
from core.backup.database import (
    check_database_empty,
    check_revision_known,
    restore_database,
)
from core.fsutil import fsync_dir
from core.settings import Settings

ORIGINALS = "originals"
INDEXES = "indexes"
DATA_FILES = ("secrets.json", "lexicon.txt")  # instance secrets; the sensitive-word list
RESTORED_TOP = (ORIGINALS, INDEXES, *DATA_FILES)
STAGING_PREFIX = ".restore-"


@dataclass
class RestoreResult:
    manifest: BackupManifest
    files: int
    bytes: int
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "created_at": self.manifest.created_at,
            "zhiku_version": self.manifest.zhiku_version,
            "database": self.manifest.database["kind"],
            "revision": self.manifest.database["revision"],
            "counts": self.manifest.counts,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def data_dir_occupants(data_dir: Path) -> list[str]:
    """What in `data_dir` would a restore overwrite or mix with: originals, index snapshots,
    instance secrets, a lexicon. (Prepared models, logs, caches and an empty database are
    fine: they are not restored.)"""
    found: list[str] = []
    originals = data_dir / ORIGINALS
    if originals.is_dir() and any(p.is_file() for p in originals.rglob("*")):
        found.append(f"{ORIGINALS}/")
    indexes = data_dir / INDEXES
    if indexes.is_dir():
        found += [f"{INDEXES}/{p.name}" for p in sorted(indexes.iterdir()) if p.name != ".locks"]
    found += [name for name in DATA_FILES if (data_dir / name).exists()]
    return found


def check_data_dir_empty(data_dir: Path) -> None:
    if occupants := data_dir_occupants(data_dir):
        raise BackupError(
            f"the data dir {data_dir} already holds Zhiku data ({', '.join(occupants[:5])}"
            f"{'…' if len(occupants) > 5 else ''}); restore needs an empty one: point "
            "ZHIKU_DATA_DIR at a new directory (or move these away) and run restore again"
        )


def _restored_files(manifest: BackupManifest) -> list[str]:
    return [f.path for f in manifest.files if safe_relative(f.path).parts[0] in RESTORED_TOP]


def restore_backup(
    settings: Settings, src: Path, progress: ProgressFn = no_progress
) -> RestoreResult:
    started = time.perf_counter()
    manifest = read_backup_manifest(src)
    data_dir = settings.data_dir
    check_data_dir_empty(data_dir)
    check_database_empty(settings, str(manifest.database["kind"]))
    check_revision_known(settings, str(manifest.database["revision"]))
    verify_backup(src, manifest, progress)

    wanted = set(_restored_files(manifest))
    entries = [f for f in manifest.files if f.path in wanted]
    need = sum(f.size for f in manifest.files)
    data_dir.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(data_dir).free < need:
        raise space_error(data_dir)

    staging = data_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        writer = FileWriter(staging)
        total = sum(f.size for f in entries)
        done = 0
        progress("files", 0, total)
        for entry in entries:
            copied = writer.copy(src.joinpath(*safe_relative(entry.path).parts), entry.path)
            if copied.sha256 != entry.sha256:  # changed since it was verified
                raise BackupError(
                    f"{entry.path} changed while it was being restored; use an intact copy "
                    "of the backup that nobody writes to"
                )
            done += copied.size
            progress("files", done, total)
        writer.sync()

        restore_database(settings, src, manifest.database, progress)

        with disk_errors(data_dir):
            for name in RESTORED_TOP:
                staged = staging / name
                if not staged.exists():
                    continue
                target = data_dir / name
                if target.is_dir() and name == INDEXES:
                    # at most a .locks directory (checked above): move the libraries in
                    for child in staged.iterdir():
                        os.rename(child, target / child.name)
                    continue
                if target.is_dir():
                    shutil.rmtree(target)  # originals/ without a file in it (checked above)
                os.rename(staged, target)
            fsync_dir(data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreResult(
        manifest=manifest,
        files=len(manifest.files),
        bytes=manifest.total_bytes,
        seconds=time.perf_counter() - started,
    )
