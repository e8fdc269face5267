"""One index writer per library at a time: an exclusive POSIX lock on a file in the library's
index directory (works across worker processes on one machine and on shared volumes with
working POSIX locks, e.g. NFSv4)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def library_lock(indexes_dir: Path, library_id: int) -> Iterator[None]:
    lock_dir = indexes_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{library_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
