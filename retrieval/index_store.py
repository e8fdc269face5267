"""Per-library on-disk indexes: immutable snapshots published through a manifest.

Layout: `<root>/<library_id>/manifest.json` names the current snapshot directory
`snap-<version>/` holding `vectors.faiss` (every chunk, multilingual embedder), optionally
`vectors_en.faiss` + `vectors_en_ids.npy` (English chunks, English embedder) and `keywords/`.
A writer builds the next snapshot in a temporary directory, fsyncs it, renames it into place
and then replaces the manifest atomically (write temp, fsync, rename). Readers only ever see
a whole snapshot and reload when the manifest's version changes. One writer per library at a
time is the caller's job (see workers' library lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    embedder_en: str = ""
    dim_en: int = 0
    count_en: int = 0
    uid: str = ""  # the index's identity; older manifests have none


def library_dir(root: Path, library_id: int) -> Path:
    return root / str(library_id)


def read_manifest(root: Path, library_id: int) -> Manifest | None:
    path = library_dir(root, library_id) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return Manifest(**data)


@contextmanager
def writer_lock(root: Path, library_id: int, timeout: float | None = None) -> Iterator[None]:
    """The library's index writer lock: an exclusive POSIX lock on a file in `root/.locks`
    (across processes on one machine, and on shared volumes with working POSIX locks such as
    NFSv4). With `timeout`, TimeoutError when it is not free within that many seconds.

    The lock file outlives a dropped library on purpose: removing a lock file others may be
    waiting on would let two writers in."""
    lock_dir = root / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{library_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"the index of library {library_id} is being written"
                        ) from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def drop_library(root: Path, library_id: int) -> bool:
    """Remove every index file and snapshot of the library (hold its `writer_lock`). The
    directory is first renamed out of the way, so nobody finds a half-removed snapshot.
    False when there was nothing to remove."""
    lib = library_dir(root, library_id)
    if not lib.exists():
        return False
    trash = root / f".trash-{library_id}-{uuid.uuid4().hex}"
    os.rename(lib, trash)
    fsync_dir(root)
    shutil.rmtree(trash, ignore_errors=True)
    return True


@dataclass
class Snapshot:
    manifest: Manifest
    vectors: VectorIndex
    keywords: KeywordIndex
    vectors_en: VectorIndex | None = None
    ids_en: np.ndarray | None = None

    @property
    def chunk_ids(self) -> np.ndarray:
        return self.keywords.ids


def load_snapshot(root: Path, library_id: int, manifest: Manifest) -> Snapshot:
    snap = library_dir(root, library_id) / manifest.snapshot
    english = snap / "vectors_en.faiss"
    return Snapshot(
        manifest,
        VectorIndex.load(snap / "vectors.faiss"),
        KeywordIndex.load(snap / "keywords"),
        VectorIndex.load(english) if english.exists() else None,
        np.load(snap / "vectors_en_ids.npy") if english.exists() else None,
    )


@dataclass(frozen=True)
class DenseInput:
    """A second, English-only vector index: which chunks it holds and how to get vectors."""

    embedder: str
    dim: int
    wanted_ids: Sequence[int]
    fetch_vectors: Callable[[Sequence[int]], np.ndarray]


def _update_vectors(
    old: VectorIndex | None,
    old_ids: np.ndarray | None,
    wanted: np.ndarray,
    fetch: Callable[[Sequence[int]], np.ndarray],
    dim: int,
    exact_max: int,
) -> tuple[VectorIndex, int, int]:
    """The vector index holding exactly `wanted`: `old` updated in place (vectors fetched only
    for new ids), or built anew. Returns (index, added, removed)."""
    if old is None or old_ids is None:
        if not len(wanted):
            return VectorIndex.empty(dim), 0, 0
        return (
            VectorIndex.build(fetch(wanted.tolist()), wanted, exact_max=exact_max),
            len(wanted),
            0,
        )
    to_add = np.setdiff1d(wanted, old_ids, assume_unique=True)
    to_remove = np.setdiff1d(old_ids, wanted, assume_unique=True)
    if old.should_rebuild(len(wanted), exact_max):
        return (
            VectorIndex.build(fetch(wanted.tolist()), wanted, exact_max=exact_max),
            len(to_add),
            len(to_remove),
        )
    old.remove(to_remove)
    old.add(fetch(to_add.tolist()), to_add)
    return old, len(to_add), len(to_remove)


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
    english: DenseInput | None = None,
    rebuild: bool = False,
) -> SyncResult:
    """Make the library's published snapshot hold exactly `wanted_ids` (and, with `english`,
    its English vector index exactly `english.wanted_ids`).

    Vectors are added and removed incrementally (fetched only for new ids); the keyword index
    is rebuilt from the analyzer tokens. Publishes a new version only when something changed,
    or always with `rebuild` (which also rebuilds the vectors from scratch).
    """
    current = read_manifest(root, library_id)
    wanted = np.asarray(wanted_ids, dtype=np.int64)
    wanted_en = np.asarray(english.wanted_ids if english else [], dtype=np.int64)
    old: Snapshot | None = None
    if not rebuild and current is not None and current.embedder == embedder and current.dim == dim:
        old = load_snapshot(root, library_id, current)
    keep_en = (
        old is not None
        and english is not None
        and current is not None
        and current.embedder_en == english.embedder
        and current.dim_en == english.dim
        and old.vectors_en is not None
    )

    if old is not None and current is not None:
        same_main = np.array_equal(np.sort(old.chunk_ids), np.sort(wanted))
        same_en = (english is None and not current.embedder_en) or (
            keep_en
            and old.ids_en is not None
            and np.array_equal(np.sort(old.ids_en), np.sort(wanted_en))
        )
        if same_main and same_en:
            return SyncResult(current, 0, 0, changed=False)

    vectors, added, removed = _update_vectors(
        old.vectors if old else None,
        old.chunk_ids if old else None,
        wanted,
        fetch_vectors,
        dim,
        exact_max,
    )
    vectors_en = None
    if english is not None:
        vectors_en, _, _ = _update_vectors(
            old.vectors_en if old and keep_en else None,
            old.ids_en if old and keep_en else None,
            wanted_en,
            english.fetch_vectors,
            english.dim,
            exact_max,
        )

    keywords = KeywordIndex.build(wanted.tolist(), wanted_tokens)
    version = (current.version if current else 0) + 1
    uid = current.uid if current is not None and current.uid else uuid.uuid4().hex
    manifest = Manifest(
        version=version,
        snapshot=f"snap-{version:08d}",
        embedder=embedder,
        dim=dim,
        count=len(wanted),
        vector_kind=vectors.kind,
        created_at=datetime.now(UTC).isoformat(),
        embedder_en=english.embedder if english else "",
        dim_en=english.dim if english else 0,
        count_en=len(wanted_en),
        uid=uid,
    )
    _publish(root, library_id, manifest, vectors, keywords, vectors_en, wanted_en)
    return SyncResult(manifest, added, removed, changed=True)


def _publish(
    root: Path,
    library_id: int,
    manifest: Manifest,
    vectors: VectorIndex,
    keywords: KeywordIndex,
    vectors_en: VectorIndex | None,
    ids_en: np.ndarray,
) -> None:
    lib = library_dir(root, library_id)
    lib.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=lib, prefix=".build-"))
    try:
        vectors.save(tmp / "vectors.faiss")
        if vectors_en is not None:
            vectors_en.save(tmp / "vectors_en.faiss")
            np.save(tmp / "vectors_en_ids.npy", ids_en)
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
    first load of a library (nothing to serve yet) happens in the caller's thread — and so does
    the load of an index with another uid: the library was dropped and its id reused, and the
    old snapshot must never answer for the new library. A dropped library (no manifest) lets
    its snapshot go at once.
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
            if snap is not None:
                with self._lock:
                    self._snapshot = None
            return None
        if snap is not None and snap.manifest.uid != manifest.uid:
            snap = None  # another index under this id: never serve the old one
        if snap is not None and snap.manifest.version == manifest.version:
            return snap
        if snap is None:
            with self._lock:
                held = self._snapshot
                if held is None or held.manifest != manifest:
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
            # Only a newer version of the same index: a load that finishes after the index was
            # replaced (another uid) or dropped must not bring the old one back.
            if (
                fresh is not None
                and current is not None
                and current.manifest.uid == fresh.manifest.uid
                and current.manifest.version < fresh.manifest.version
            ):
                self._snapshot = fresh
            if self._loading == manifest.version:
                self._loading = None

    def wait_loaded(self, timeout: float = 30.0) -> Snapshot | None:
        """The newest snapshot, waiting for a background reload (tests, warm-up)."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.current()
            manifest = read_manifest(self.root, self.library_id)
            if snap is None or manifest is None or snap.manifest.version == manifest.version:
                return snap
            if time.monotonic() > deadline:
                return snap
            time.sleep(0.01)
