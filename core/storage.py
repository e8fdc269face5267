"""Content-addressed store for uploaded originals: data/originals/ab/cd/<sha256>."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import BinaryIO

from core.fsutil import atomic_write

CHUNK = 1024 * 1024


class OriginalStore:
    def __init__(self, root: Path):
        self.root = root

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_file(self, src: Path, sha256: str) -> Path:
        """Copy `src` (already hashed) into the store, atomically and durably."""
        dest = self.path_for(sha256)
        if not dest.is_file():
            with src.open("rb") as inp:
                atomic_write(dest, lambda out: shutil.copyfileobj(inp, out, CHUNK))
        return dest

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
