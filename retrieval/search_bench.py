"""Search benchmark on synthetic libraries of a given size (`zhiku bench search`).

Each library is built through the real index store (`sync_library`: FAISS index type chosen by
size, BM25 keyword index, snapshot on disk) and queried through the real `HybridSearcher`,
query embedding included. The corpus is synthetic so any size can be built quickly:

* vectors: a random linear image of a 48-dimensional Gaussian (real sentence embeddings have a
  low intrinsic dimension too) plus isotropic noise, normalised. This has no clean clusters for
  IVF to exploit, so its recall is a fair (rather pessimistic) stand-in for real embeddings;
* text: 24 tokens per chunk drawn from a Zipf distribution over 50,000 synthetic words, so
  posting lists grow with the library as real vocabularies do.

Queries embed a real sentence with the real query encoder (its cost is part of the latency),
while FAISS is searched with a query vector drawn like the corpus (a centre plus noise).
Recall@10 of the library's FAISS index is measured against exact inner-product search.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.embedders import Embedder
from retrieval.hybrid import HybridSearcher
from retrieval.index_store import library_dir, sync_library
from retrieval.metrics import percentile

VOCABULARY = 50_000
TOKENS_PER_CHUNK = 24
QUERY_TOKENS = 4
LATENT_DIM = 48
NOISE = 0.3
BUILD_BATCH = 100_000


@dataclass(frozen=True)
class SizeResult:
    chunks: int
    vector_kind: str
    build_s: float
    p50_ms: float
    p95_ms: float
    dense_p95_ms: float
    keyword_p95_ms: float
    recall_at_10_vs_exact: float
    bytes_per_chunk: float
    vector_bytes_per_chunk: float
    keyword_bytes_per_chunk: float

    def as_json(self) -> dict[str, float | int | str]:
        return {
            "p50_ms": round(self.p50_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "recall@10_vs_exact": round(self.recall_at_10_vs_exact, 4),
            "bytes_per_chunk": round(self.bytes_per_chunk, 1),
            "vector_bytes_per_chunk": round(self.vector_bytes_per_chunk, 1),
            "keyword_bytes_per_chunk": round(self.keyword_bytes_per_chunk, 1),
            "dense_p95_ms": round(self.dense_p95_ms, 2),
            "bm25_p95_ms": round(self.keyword_p95_ms, 2),
            "vector_index": self.vector_kind,
            "build_s": round(self.build_s, 1),
        }


class _PlantedQueryEmbedder:
    """Pays the real encoder's cost for the query text, returns the planted query vector."""

    def __init__(self, real: Embedder):
        self.real = real
        self.name = real.name
        self.dim = real.dim
        self.max_tokens = real.max_tokens
        self.next_vector: np.ndarray | None = None

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        self.real.embed(texts)
        assert self.next_vector is not None
        return self.next_vector.reshape(1, -1)

    def count_tokens(self, text: str) -> int:
        return self.real.count_tokens(text)


class SyntheticCorpus:
    def __init__(self, n: int, dim: int, seed: int = 0):
        self.n, self.dim = n, dim
        rng = np.random.default_rng(seed)
        self.basis = rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)
        self._seed = seed
        ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
        weights = 1.0 / ranks
        self.word_p = weights / weights.sum()

    def _draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        latent = rng.standard_normal((count, LATENT_DIM))
        noise = rng.standard_normal((count, self.dim)) * (NOISE / np.sqrt(self.dim))
        return _unit(latent @ self.basis + noise).astype(np.float32)

    def vectors(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, self.dim), dtype=np.float32)
        for lo in range(start, stop, BUILD_BATCH):
            hi = min(stop, lo + BUILD_BATCH)
            out[lo - start : hi - start] = self._draw(
                np.random.default_rng((self._seed, lo)), hi - lo
            )
        return out

    def tokens(self) -> list[list[str]]:
        rng = np.random.default_rng((self._seed, 1))
        words = rng.choice(VOCABULARY, size=(self.n, TOKENS_PER_CHUNK), p=self.word_p)
        return [[f"w{w}" for w in row] for row in words.tolist()]

    def queries(self, count: int) -> tuple[np.ndarray, list[list[str]]]:
        rng = np.random.default_rng((self._seed, 2))
        vectors = self._draw(rng, count)
        # Query words from the frequent-to-middle part of the vocabulary, as real questions.
        words = rng.integers(10, 5_000, (count, QUERY_TOKENS))
        return vectors, [[f"w{w}" for w in row] for row in words.tolist()]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _exact_top10(corpus: SyntheticCorpus, queries: np.ndarray) -> np.ndarray:
    """Exact inner-product top 10 ids per query, computed block by block with numpy."""
    best_s = np.full((len(queries), 10), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 10), dtype=np.int64)
    for start in range(0, corpus.n, BUILD_BATCH):
        stop = min(corpus.n, start + BUILD_BATCH)
        scores = queries @ corpus.vectors(start, stop).T
        all_s = np.concatenate([best_s, scores], axis=1)
        all_i = np.concatenate(
            [best_i, np.broadcast_to(np.arange(start, stop), scores.shape)], axis=1
        )
        top = np.argpartition(-all_s, 9, axis=1)[:, :10]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_i = np.take_along_axis(all_i, top, axis=1)
    return best_i


