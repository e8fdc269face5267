"""Per-library on-disk indexes: immutable snapshots published through a manifest.

Layout: `<root>/<library_id>/manifest.json` names the current snapshot directory
`snap-<version>/` holding `vectors.faiss` and `keywords/`. A writer builds the next snapshot
in a temporary directory, fsyncs it, renames it into place and then replaces the manifest
atomically (write temp, fsync, rename). Readers only ever see a whole snapshot and reload
when the manifest's version changes. One writer per library at a time is the caller's job
(see workers' library lock).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.fsutil import atomic_write, fsync_dir
from retrieval.keyword_index import KeywordIndex
from retrieval.vector_index import VectorIndex

MANIFEST = "manifest.json"
KEEP_SNAPSHOTS = 2


@dataclass(frozen=True)
class Manifest:
    version: int
    snapshot: str
    embedder: str
    dim: int
    count: int
    vector_kind: str
    created_at: str


def library_dir(root: Path, library_id: int) -> Path:
    return root / str(library_id)


def read_manifest(root: Path, library_id: int) -> Manifest | None:
    path = library_dir(root, library_id) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Manifest(**data)


@dataclass
class Snapshot:
    manifest: Manifest
    vectors: VectorIndex
    keywords: KeywordIndex

    @property
    def chunk_ids(self) -> np.ndarray:
        return self.keywords.ids


def load_snapshot(root: Path, library_id: int, manifest: Manifest) -> Snapshot:
    snap = library_dir(root, library_id) / manifest.snapshot
    return Snapshot(
        manifest,
        VectorIndex.load(snap / "vectors.faiss"),
        KeywordIndex.load(snap / "keywords"),
    )


@dataclass(frozen=True)
class SyncResult:
    manifest: Manifest
    added: int
    removed: int
    changed: bool


def sync_library(
    root: Path,
    library_id: int,
    *,
    embedder: str,
    dim: int,
    wanted_ids: Sequence[int],
    wanted_tokens: Sequence[list[str]],
    fetch_vectors: Callable[[Sequence[int]], np.ndarray],
    exact_max: int,
    rebuild: bool = False,
) -> SyncResult:
    """Make the library's published snapshot hold exactly `wanted_ids`.

    Vectors are added and removed incrementally (fetched only for new ids); the keyword index
    is rebuilt from the analyzer tokens. Publishes a new version only when something changed,
    or always with `rebuild` (which also rebuilds the vectors from scratch).
    """
    current = read_manifest(root, library_id)
    wanted = np.asarray(wanted_ids, dtype=np.int64)
    old: Snapshot | None = None
    if not rebuild and current is not None and current.embedder == embedder and current.dim == dim:
        old = load_snapshot(root, library_id, current)

    if old is not None:
        old_ids = old.chunk_ids
        to_add = np.setdiff1d(wanted, old_ids, assume_unique=True)
        to_remove = np.setdiff1d(old_ids, wanted, assume_unique=True)
        if len(to_add) == 0 and len(to_remove) == 0 and current is not None:
            return SyncResult(current, 0, 0, changed=False)
        vectors = old.vectors
        if vectors.should_rebuild(len(wanted), exact_max):
            vectors = VectorIndex.build(fetch_vectors(wanted.tolist()), wanted, exact_max=exact_max)
        else:
            vectors.remove(to_remove)
            vectors.add(fetch_vectors(to_add.tolist()), to_add)
        added, removed = len(to_add), len(to_remove)
    else:
        vectors = (
            VectorIndex.build(fetch_vectors(wanted.tolist()), wanted, exact_max=exact_max)
            if len(wanted)
            else VectorIndex.empty(dim)
        )
        added, removed = len(wanted), 0

    keywords = KeywordIndex.build(wanted.tolist(), wanted_tokens)
    version = (current.version if current else 0) + 1
    manifest = Manifest(
        version=version,
        snapshot=f"snap-{version:08d}",
        embedder=embedder,
        dim=dim,
        count=len(wanted),
        vector_kind=vectors.kind,
        created_at=datetime.now(UTC).isoformat(),
    )
    _publish(root, library_id, manifest, vectors, keywords)
    return SyncResult(manifest, added, removed, changed=True)


def _publish(
    root: Path, library_id: int, manifest: Manifest, vectors: VectorIndex, keywords: KeywordIndex
) -> None:
    lib = library_dir(root, library_id)
    lib.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=lib, prefix=".build-"))
    try:
        vectors.save(tmp / "vectors.faiss")
        keywords.save(tmp / "keywords")
        _fsync_tree(tmp)
        final = lib / manifest.snapshot
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(lib)
    atomic_write(lib / MANIFEST, lambda f: f.write(json.dumps(asdict(manifest)).encode()))
    _prune(lib, keep=manifest.version)


def _prune(lib: Path, keep: int) -> None:
    for child in lib.iterdir():
        if child.name.startswith("snap-"):
            version = int(child.name.split("-")[1])
            if version <= keep - KEEP_SNAPSHOTS:
                shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(".build-"):
            shutil.rmtree(child, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


class LibraryReader:
    """Serves searches from a library's newest snapshot; reloads when the manifest changes.

    Queries never wait for a reload: when a new version is published, the first query that
    notices starts loading it in a background thread and every query keeps using the old
    snapshot until the new one is fully loaded, then one reference is swapped. Only the very
    first load of a library (nothing to serve yet) happens in the caller's thread.
    """

    def __init__(self, root: Path, library_id: int):
        self.root = root
        self.library_id = library_id
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._loading: int | None = None

    def current(self) -> Snapshot | None:
        manifest = read_manifest(self.root, self.library_id)
        snap = self._snapshot
        if manifest is None:
            return None
        if snap is not None and snap.manifest.version == manifest.version:
            return snap
        if snap is None:
            with self._lock:
                if self._snapshot is None or self._snapshot.manifest.version != manifest.version:
                    self._snapshot = load_snapshot(self.root, self.library_id, manifest)
                return self._snapshot
        with self._lock:
            if self._loading != manifest.version:
                self._loading = manifest.version
                threading.Thread(
                    target=self._load, args=(manifest,), name="zhiku-index-reload", daemon=True
                ).start()
        return snap

    def _load(self, manifest: Manifest) -> None:
        try:
            fresh = load_snapshot(self.root, self.library_id, manifest)
        except Exception:
            # A snapshot pruned under us (a newer one was published): the next query sees the
            # newer manifest and loads that.
            fresh = None
        with self._lock:
            current = self._snapshot
            if fresh is not None and (
                current is None or current.manifest.version < fresh.manifest.version
            ):
                self._snapshot = fresh
            if self._loading == manifest.version:
                self._loading = None

    def wait_loaded(self, timeout: float = 30.0) -> Snapshot | None:
        """The newest snapshot, waiting for a background reload (tests, warm-up)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            snap = self.current()
            manifest = read_manifest(self.root, self.library_id)
            if snap is None or manifest is None or snap.manifest.version == manifest.version:
                return snap
            if time.monotonic() > deadline:
                return snap
            time.sleep(0.01)
