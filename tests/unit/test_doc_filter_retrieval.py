"""Per-document permission filters inside retrieval: applied before ranking, never after.

A forbidden chunk must never come back, must not take a place among the `k`, and must not
change the order of the permitted ones: exact and IVF vector indexes (FAISS id selectors),
the BM25 index, and the hybrid searcher over snapshots built by the real index store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval import index_store
from retrieval.analyzer import analyze
from retrieval.hybrid import DENSE, DENSE_EN, KEYWORD, ChunkFilter, HybridSearcher
from retrieval.keyword_index import KeywordIndex
from retrieval.vector_index import FLAT, IVF, VectorIndex

DIM = 16
N = 2000
BASE = 10_000  # chunk ids are not positions: an id mix-up shows up as a wrong id


def _table() -> tuple[np.ndarray, np.ndarray]:
    # Clustered like real embeddings (topics), not uniform noise.
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(25, DIM))
    x = centers[rng.integers(0, 25, N)] + 0.35 * rng.normal(size=(N, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.arange(BASE, BASE + N, dtype=np.int64)


VECTORS, IDS = _table()


def _query(i: int) -> np.ndarray:
    return VECTORS[i]


@pytest.fixture(scope="module")
def exact() -> VectorIndex:
    index = VectorIndex.build(VECTORS, IDS, exact_max=10_000)
    assert index.kind == FLAT
    return index


@pytest.fixture(scope="module")
def ivf() -> VectorIndex:
    index = VectorIndex.build(VECTORS, IDS, exact_max=100)
    assert index.kind == IVF
    inner = faiss.extract_index_ivf(index.index)
    assert 1 < inner.nprobe < inner.nlist
    return index


def _ids(hits: Sequence[tuple[int, float]]) -> list[int]:
    return [i for i, _ in hits]


def _brute_force(q: np.ndarray, permitted: np.ndarray, k: int) -> list[int]:
    """The exact top k among the permitted ids, by numpy."""
    pos = permitted - BASE
    scores = VECTORS[pos] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(i) for i in permitted[order]]


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_vector_allow_returns_only_allowed_chunk_ids_and_a_full_k(
    kind: str, exact: VectorIndex, ivf: VectorIndex
) -> None:
    index = exact if kind == "exact" else ivf
    rng = np.random.default_rng(1)
    # Sparse: a few allowed chunks scattered over every IVF list.
    allow = np.sort(rng.choice(IDS, 40, replace=False))
    for qi in (0, 17, 333):
        q = _query(qi)
        hits = index.search(q, 20, allow=allow)
        assert len(hits) == 20
        assert set(_ids(hits)) <= set(allow.tolist())
        # Exhaustive over the allowed ones: the exact order, the same scores.
        assert _ids(hits) == _brute_force(q, allow, 20)
        full = dict(exact.search(q, N))
        assert all(s == pytest.approx(full[i], abs=1e-5) for i, s in hits)
    # Fewer allowed than k: all of them, in order.
    few = allow[:5]
    assert _ids(index.search(_query(3), 20, allow=few)) == _brute_force(_query(3), few, 20)
    assert index.search(_query(3), 20, allow=np.array([], dtype=np.int64)) == []


def test_ivf_probes_too_few_lists_for_a_sparse_filter_on_its_own(ivf: VectorIndex) -> None:
    """FAISS alone: a selector with nprobe < nlist returns fewer than k when the probed lists
    hold few permitted vectors. VectorIndex must widen the search instead (test above)."""
    inner = faiss.extract_index_ivf(ivf.index)
    allow = np.sort(np.random.default_rng(1).choice(IDS, 40, replace=False))
    sel = faiss.IDSelectorBatch(allow)
    params = faiss.SearchParametersIVF()
    params.sel = sel
    params.nprobe = inner.nprobe
    _, raw = ivf.index.search(VECTORS[:1], 20, params=params)
    assert (raw[0] >= 0).sum() < 20
    # And SearchParametersIVF's own default nprobe is 1, not the index's.
    assert faiss.SearchParametersIVF().nprobe == 1 != inner.nprobe


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_vector_deny_keeps_the_unfiltered_order_without_the_denied(
    kind: str, exact: VectorIndex, ivf: VectorIndex
) -> None:
    index = exact if kind == "exact" else ivf
    nprobe = faiss.extract_index_ivf(ivf.index).nprobe
    for qi in (0, 17, 333, 1500):
        q = _query(qi)
        unfiltered = index.search(q, 40)
        # Deny some of the best hits (including the query's own vector) and a few far ones.
        deny = np.array([*_ids(unfiltered)[:15:2], int(IDS[-1]), int(IDS[-2])], dtype=np.int64)
        hits = index.search(q, 20, deny=deny)
        assert len(hits) == 20
        assert not set(_ids(hits)) & set(deny.tolist())
        expected = [(i, s) for i, s in unfiltered if i not in set(deny.tolist())][:20]
        assert _ids(hits) == _ids(expected)
        assert [s for _, s in hits] == pytest.approx([s for _, s in expected], abs=1e-6)
    assert faiss.extract_index_ivf(ivf.index).nprobe == nprobe  # the index's nprobe is kept


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_vector_allow_and_deny_together(kind: str, exact: VectorIndex, ivf: VectorIndex) -> None:
    index = exact if kind == "exact" else ivf
    allow = IDS[:300]
    deny = IDS[:300:3]
    permitted = np.setdiff1d(allow, deny)
    hits = index.search(_query(5), 10, allow=allow, deny=deny)
    assert len(hits) == 10 and set(_ids(hits)) <= set(permitted.tolist())
    # Exact: the true top 10; IVF: the same as allowing just the permitted ones.
    expected = (
        _brute_force(_query(5), permitted, 10)
        if kind == "exact"
        else _ids(index.search(_query(5), 10, allow=permitted))
    )
    assert _ids(hits) == expected


def test_filters_survive_save_and_load(tmp_path: Path, ivf: VectorIndex) -> None:
    ivf.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss")
    assert loaded.kind == IVF
    allow = IDS[1000:1030]
    got = loaded.search(_query(0), 10, allow=allow)
    assert len(got) == 10 and set(_ids(got)) <= set(allow.tolist())
    assert got == ivf.search(_query(0), 10, allow=allow)
    deny = np.array(_ids(ivf.search(_query(0), 5)), dtype=np.int64)
    got = loaded.search(_query(0), 10, deny=deny)
    assert len(got) == 10 and not set(_ids(got)) & set(deny.tolist())


# ------------------------------------------------------------------------------ BM25


@pytest.fixture(scope="module")
def keywords() -> KeywordIndex:
    ids = [BASE + i for i in range(60)]
    tokens = [["pump", "seal"] + [f"w{i}"] * (1 + i % 4) for i in range(60)]
    return KeywordIndex.build(ids, tokens)


def test_keyword_allow_and_deny_mask_before_the_top_k(keywords: KeywordIndex) -> None:
    full = dict(keywords.search(["pump", "w3"], 60))
    assert len(full) == 60
    allow = np.array([BASE + i for i in range(0, 60, 5)], dtype=np.int64)  # 12 chunks
    hits = keywords.search(["pump", "w3"], 10, allow=allow)
    assert len(hits) == 10 and set(_ids(hits)) <= set(allow.tolist())
    # Scores keep the library's statistics: the same as unfiltered.
    assert all(s == full[i] for i, s in hits)
    assert _ids(hits) == sorted(_ids(hits), key=lambda i: (-full[i], i))
    deny = np.array(_ids(keywords.search(["pump", "w3"], 8)), dtype=np.int64)
    hits = keywords.search(["pump", "w3"], 10, deny=deny)
    assert len(hits) == 10 and not set(_ids(hits)) & set(deny.tolist())
    unfiltered = keywords.search(["pump", "w3"], 60)
    assert hits == [h for h in unfiltered if h[0] not in set(deny.tolist())][:10]
    assert keywords.search(["pump"], 10, allow=np.array([], dtype=np.int64)) == []
    both = keywords.search(["pump"], 60, allow=allow, deny=allow[:4])
    assert set(_ids(both)) == set(allow[4:].tolist())


def test_keyword_ties_do_not_depend_on_masked_chunks(keywords: KeywordIndex) -> None:
    # "pump" scores chunks of equal length equally: which tied chunks fill the k must not
    # depend on the forbidden ones around them.
    allow = np.array([BASE + i for i in range(1, 60, 4)], dtype=np.int64)  # one length class
    hits = keywords.search(["pump"], 5, allow=allow)
    assert len({s for _, s in hits}) == 1
    assert _ids(hits) == allow[:5].tolist()


# ------------------------------------------------------------------------------ hybrid


class HashEmbedder:
    """Deterministic pseudo-random unit vectors per text: enough to rank, no model needed."""

    max_tokens = 256

    def __init__(self, name: str, dim: int = DIM):
        self.name = name
        self.dim = dim

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(f"{self.name}:{text}".encode()).digest()[:8])
            out[row] = np.random.default_rng(seed).normal(size=self.dim)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


TOPICS = ["pump seal", "hotel lodging", "annual leave", "passphrase security", "canteen"]
CORPUS = {
    100 + i: f"Note {i}: the quagga {TOPICS[i % 5]} rule number {i} 报销 规定 第{i}条"
    for i in range(50)
}
COPY = 1000  # library 3 holds the same texts under ids + COPY
CORPUS.update({i + COPY: text for i, text in list(CORPUS.items())})
QUERY = "quagga pump seal 报销"


def _sync(root: Path, library: int, ids: Sequence[int], en: HashEmbedder, main: HashEmbedder):
    english = index_store.DenseInput(
        embedder=en.name,
        dim=en.dim,
        wanted_ids=list(ids),
        fetch_vectors=lambda wanted: en.embed([CORPUS[i] for i in wanted]),
    )
    index_store.sync_library(
        root,
        library,
        embedder=main.name,
        dim=main.dim,
        wanted_ids=list(ids),
        wanted_tokens=[analyze(CORPUS[i]) for i in ids],
        fetch_vectors=lambda wanted: main.embed([CORPUS[i] for i in wanted]),
        exact_max=1000,
        english=english,
    )


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> HybridSearcher:
    """Library 1 holds every chunk; library 2 only the chunks the filters below permit;
    library 3 a copy of library 1 under other ids."""
    root = tmp_path_factory.mktemp("indexes")
    main, en = HashEmbedder("hash-main"), HashEmbedder("hash-en")
    originals = [i for i in sorted(CORPUS) if i < COPY]
    _sync(root, 1, originals, en, main)
    _sync(root, 2, [i for i in originals if i not in FORBIDDEN], en, main)
    _sync(root, 3, [i + COPY for i in originals], en, main)
    return HybridSearcher(root, main, en)


FORBIDDEN = frozenset(range(100, 150, 3))  # 17 of the 50 chunks, spread over the corpus
DENY = {1: ChunkFilter(np.array(sorted(FORBIDDEN)), allow=False)}
ALLOW = {1: ChunkFilter(np.array([i for i in range(100, 150) if i not in FORBIDDEN]), allow=True)}


def test_chunk_filter() -> None:
    f = ChunkFilter(np.array([5, 3, 3]), allow=True)
    assert f.chunk_ids.tolist() == [3, 5] and f.chunk_ids.dtype == np.int64
    assert f.permits(3) and not f.permits(4) and f.allow_ids is not None and f.deny_ids is None
    g = ChunkFilter(np.array([3]), allow=False)
    assert not g.permits(3) and g.permits(4) and g.deny_ids is not None
    assert ChunkFilter(np.array([], dtype=np.int64), allow=True).permits_nothing
    assert not ChunkFilter(np.array([], dtype=np.int64), allow=False).permits_nothing


@pytest.mark.parametrize("filters", [DENY, ALLOW], ids=["deny", "allow"])
@pytest.mark.parametrize("mode", [DENSE, DENSE_EN])
def test_dense_ranking_is_that_of_a_library_of_only_the_permitted_chunks(
    hybrid: HybridSearcher, filters: dict[int, ChunkFilter], mode: str
) -> None:
    filtered = hybrid.search(QUERY, [1], modes=(mode,), top_k=10, candidates=10, filters=filters)
    assert len(filtered) == 10 and not {h.chunk_id for h in filtered} & FORBIDDEN
    alone = hybrid.search(QUERY, [2], modes=(mode,), top_k=10, candidates=10)
    assert [(h.chunk_id, h.scores) for h in filtered] == [(h.chunk_id, h.scores) for h in alone]
    everything = hybrid.search(QUERY, [1], modes=(mode,), top_k=50, candidates=50)
    assert [h.chunk_id for h in filtered] == [
        h.chunk_id for h in everything if h.chunk_id not in FORBIDDEN
    ][:10]
    # The filter really removed something from the unfiltered top 10.
    assert {h.chunk_id for h in everything[:10]} & FORBIDDEN


@pytest.mark.parametrize("filters", [DENY, ALLOW], ids=["deny", "allow"])
def test_bm25_and_hybrid_never_return_forbidden_chunks_and_fill_k(
    hybrid: HybridSearcher, filters: dict[int, ChunkFilter]
) -> None:
    unfiltered = hybrid.search(QUERY, [1], modes=(KEYWORD,), top_k=10, candidates=10)
    assert {h.chunk_id for h in unfiltered} & FORBIDDEN
    bm25 = hybrid.search(QUERY, [1], modes=(KEYWORD,), top_k=10, candidates=10, filters=filters)
    assert len(bm25) == 10 and not {h.chunk_id for h in bm25} & FORBIDDEN
    both = hybrid.search(
        QUERY, [1], modes=(DENSE, DENSE_EN, KEYWORD), top_k=20, candidates=20, filters=filters
    )
    assert len(both) == 20 and not {h.chunk_id for h in both} & FORBIDDEN
    assert {name for h in both for name in h.scores} == {DENSE, DENSE_EN, KEYWORD}
    # A library with no entry is searched whole; an allow-nothing filter removes the library.
    other = hybrid.search(QUERY, [1, 3], top_k=100, candidates=100, filters=filters)
    assert {h.chunk_id for h in other if h.library_id == 3} == {i + COPY for i in range(100, 150)}
    assert {h.chunk_id for h in other if h.library_id == 1} == set(range(100, 150)) - FORBIDDEN
    nothing = {1: ChunkFilter(np.array([], dtype=np.int64), allow=True)}
    assert hybrid.search(QUERY, [1], filters=nothing) == []
    assert {h.library_id for h in hybrid.search(QUERY, [1, 3], filters=nothing)} == {3}
