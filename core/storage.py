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


def hash_stream(stream: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while block := stream.read(CHUNK):
        h.update(block)
        size += len(block)
    return h.hexdigest(), size
