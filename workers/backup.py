"""`zhiku backup`: a consistent copy of a running installation.

The database snapshot and the index snapshots must agree. An index writer publishes a
library's snapshot and marks its documents `ready` in one transaction committed while it
holds the library's writer lock. So the backup takes the writer lock of every library, fixes
the database snapshot, records each library's current manifest and hard-links (or, across
file systems, copies) exactly the files it references into a staging directory, and lets the
locks go — a fraction of a second for links. The published snapshot files never change, so
the slow copying happens afterwards, without any lock, while api and workers carry on.
Originals are content-addressed and immutable: those present are copied before the snapshot,
and the few the snapshot names that appeared meanwhile are copied after it.
See docs/adr/0011-backup-and-restore.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from core.backup.archive import (
    FORMAT_VERSION,
    BackupError,
    BackupManifest,
    FileWriter,
    ProgressFn,
    disk_errors,
    final_dest,
    no_progress,
    partial_dir,
    write_manifest,
)
from core.backup.database import DatabaseSnapshot, open_snapshot, snapshot
from core.backup.restore import DATA_FILES, INDEXES, ORIGINALS
from core.settings import Settings
from retrieval.index_store import MANIFEST, Manifest, library_dir, writer_lock

SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
LOCK_TIMEOUT_S = 600.0
MAX_SNAPSHOT_ATTEMPTS = 20


@dataclass
class BackupResult:
    dest: Path
    manifest: BackupManifest

    def as_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "dest": str(self.dest),
            "format_version": m.format_version,
            "created_at": m.created_at,
            "zhiku_version": m.zhiku_version,
            "database": m.database["kind"],
            "revision": m.database["revision"],
            "counts": m.counts,
            "indexes": m.indexes,
            "files": len(m.files),
            "bytes": m.total_bytes,
            "warnings": m.warnings,
            "seconds": round(m.seconds, 3),
        }


@dataclass(frozen=True)
class StagedIndex:
    library_id: int
    manifest: Manifest
    raw_manifest: bytes
    files: list[tuple[Path, str]]  # (staged file, path inside the backup)


def _zhiku_version() -> str:
    try:
        return metadata.version("zhiku")
    except metadata.PackageNotFoundError:
        return "unknown"


def _originals(root: Path) -> dict[str, Path]:
    """sha256 → file of every complete original (temporary files of a write in progress are
    named otherwise)."""
    if not root.is_dir():
        return {}
    return {p.name: p for p in root.glob("*/*/*") if SHA256_NAME.match(p.name) and p.is_file()}


def _original_rel(digest: str) -> str:
    return f"{ORIGINALS}/{digest[:2]}/{digest[2:4]}/{digest}"


def _tree_bytes(root: Path) -> int:
    total = 0
    if root.is_dir():
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                with suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _index_library_ids(root: Path) -> set[int]:
    if not root.is_dir():
        return set()
    return {int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir()}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _stage_index(root: Path, library_id: int, staging: Path) -> StagedIndex | None:
    """Under the library's writer lock: its current manifest and the files it references."""
    lib = library_dir(root, library_id)
    try:
        raw = (lib / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None  # nothing indexed yet
    manifest = Manifest(**json.loads(raw))
    snap = lib / manifest.snapshot
    files: list[tuple[Path, str]] = []
    for path in sorted(p for p in snap.rglob("*") if p.is_file()):
        rel = f"{INDEXES}/{library_id}/{manifest.snapshot}/{path.relative_to(snap).as_posix()}"
        staged = staging / rel
        _link_or_copy(path, staged)
        files.append((staged, rel))
    if not files:
        raise BackupError(
            f"the index of library {library_id} names snapshot {manifest.snapshot}, which is "
            "missing; run `zhiku index rebuild` for it, then back up again"
        )
    return StagedIndex(library_id, manifest, raw, files)


def _snapshot_under_locks(
    settings: Settings,
    known_libraries: set[int],
    staging: Path,
    lock_timeout: float,
    on_snapshot: Callable[[], None] | None,
) -> tuple[DatabaseSnapshot, list[StagedIndex]]:
    """Hold every library's index writer lock, fix the database snapshot and stage the index
    files the current manifests reference; return with the locks released."""
    root = settings.indexes_dir
    wanted = known_libraries | _index_library_ids(root)
    locked: set[int] = set()
    with ExitStack() as locks:
        for _attempt in range(MAX_SNAPSHOT_ATTEMPTS):
            for library_id in sorted(wanted - locked):
                try:
                    locks.enter_context(writer_lock(root, library_id, timeout=lock_timeout))
                except TimeoutError:
                    raise BackupError(
                        f"the index of library {library_id} has been busy for {lock_timeout:.0f}"
                        " s; try the backup again later"
                    ) from None
                locked.add(library_id)
            snap = open_snapshot(settings)
            try:
                in_snapshot = snap.library_ids()
                if in_snapshot <= locked:
                    staged = [
                        s
                        for lib in sorted(in_snapshot)
                        if (s := _stage_index(root, lib, staging)) is not None
                    ]
                    if on_snapshot is not None:
                        on_snapshot()
                    return snap, staged
            except BaseException:
                snap.close()
                raise
            # A library was created after we looked: lock it too and take the snapshot again.
            snap.close()
            wanted |= in_snapshot
    raise BackupError("libraries kept being created during the backup; try again later")


def create_backup(
    settings: Settings,
    dest: Path,
    progress: ProgressFn = no_progress,
    *,
    on_snapshot: Callable[[], None] | None = None,
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> BackupResult:
    """Write a complete backup to `dest` (absent or an empty directory).

    `on_snapshot` runs at the moment of the snapshot, while every index writer lock is held
    (tests use it to observe the source in exactly the state the backup captures)."""
    started = time.perf_counter()
    dest = dest.absolute()
    partial = partial_dir(dest)

    # Reachable? How big? Before anything is written.
    with snapshot(settings) as probe:
        known_libraries = probe.library_ids()
        db_bytes = probe.estimated_bytes()
    need = db_bytes + _tree_bytes(settings.originals_dir) + _tree_bytes(settings.indexes_dir)
    free = shutil.disk_usage(dest.parent).free
    if free < need:
        raise BackupError(
            f"the backup needs about {need / 1e6:.1f} MB but {dest.parent} has only "
            f"{free / 1e6:.1f} MB free; free some space or choose another place"
        )

    staging = settings.tmp_dir / f"backup-{uuid.uuid4().hex}"
    warnings: list[str] = []
    try:
        writer = FileWriter(partial)
        copied: dict[str, int] = {}  # digest → index in writer.entries

        def copy_original(digest: str, path: Path) -> None:
            try:
                entry = writer.copy(path, _original_rel(digest))
            except FileNotFoundError:
                return  # deleted meanwhile; the snapshot decides whether it was needed
            if entry.sha256 != digest:
                warnings.append(
                    f"original {digest} is damaged at the source (its content hashes to "
                    f"{entry.sha256}); backed up as it is"
                )
            copied[digest] = len(writer.entries) - 1

        present = _originals(settings.originals_dir)
        for i, (digest, path) in enumerate(sorted(present.items()), 1):
            copy_original(digest, path)
            progress("originals", i, len(present))

        with disk_errors(settings.tmp_dir):
            settings.tmp_dir.mkdir(parents=True, exist_ok=True)
            snap, staged = _snapshot_under_locks(
                settings, known_libraries, staging, lock_timeout, on_snapshot
            )
        try:
            database = snap.dump(writer, progress)
            counts = snap.counts()
            referenced = snap.original_digests()
        finally:
            snap.close()

        # Indexes: the staged links hold the files however many snapshots are published now.
        index_files = [f for s in staged for f in s.files]
        total = sum(p.stat().st_size for p, _ in index_files)
        done = 0
        progress("indexes", 0, total)
        for s in staged:
            writer.write_bytes(f"{INDEXES}/{s.library_id}/{MANIFEST}", s.raw_manifest)
            for path, rel in s.files:
                done += writer.copy(path, rel).size
                progress("indexes", done, total)

        # Originals uploaded between the first pass and the snapshot; drop those it does not
        # name (uploads not committed yet, documents deleted meanwhile).
        late = _originals(settings.originals_dir)
        for digest in sorted(referenced - set(copied)):
            if digest in late:
                copy_original(digest, late[digest])
            if digest not in copied:
                warnings.append(f"original {digest} is missing at the source")
        unneeded = {copied[d] for d in set(copied) - referenced}
        for i in unneeded:
            (partial / writer.entries[i].path).unlink()
        writer.entries = [e for i, e in enumerate(writer.entries) if i not in unneeded]
        counts["originals"] = len(referenced & set(copied))

        for name in DATA_FILES:
            path = settings.data_dir / name
            if path.is_file():
                writer.copy(path, name)

        writer.sync()
        manifest = BackupManifest(
            format_version=FORMAT_VERSION,
            created_at=datetime.now(UTC).isoformat(),
            zhiku_version=_zhiku_version(),
            database=database,
            counts=counts,
            indexes=[
                {
                    "library_id": s.library_id,
                    "version": s.manifest.version,
                    "snapshot": s.manifest.snapshot,
                    "count": s.manifest.count,
                    "uid": s.manifest.uid,
                }
                for s in staged
            ],
            files=sorted(writer.entries, key=lambda e: e.path),
            warnings=warnings,
        )
        manifest.seconds = time.perf_counter() - started
        write_manifest(writer, manifest)
        with disk_errors(dest):
            final_dest(partial, dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupResult(dest, manifest)
