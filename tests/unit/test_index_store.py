"""The on-disk per-library index: incremental sync, atomic publication, reader reload."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from retrieval import index_store
from retrieval.index_store import LibraryReader, read_manifest, sync_library
from retrieval.vector_index import FLAT, IVF, VectorIndex

DIM = 16


def _vectors(ids: Sequence[int]) -> np.ndarray:
    # Clustered like real embeddings (topics), not uniform noise.
    rng = np.random.default_rng(42)
    centers = rng.normal(size=(20, DIM))
    table = (centers[rng.integers(0, 20, 1000)] + 0.35 * rng.normal(size=(1000, DIM))).astype(
        np.float32
    )
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    return table[np.asarray(ids, dtype=np.int64)]


def _sync(root: Path, ids: list[int], calls: list[list[int]] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    def fetch(wanted: Sequence[int]) -> np.ndarray:
        if calls is not None:
            calls.append(list(wanted))
        return _vectors(wanted)

    return sync_library(
        root,
        7,
        embedder="test",
        dim=DIM,
        wanted_ids=ids,
        wanted_tokens=[[f"tok{i}", "common"] for i in ids],
        fetch_vectors=fetch,
        exact_max=int(kw.pop("exact_max", 1000)),  # type: ignore[call-overload]
        **kw,  # type: ignore[arg-type]
    )


def test_sync_adds_and_removes_incrementally(tmp_path: Path) -> None:
    calls: list[list[int]] = []
    r1 = _sync(tmp_path, [1, 2, 3], calls)
    assert r1.changed and r1.manifest.version == 1 and r1.manifest.count == 3
    r2 = _sync(tmp_path, [2, 3, 4], calls)
    assert (r2.added, r2.removed) == (1, 1)
    assert calls[-1] == [4]  # only the new vector was fetched
    reader = LibraryReader(tmp_path, 7)
    snap = reader.current()
    assert snap is not None
    hits = snap.vectors.search(_vectors([1])[0], 10)
    assert 1 not in [i for i, _ in hits]
    assert snap.vectors.search(_vectors([4])[0], 1)[0][0] == 4
    assert snap.keywords.search(["tok1"], 5) == []
    assert snap.keywords.search(["tok4"], 5)[0][0] == 4


def test_unchanged_sync_publishes_nothing(tmp_path: Path) -> None:
    _sync(tmp_path, [1, 2])
    again = _sync(tmp_path, [1, 2])
    assert not again.changed and again.manifest.version == 1


def test_reader_reloads_when_the_version_changes(tmp_path: Path) -> None:
    _sync(tmp_path, [1, 2])
    reader = LibraryReader(tmp_path, 7)
    first = reader.current()
    assert first is not None and reader.current() is first  # cached while unchanged
    _sync(tmp_path, [1, 2, 5])
    second = reader.wait_loaded()
    assert second is not None and second.manifest.version == 2
    assert 5 in second.chunk_ids.tolist()


def test_queries_never_wait_for_a_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sync(tmp_path, [1, 2])
    reader = LibraryReader(tmp_path, 7)
    first = reader.current()
    assert first is not None
    _sync(tmp_path, [1, 2, 5])
    release = threading.Event()
    real_load = index_store.load_snapshot

    def slow_load(*args: object) -> index_store.Snapshot:
        release.wait(10)
        return real_load(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(index_store, "load_snapshot", slow_load)
    started = time.monotonic()
    for _ in range(20):  # while the new snapshot loads, the old one answers at once
        assert reader.current() is first
    assert time.monotonic() - started < 1.0
    release.set()
    second = reader.wait_loaded()
    assert second is not None and second.manifest.version == 2
    assert reader.current() is second


def test_manifest_points_at_a_complete_snapshot_and_old_ones_are_pruned(tmp_path: Path) -> None:
    for n in range(1, 6):
        _sync(tmp_path, list(range(1, n + 1)))
    lib = tmp_path / "7"
    manifest = json.loads((lib / "manifest.json").read_text())
    snap = lib / manifest["snapshot"]
    assert (snap / "vectors.faiss").is_file() and (snap / "keywords" / "ids.npy").is_file()
    snaps = sorted(p.name for p in lib.iterdir() if p.name.startswith("snap-"))
    assert len(snaps) == 2 and not any(p.name.startswith(".build-") for p in lib.iterdir())


def test_empty_library_has_a_searchable_empty_snapshot(tmp_path: Path) -> None:
    _sync(tmp_path, [1])
    r = _sync(tmp_path, [])
    assert r.manifest.count == 0
    snap = LibraryReader(tmp_path, 7).current()
    assert snap is not None
    assert snap.vectors.search(_vectors([1])[0], 5) == []
    assert snap.keywords.search(["tok1"], 5) == []


def test_grows_from_exact_to_ivf_with_high_recall(tmp_path: Path) -> None:
    ids = list(range(1000))
    r = _sync(tmp_path, ids[:100], exact_max=200)
    assert r.manifest.vector_kind == FLAT
    r = _sync(tmp_path, ids, exact_max=200)
    assert r.manifest.vector_kind == IVF
    snap = LibraryReader(tmp_path, 7).current()
    assert snap is not None
    exact = VectorIndex.build(_vectors(ids), np.asarray(ids), exact_max=10_000)
    queries = _vectors(ids[:50])
    agree = 0
    for q in queries:
        approx = {i for i, _ in snap.vectors.search(q, 10)}
        truth = {i for i, _ in exact.search(q, 10)}
        agree += len(approx & truth)
    assert agree / (50 * 10) >= 0.9


def test_embedder_change_rebuilds(tmp_path: Path) -> None:
    _sync(tmp_path, [1, 2])
    r = sync_library(
        tmp_path,
        7,
        embedder="other",
        dim=DIM,
        wanted_ids=[1, 2],
        wanted_tokens=[["a"], ["b"]],
        fetch_vectors=_vectors,
        exact_max=100,
    )
    assert r.changed and r.manifest.embedder == "other"
    manifest = read_manifest(tmp_path, 7)
    assert manifest is not None and manifest.version == 2


@pytest.mark.parametrize("k", [0, 1, 50])
def test_keyword_search_k_bounds(tmp_path: Path, k: int) -> None:
    _sync(tmp_path, [1, 2, 3])
    snap = LibraryReader(tmp_path, 7).current()
    assert snap is not None
    hits = snap.keywords.search(["common"], k)
    assert len(hits) == min(k, 3)


def _english(ids: list[int], calls: list[list[int]]) -> index_store.DenseInput:
    def fetch(wanted: Sequence[int]) -> np.ndarray:
        calls.append(list(wanted))
        return _vectors([w + 500 for w in wanted])

    return index_store.DenseInput(embedder="test-en", dim=DIM, wanted_ids=ids, fetch_vectors=fetch)


def test_english_index_is_kept_in_step(tmp_path: Path) -> None:
    calls: list[list[int]] = []
    r1 = _sync(tmp_path, [1, 2, 3], english=_english([1, 3], calls))
    assert (r1.manifest.embedder_en, r1.manifest.count_en) == ("test-en", 2)
    assert calls == [[1, 3]]
    # Only the English side changes: a new version, vectors fetched for the new id only.
    r2 = _sync(tmp_path, [1, 2, 3], english=_english([1, 2, 3], calls))
    assert r2.changed and r2.manifest.count_en == 3 and calls[-1] == [2]
    assert not _sync(tmp_path, [1, 2, 3], english=_english([1, 2, 3], calls)).changed
    snap = LibraryReader(tmp_path, 7).current()
    assert snap is not None and snap.vectors_en is not None and snap.ids_en is not None
    assert sorted(snap.ids_en.tolist()) == [1, 2, 3]
    assert snap.vectors_en.search(_vectors([502])[0], 1)[0][0] == 2
    # Turning the English embedder off publishes a snapshot without its index.
    r3 = _sync(tmp_path, [1, 2, 3])
    assert r3.changed and r3.manifest.embedder_en == "" and r3.manifest.count_en == 0
    snap = LibraryReader(tmp_path, 7).current()
    assert snap is not None and snap.vectors_en is None


# --- a library dropped, and maybe another one created under its id ----------------------------


def test_the_uid_of_an_index_stays_with_its_versions(tmp_path: Path) -> None:
    first = _sync(tmp_path, [1, 2]).manifest
    assert first.uid
    later = _sync(tmp_path, [1, 2, 3]).manifest
    rebuilt = _sync(tmp_path, [1, 2, 3], rebuild=True).manifest
    assert first.uid == later.uid == rebuilt.uid and rebuilt.version == 3


def test_drop_library_removes_every_file(tmp_path: Path) -> None:
    _sync(tmp_path, [1, 2])
    _sync(tmp_path, [1, 2, 3])
    assert index_store.drop_library(tmp_path, 7)
    assert not index_store.library_dir(tmp_path, 7).exists()
    assert read_manifest(tmp_path, 7) is None
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".locks")] == []
    assert not index_store.drop_library(tmp_path, 7)  # nothing left: nothing to do


def test_a_reader_lets_a_dropped_library_go(tmp_path: Path) -> None:
    _sync(tmp_path, [1, 2])
    reader = LibraryReader(tmp_path, 7)
    assert reader.current() is not None
    index_store.drop_library(tmp_path, 7)
    assert reader.current() is None
    assert reader._snapshot is None  # not kept in memory either


@pytest.mark.parametrize("versions", [1, 2, 3])
def test_a_new_index_under_a_reused_id_is_never_answered_by_the_old_one(
    tmp_path: Path, versions: int
) -> None:
    """The old library's snapshot is cached at version 2; a new library under the same id
    reaches version 1, 2 (the same number) or 3. Every time the reader serves the new one,
    at once — not the old one while the new one loads, and not never (a lower version)."""
    _sync(tmp_path, [1, 2])
    _sync(tmp_path, [1, 2, 3])
    reader = LibraryReader(tmp_path, 7)
    old = reader.current()
    assert old is not None and old.manifest.version == 2
    index_store.drop_library(tmp_path, 7)  # no query in between: the reader never saw it
    for n in range(versions):
        _sync(tmp_path, [10 + n])
    snap = reader.current()
    assert snap is not None and snap is not old
    assert snap.manifest.uid != old.manifest.uid and snap.manifest.version == versions
    assert snap.chunk_ids.tolist() == [9 + versions]
    assert reader.wait_loaded() is snap


def test_a_reload_finishing_after_a_drop_brings_nothing_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sync(tmp_path, [1, 2])
    reader = LibraryReader(tmp_path, 7)
    assert reader.current() is not None
    _sync(tmp_path, [1, 2, 3])
    manifest = read_manifest(tmp_path, 7)
    assert manifest is not None
    fresh = index_store.load_snapshot(tmp_path, 7, manifest)
    index_store.drop_library(tmp_path, 7)
    assert reader.current() is None
    monkeypatch.setattr(index_store, "load_snapshot", lambda *a: fresh)
    reader._load(manifest)  # the background load started before the drop ends now
    assert reader._snapshot is None


def test_writer_lock_waits_or_times_out(tmp_path: Path) -> None:
    with index_store.writer_lock(tmp_path, 7):
        started = time.monotonic()
        with pytest.raises(TimeoutError), index_store.writer_lock(tmp_path, 7, timeout=0.3):
            pass
        assert 0.25 < time.monotonic() - started < 3
        with index_store.writer_lock(tmp_path, 8, timeout=0.1):  # other libraries are free
            pass
    with index_store.writer_lock(tmp_path, 7, timeout=0.1):  # released
        pass
