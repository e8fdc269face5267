"""One index writer per library at a time: an exclusive POSIX lock on a file in the library's
index directory (works across worker processes on one machine and on shared volumes with
working POSIX locks, e.g. NFSv4). The lock lives with the index store (`retrieval.index_store.
writer_lock`), so the api takes the same one when it drops a deleted library's index."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.index_store import writer_lock


@contextmanager
def library_lock(indexes_dir: Path, library_id: int) -> Iterator[None]:
    with writer_lock(indexes_dir, library_id):
        yield
