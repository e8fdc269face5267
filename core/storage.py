"""Content-addressed store for uploaded originals: data/originals/ab/cd/<sha256>.

Also what a full disk looks like to callers: `DiskFull` (507 `disk_full`), raised by the free
space check before an upload is read and in place of ENOSPC while one is written."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from core.errors import ZhikuError
from core.fsutil import atomic_write

CHUNK = 1024 * 1024
MB = 1024 * 1024
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13  # sqlite3 result code: "database or disk is full"
PG_DISK_FULL = "53100"  # PostgreSQL SQLSTATE disk_full
DISK_FULL_MESSAGES = (
    "database or disk is full",  # SQLite
    os.strerror(errno.ENOSPC),  # "No space left on device"
    os.strerror(errno.EDQUOT),  # "Disk quota exceeded"
)


class DiskFull(ZhikuError):
    """The data directory's disk has too little free space: nothing was stored."""

    code = "disk_full"
    status = 507  # Insufficient Storage


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT from a write, SQLite's "database or disk is full", PostgreSQL's
    disk_full, or a library's error that quotes the system's message (faiss raises
    RuntimeError) — directly or as the cause of a wrapping exception (SQLAlchemy's
    OperationalError keeps the driver's error in `orig`)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        if getattr(current, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        if getattr(current, "sqlstate", None) == PG_DISK_FULL:
            return True
        text = str(current)  # libraries that report a failed write in a message (faiss)
        if any(marker in text for marker in DISK_FULL_MESSAGES):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def disk_full(free_bytes: int | None = None, needed_bytes: int | None = None) -> DiskFull:
    """The error an uploader sees; it says what an administrator has to do."""
    if free_bytes is not None and needed_bytes is not None:
        what = (
            f"only {free_bytes // MB} MB free on the data disk; uploads need at least "
            f"{needed_bytes // MB} MB (ZHIKU_MIN_FREE_BYTES plus the upload)"
        )
    else:
        what = "the data disk ran out of space while the upload was being stored"
    return DiskFull(
        f"{what}. Nothing was stored. An administrator must free space on the disk that holds "
        "the data directory (or move it to a larger one); then upload again"
    )


def require_free_space(path: Path, min_free_bytes: int, incoming_bytes: int = 0) -> None:
    """DiskFull unless the file system holding `path` has `min_free_bytes` free beyond
    `incoming_bytes` (what is about to be written). `min_free_bytes` 0 turns the check off:
    only a write that finds the disk full refuses."""
    if min_free_bytes <= 0:
        return
    free = shutil.disk_usage(path).free
    needed = min_free_bytes + max(incoming_bytes, 0)
    if free < needed:
        raise disk_full(free, needed)


class OriginalStore:
    def __init__(self, root: Path):
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(self, src: Path, sha256: str) -> Path:
        """Copy `src` (already hashed) into the store, atomically and durably."""
        self.add(src, sha256)
        return self.path_for(sha256)

    def add(self, src: Path, sha256: str) -> bool:
        """Copy `src` (already hashed) into the store, atomically and durably; True when this
        call wrote it (False: the content was there already). A full disk raises DiskFull and
        leaves no partial file (the temporary copy is removed)."""
        dest = self.path_for(sha256)
        if dest.is_file():
            return False
        try:
            with src.open("rb") as inp:
                atomic_write(dest, lambda out: shutil.copyfileobj(inp, out, CHUNK))
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full() from exc
            raise
        return True

    def read(self, sha256: str) -> bytes:
        return self.path_for(sha256).read_bytes()

    def delete(self, sha256: str) -> bool:
        """Remove an original (only when no document refers to its content any more)."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        for parent in (path.parent, path.parent.parent):  # empty fan-out dirs go too
            try:
                parent.rmdir()
            except OSError:
                break
        return True


class PageCache:
    """Rendered page images: data/cache/pages/<document id>/<version>-<page>.png. A new
    version of a document never sees an older version's pages; deleting a document or its
    library purges its directory."""

    def __init__(self, root: Path):
        self.root = root

    def path_for(self, document_id: int, version: int, page: int) -> Path:
        return self.root / str(document_id) / f"{version}-{page}.png"

    def get(self, document_id: int, version: int, page: int) -> bytes | None:
        try:
            return self.path_for(document_id, version, page).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, document_id: int, version: int, page: int, png: bytes) -> None:
        atomic_write(self.path_for(document_id, version, page), lambda f: f.write(png))

    def purge(self, document_id: int) -> None:
        shutil.rmtree(self.root / str(document_id), ignore_errors=True)


def hash_stream(stream: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while block := stream.read(CHUNK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size
