"""FAISS's thread count for searches holds in every thread, not only the one that set it."""

from __future__ import annotations

import threading

import faiss
import numpy as np

from retrieval import vector_index
from retrieval.vector_index import VectorIndex, set_search_threads


def test_search_threads_hold_in_the_threads_a_server_searches_on() -> None:
    if faiss.omp_get_max_threads() < 2:
        faiss.omp_set_num_threads(2)  # this thread's default must differ from the setting
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((200, 16)).astype(np.float32)
    index = VectorIndex.build(vectors, np.arange(200, dtype=np.int64), exact_max=1000)
    seen: list[tuple[int, int, list[tuple[int, float]]]] = []

    def search() -> None:
        before = faiss.omp_get_max_threads()
        hits = index.search(vectors[7], 3)
        seen.append((before, faiss.omp_get_max_threads(), hits))

    try:
        set_search_threads(1)
        worker = threading.Thread(target=search)  # a fresh thread starts at OpenMP's default
        worker.start()
        worker.join()
        before, during, hits = seen[0]
        assert before >= 2  # OpenMP does not carry the setting into new threads by itself
        assert during == 1
        assert hits[0][0] == 7
    finally:
        vector_index._search_threads = None
