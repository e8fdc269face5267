"""The backup directory: its manifest, writing files into it (0600, sha256 on the way) and
verifying them before a restore."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from core.fsutil import fsync_dir

FORMAT_VERSION = 1
MANIFEST_NAME = "backup.json"
PARTIAL_SUFFIX = ".partial"
BLOCK = 1024 * 1024
FILE_MODE = 0o600
DIR_MODE = 0o700

# (stage, done, total): the CLI draws one progress bar per stage.
ProgressFn = Callable[[str, int, int], None]


def no_progress(_stage: str, _done: int, _total: int) -> None:
    return None


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says what to do."""


def space_error(where: Path) -> BackupError:
    return BackupError(
        f"no space left on the device holding {where}; free some space or choose another "
        "place, then run the command again (nothing complete was left behind)"
    )


@contextmanager
def disk_errors(where: Path) -> Iterator[None]:
    """Turn 'disk full' into a BackupError that says so."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise space_error(where) from exc
        raise


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, POSIX separators
    size: int
    sha256: str


@dataclass
class BackupManifest:
    format_version: int
    created_at: str
    zhiku_version: str
    database: dict[str, Any]  # kind, revision, and what restoring it needs
    counts: dict[str, int]
    indexes: list[dict[str, Any]]  # per library: library_id, version, snapshot, count
    files: list[FileEntry]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_bytes"] = self.total_bytes
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BackupManifest:
        return cls(
            format_version=int(data["format_version"]),
            created_at=str(data["created_at"]),
            zhiku_version=str(data["zhiku_version"]),
            database=dict(data["database"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            indexes=list(data["indexes"]),
            files=[
                FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"]
            ],
            warnings=[str(w) for w in data.get("warnings", [])],
            seconds=float(data.get("seconds", 0.0)),
        )


def safe_relative(path: str) -> PurePosixPath:
    """A manifest path that stays inside the directory it is relative to."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") for p in rel.parts):
        raise BackupError(
            f"the backup manifest names an unsafe path {path!r}; it was tampered with"
        )
    return rel


class FileWriter:
    """Writes files into a backup (or restore staging) directory: directories 0700, files 0600,
    the size and sha256 of each recorded; `sync` makes them durable."""

    def __init__(self, root: Path):
        self.root = root
        self.entries: list[FileEntry] = []
        with disk_errors(root):
            root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        root.chmod(DIR_MODE)

    def _target(self, rel: str) -> Path:
        target = self.root.joinpath(*safe_relative(rel).parts)
        parent = target.parent
        if not parent.is_dir():
            with disk_errors(self.root):
                parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # mkdir's mode is masked by the umask; every level below the root gets 0700
            p = parent
            while p != self.root:
                p.chmod(DIR_MODE)
                p = p.parent
        return target

    @contextmanager
    def open(self, rel: str) -> Iterator[BinaryIO]:
        """A file to stream into; hashed when it is closed."""
        target = self._target(rel)
        with disk_errors(self.root):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                yield out
        self.record(rel)

    def record(self, rel: str) -> FileEntry:
        """Hash a file already written at `rel` (e.g. by SQLite's backup API) and list it."""
        target = self._target(rel)
        target.chmod(FILE_MODE)
        with target.open("rb") as f:
            digest, size = hash_file(f)
        entry = FileEntry(rel, size, digest)
        self.entries.append(entry)
        return entry

    def copy(self, src: Path, rel: str, on_bytes: Callable[[int], None] | None = None) -> FileEntry:
        """Copy `src` to `rel`, hashing while copying."""
        target = self._target(rel)
        h = hashlib.sha256()
        size = 0
        with disk_errors(self.root), src.open("rb") as inp:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                while block := inp.read(BLOCK):
                    h.update(block)
                    out.write(block)
                    size += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
        entry = FileEntry(rel, size, h.hexdigest())
        self.entries.append(entry)
        return entry

    def write_bytes(self, rel: str, data: bytes) -> FileEntry:
        with self.open(rel) as out:
            out.write(data)
        return self.entries[-1]

    def sync(self) -> None:
        """Make every file and directory durable. Once at the end rather than per file: by
        then the kernel has written most of it back, and one slow fsync per small file would
        dominate a backup of many originals."""
        with disk_errors(self.root):
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                fsync_dir(Path(dirpath))


def hash_file(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while block := f.read(BLOCK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def partial_dir(dest: Path) -> Path:
    """Check DEST (absent or an empty directory) and return the fresh DEST.partial to write."""
    if dest.exists() and not _is_empty_dir(dest):
        what = "a file" if not dest.is_dir() else "a directory that is not empty"
        raise BackupError(
            f"{dest} is {what}; give a new or empty directory as the backup destination"
        )
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} does not exist; create it first or choose another place")
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    if partial.exists():  # left by an interrupted backup to the same DEST
        shutil.rmtree(partial)
    return partial


def final_dest(partial: Path, dest: Path) -> None:
    """Publish a finished backup: DEST.partial becomes DEST (an empty DEST is replaced)."""
    os.replace(partial, dest)
    fsync_dir(dest.parent)


def write_manifest(writer: FileWriter, manifest: BackupManifest) -> None:
    data = json.dumps(manifest.to_json(), ensure_ascii=False, indent=1).encode()
    target = writer.root / MANIFEST_NAME
    with disk_errors(writer.root):
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())


def read_backup_manifest(src: Path) -> BackupManifest:
    if src.name.endswith(PARTIAL_SUFFIX):
        raise BackupError(f"{src} is an interrupted, incomplete backup; use a complete one")
    path = src / MANIFEST_NAME
    if not src.is_dir():
        raise BackupError(f"{src} is not a directory; give the directory `zhiku backup` wrote")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(
            f"{src} is not a Zhiku backup (it has no {MANIFEST_NAME}); give the directory "
            "`zhiku backup` wrote"
        ) from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path} cannot be read ({exc}); the backup is damaged") from None
    try:
        manifest = BackupManifest.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"{path} is not a valid backup manifest ({exc})") from None
    if manifest.format_version > FORMAT_VERSION:
        raise BackupError(
            f"this backup has format {manifest.format_version}, newer than this Zhiku "
            f"understands ({FORMAT_VERSION}); restore it with Zhiku {manifest.zhiku_version} "
            "or newer"
        )
    return manifest


def verify_backup(src: Path, manifest: BackupManifest, progress: ProgressFn = no_progress) -> None:
    """Check the size and sha256 of every file the manifest lists; BackupError naming the
    first file that is missing or differs."""
    total = manifest.total_bytes
    done = 0
    progress("verifying", 0, total)
    for entry in manifest.files:
        path = src.joinpath(*safe_relative(entry.path).parts)
        try:
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise FileNotFoundError(entry.path)
            with path.open("rb") as f:
                digest, size = hash_file(f)
        except FileNotFoundError:
            raise BackupError(
                f"the backup is incomplete: {entry.path} is missing; use an intact copy"
            ) from None
        if size != entry.size or digest != entry.sha256:
            raise BackupError(
                f"the backup is damaged: {entry.path} does not match its sha256 in "
                f"{MANIFEST_NAME} (expected {entry.sha256[:12]}…, found {digest[:12]}…); "
                "nothing was restored — use an intact copy of the backup"
            )
        done += size
        progress("verifying", done, total)