def bench_size(
    n: int,
    embedder: Embedder,
    *,
    exact_max: int,
    queries: int = 200,
    work_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> SizeResult:
    corpus = SyntheticCorpus(n, embedder.dim)
    root = Path(tempfile.mkdtemp(prefix="zhiku-bench-search-", dir=work_dir))
    try:
        progress(f"{n:,} chunks: building indexes")
        started = time.perf_counter()
        manifest = sync_library(
            root,
            1,
            embedder=embedder.name,
            dim=embedder.dim,
            wanted_ids=list(range(n)),
            wanted_tokens=corpus.tokens(),
            fetch_vectors=lambda ids: (
                corpus.vectors(int(ids[0]), int(ids[-1]) + 1)
                if len(ids)
                else np.zeros((0, embedder.dim), np.float32)
            ),
            exact_max=exact_max,
        ).manifest
        build_s = time.perf_counter() - started
        snap_dir = library_dir(root, 1) / manifest.snapshot
        vector_bytes = (snap_dir / "vectors.faiss").stat().st_size
        keyword_bytes = _dir_bytes(snap_dir / "keywords")

        planted = _PlantedQueryEmbedder(embedder)
        searcher = HybridSearcher(root, planted)
        qvecs, qtokens = corpus.queries(queries)
        texts = [" ".join(t) for t in qtokens]
        snap = searcher.reader(1).current()
        assert snap is not None
        progress(f"{n:,} chunks: measuring recall against exact search")
        exact = _exact_top10(corpus, qvecs)
        hits = 0
        for qi in range(queries):
            got = {cid for cid, _ in snap.vectors.search(qvecs[qi], 10)}
            hits += len(got & set(exact[qi].tolist()))
        recall = hits / (10 * queries)

        progress(f"{n:,} chunks: timing {queries} hybrid queries")
        for qi in range(min(5, queries)):  # warm-up: caches, JIT, first snapshot load
            planted.next_vector = qvecs[qi]
            searcher.search(texts[qi], [1], top_k=10)
        total, dense, keyword = [], [], []
        for qi in range(queries):
            planted.next_vector = qvecs[qi]
            t0 = time.perf_counter()
            searcher.search(texts[qi], [1], top_k=10)
            total.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            snap.vectors.search(qvecs[qi], 50)
            dense.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            snap.keywords.search(qtokens[qi], 50)
            keyword.append((time.perf_counter() - t0) * 1000)
        return SizeResult(
            chunks=n,
            vector_kind=manifest.vector_kind,
            build_s=build_s,
            p50_ms=percentile(total, 50),
            p95_ms=percentile(total, 95),
            dense_p95_ms=percentile(dense, 95),
            keyword_p95_ms=percentile(keyword, 95),
            recall_at_10_vs_exact=recall,
            bytes_per_chunk=(vector_bytes + keyword_bytes) / n,
            vector_bytes_per_chunk=vector_bytes / n,
            keyword_bytes_per_chunk=keyword_bytes / n,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
