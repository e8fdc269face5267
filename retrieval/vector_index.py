"""FAISS vector index addressed by chunk id: inner product on L2-normalized vectors.

Exact (flat) search up to `exact_max` vectors, an IVF index beyond it (trained on the
library's own vectors, `nlist` ≈ 4·√n). `nprobe` = nlist / 4: on `zhiku bench search`'s
synthetic embeddings (no clean clusters, so pessimistic) nlist/8 gave recall@10 vs exact
0.885 at 100k chunks, nlist/5 0.95, nlist/3 0.99; at 1M nlist/5 0.977 in 26 ms.

A search may be restricted to permitted chunk ids (per-document permissions): a FAISS id
selector applied inside the scan, before ranking, never a filter on the results."""

from __future__ import annotations

import math
from pathlib import Path

import faiss
import numpy as np

FLAT = "flat"
IVF = "ivf"


_search_threads: int | None = None  # what set_search_threads asked for; None: FAISS's default


def set_search_threads(threads: int) -> None:
    """FAISS's OpenMP threads for searches in this process. One query on a small machine is
    fastest on one thread (several spin against each other); batch index builds may use more.

    OpenMP keeps this number per thread: set here, it would not hold in the threads a web server
    runs searches on (there FAISS would use every core, and its OpenBLAS threads were seen
    spinning for minutes on a loaded machine). So each search applies it in its own thread."""
    global _search_threads
    _search_threads = max(1, threads)
    faiss.omp_set_num_threads(_search_threads)


def _apply_search_threads() -> None:
    if _search_threads is not None and faiss.omp_get_max_threads() != _search_threads:
        faiss.omp_set_num_threads(_search_threads)


def nprobe_for(nlist: int) -> int:
    """Lists probed per query: a quarter of them (recall@10 vs exact ≥ 0.95, see above)."""
    return min(nlist, max(8, nlist // 4))


def _as_f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _selectors(allow: np.ndarray | None, deny: np.ndarray | None) -> list[faiss.IDSelector]:
    """FAISS id selectors for a filter; the last one is the one to search with (the others are
    its parts, returned so the caller keeps them alive). Empty when nothing is filtered."""
    parts: list[faiss.IDSelector] = []
    if allow is not None:
        parts.append(faiss.IDSelectorBatch(np.asarray(allow, dtype=np.int64)))
    if deny is not None and len(deny):
        batch = faiss.IDSelectorBatch(np.asarray(deny, dtype=np.int64))
        parts += [batch, faiss.IDSelectorNot(batch)]
    if allow is not None and len(parts) > 1:
        parts.append(faiss.IDSelectorAnd(parts[0], parts[-1]))
    return parts


def _params(
    sel: faiss.IDSelector | None, *, nprobe: int | None = None
) -> faiss.SearchParameters | None:
    """Search parameters carrying `sel`; for an IVF index (`nprobe` given) always an IVF
    parameter object with `nprobe` set, since its default (1) would replace the index's own,
    and an IVF index rejects plain `SearchParameters`. The caller keeps `sel` alive."""
    if nprobe is None:
        if sel is None:
            return None
        params = faiss.SearchParameters()
    else:
        params = faiss.SearchParametersIVF()
        params.nprobe = nprobe
    if sel is not None:
        params.sel = sel
    return params


def _hits(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    return [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]


class VectorIndex:
    def __init__(self, index: faiss.Index, kind: str):
        self.index = index
        self.kind = kind

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def empty(cls, dim: int) -> VectorIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), FLAT)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, *, exact_max: int) -> VectorIndex:
        dim = vectors.shape[1]
        n = len(ids)
        if n <= exact_max:
            index = cls.empty(dim)
            index.add(vectors, ids)
            return index
        # ≈4·√n lists, but at least 39 training points per centroid (FAISS's advice).
        nlist = max(16, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors
        if n > nlist * 64:
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(n, nlist * 64, replace=False)]
        ivf.train(_as_f32(sample))
        ivf.nprobe = nprobe_for(nlist)
        built = cls(ivf, IVF)
        built.add(vectors, ids)
        return built

    def should_rebuild(self, n: int, exact_max: int) -> bool:
        """True when the library outgrew exact search, or the IVF has grown far past its
        training."""
        if self.kind == FLAT:
            return n > exact_max
        trained_for = (int(faiss.extract_index_ivf(self.index).nlist) / 4) ** 2
        return n > 4 * trained_for or n <= exact_max

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(_as_f32(vectors), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64)))

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allow: np.ndarray | None = None,
        deny: np.ndarray | None = None,
    ) -> list[tuple[int, float]]:
        """The `k` nearest chunk ids with their scores, best first.

        `allow` (only these ids) and `deny` (never these ids) restrict the search inside FAISS
        through an id selector, before ranking: a filtered-out vector takes no place among the
        `k`, and the permitted ones come back in the order (and with the scores) of an
        unfiltered search. An empty `allow` permits nothing.

        Exact indexes return min(k, permitted) hits. An IVF index scans only `nprobe` lists, so
        a filter that leaves few permitted vectors in them could return fewer than that: when a
        search comes back short it is repeated over every list (exhaustive, filter still
        applied), so the count is min(k, permitted) here too, with or without a filter.
        """
        if len(self) == 0 or k <= 0:
            return []
        if allow is not None and len(allow) == 0:
            return []
        _apply_search_threads()
        q = _as_f32(query.reshape(1, -1))
        want = min(k, len(self), len(allow) if allow is not None else k)
        # The selectors must outlive the search: keep Python references until it returns.
        selectors = _selectors(allow, deny)
        sel = selectors[-1] if selectors else None
        if self.kind != IVF:
            return _hits(*self.index.search(q, want, params=_params(sel)))
        ivf = faiss.extract_index_ivf(self.index)
        nprobe, nlist = int(ivf.nprobe), int(ivf.nlist)
        hits: list[tuple[int, float]] = []
        for probe in (nprobe, nlist) if nprobe < nlist else (nprobe,):
            hits = _hits(*self.index.search(q, want, params=_params(sel, nprobe=probe)))
            if len(hits) >= want:
                break
        return hits

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        index = faiss.read_index(str(path))
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            return cls(index, FLAT)
        ivf.nprobe = nprobe_for(int(ivf.nlist))  # the rule of this version, not the file's
        return cls(index, IVF)
