#!/usr/bin/env python
"""Compare dense embedders on the development QA sets (recall@5, MRR@10, chunks/s).

For each data set (a folder with corpus.jsonl and questions.jsonl, see the eval README):

* every document is cut into chunks of at most --chunk-tokens tokens by simple sentence
  packing (one chunking per data set, shared by all embedders, counted with the MiniLM
  WordPiece tokenizer so MiniLM never truncates a chunk: 254 + [CLS]/[SEP] = 256);
* each embedder embeds all chunks with every core and batch size 32 (timed: chunks/s), and
  each question alone on a 1-thread instance (timed: query ms, the query-time setting);
* exact inner-product search over all chunks (numpy matmul); the top 5 / top 10 chunks are
  graded: a hit is a chunk whose document is one of the question's positive_doc_ids.

recall@5 = share of questions with at least one hit in the top 5 chunks (the "recall@5" of
the baselines in DESIGN.md); MRR@10 = mean reciprocal rank of the first hit in the top 10.

    .venv/bin/python scripts/eval_embedders.py --eval-dir ../shared/eval --json

Run it alone: it uses both cores for minutes (rgb_zh has 7,337 documents).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import retrieval.embedders as embedders
except ModuleNotFoundError:  # run from a checkout without an editable install
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import retrieval.embedders as embedders

from retrieval.embedders import Embedder, SentenceTransformerEmbedder, load_embedder

DATASETS = ("rgb_zh", "rgb_en", "covidqa_en")


def _minilm_bf16(threads: int | None) -> Embedder:
    return SentenceTransformerEmbedder(
        embedders._minilm_dir(), name="all-minilm-l6-v2", threads=threads, dtype="bf16"
    )


#: candidate name -> factory(threads) -> Embedder
CANDIDATES: dict[str, Callable[[int | None], Embedder]] = {
    "minilm-fp32": lambda threads: load_embedder("minilm", threads=threads),
    "minilm-bf16": _minilm_bf16,
    "use-multilingual": lambda threads: load_embedder("use-multilingual", threads=threads),
}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    text: str
    tokens: int


@dataclass(frozen=True)
class Question:
    qid: str
    text: str
    positives: frozenset[str]


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# --------------------------------------------------------------------------- chunking

# A sentence ends after Chinese end punctuation (plus closing quotes), after . ? ! followed by
# whitespace, or at a line break.
_SENTENCE_END = re.compile(r"[。！？!?；;…]+[”’」』）)\"']*|[.?!]+[\"')\]]*(?=\s)|\n+")


class Chunker:
    """Greedy sentence packing up to a token budget; over-long sentences are cut by tokens."""

    def __init__(self, budget: int) -> None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(embedders._minilm_dir() / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        self.budget = budget

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def _sentences(self, text: str) -> Iterator[str]:
        start = 0
        for m in _SENTENCE_END.finditer(text):
            yield text[start : m.end()]
            start = m.end()
        if start < len(text):
            yield text[start:]

    def _split_long(self, sentence: str) -> Iterator[tuple[str, int]]:
        enc = self._tok.encode(sentence, add_special_tokens=False)
        offsets = enc.offsets
        for i in range(0, len(offsets), self.budget):
            window = offsets[i : i + self.budget]
            piece = sentence[window[0][0] : window[-1][1]]
            yield piece, len(window)

    def chunk(self, text: str) -> list[tuple[str, int]]:
        chunks: list[tuple[str, int]] = []
        parts: list[str] = []
        used = 0

        def flush() -> None:
            nonlocal parts, used
            joined = "".join(parts).strip()
            if joined:
                chunks.append((joined, used))
            parts, used = [], 0

        for sentence in self._sentences(text):
            n = self.count(sentence)
            if n == 0:
                parts.append(sentence)
                continue
            if n > self.budget:
                flush()
                for piece, k in self._split_long(sentence):
                    chunks.append((piece.strip(), k))
                continue
            if used + n > self.budget:
                flush()
            parts.append(sentence)
            used += n
        flush()
        return chunks


def load_dataset(folder: Path, chunker: Chunker) -> tuple[list[Chunk], list[Question]]:
    chunks: list[Chunk] = []
    for doc in read_jsonl(folder / "corpus.jsonl"):
        for text, n in chunker.chunk(doc["text"]):
            chunks.append(Chunk(doc["doc_id"], text, n))
    questions = [
        Question(q["qid"], q["question"], frozenset(q["positive_doc_ids"]))
        for q in read_jsonl(folder / "questions.jsonl")
    ]
    return chunks, questions


# --------------------------------------------------------------------------- evaluation


@dataclass
class Result:
    """One embedder on one data set. None = not measured in this run (--no-quality)."""

    recall_at_5: float | None = None
    mrr_at_10: float | None = None
    chunks_per_s: float | None = None  # one pass over every chunk
    embed_s: float | None = None
    query_ms_p50: float | None = None  # one question at a time, 1-thread instance
    query_ms_p90: float | None = None
    best_chunks_per_s: float | None = None  # best of --rounds interleaved passes over a sample


@dataclass
class DatasetReport:
    n_docs: int
    n_chunks: int
    avg_chunk_tokens: float
    n_questions: int
    results: dict[str, Result] = field(default_factory=dict)


def grade(
    chunk_vecs: np.ndarray, query_vecs: np.ndarray, chunk_docs: list[str], qs: list[Question]
) -> tuple[float, float]:
    """Exact inner-product search; returns (recall@5, MRR@10)."""
    hits5 = 0
    rr_sum = 0.0
    k = min(10, len(chunk_docs))
    for start in range(0, len(qs), 64):
        scores = query_vecs[start : start + 64] @ chunk_vecs.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for row, q in enumerate(qs[start : start + 64]):
            ranked = top[row][np.argsort(-scores[row, top[row]], kind="stable")]
            is_hit = [chunk_docs[i] in q.positives for i in ranked]
            if any(is_hit[:5]):
                hits5 += 1
            if any(is_hit):
                rr_sum += 1.0 / (is_hit.index(True) + 1)
    n = max(1, len(qs))
    return hits5 / n, rr_sum / n


def evaluate(
    name: str,
    batch_emb: Embedder,
    query_emb: Embedder,
    chunks: list[Chunk],
    qs: list[Question],
    batch_size: int,
) -> Result:
    texts = [c.text for c in chunks]
    t0 = time.perf_counter()
    chunk_vecs = batch_emb.embed(texts, batch_size=batch_size)
    embed_s = time.perf_counter() - t0
    latencies: list[float] = []
    query_vecs = np.empty((len(qs), query_emb.dim), dtype=np.float32)
    for i, q in enumerate(qs):
        t = time.perf_counter()
        query_vecs[i] = query_emb.embed([q.text])[0]
        latencies.append((time.perf_counter() - t) * 1000)
    recall, mrr = grade(chunk_vecs, query_vecs, [c.doc_id for c in chunks], qs)
    lat = sorted(latencies) or [0.0]
    return Result(
        recall_at_5=round(recall, 4),
        mrr_at_10=round(mrr, 4),
        chunks_per_s=round(len(texts) / embed_s, 1) if embed_s > 0 else 0.0,
        embed_s=round(embed_s, 1),
        query_ms_p50=round(statistics.median(lat), 2),
        query_ms_p90=round(lat[int(0.9 * (len(lat) - 1))], 2),
    )


def measure_best_throughput(
    embs: dict[str, Embedder],
    chunks: list[Chunk],
    rep: DatasetReport,
    rounds: int,
    sample: int,
    batch_size: int,
) -> None:
    """Best-of-N chunks/s on the same sample, embedders interleaved in each round.

    The machine is shared: a full pass is exposed to whatever else runs meanwhile. The best
    of a few interleaved rounds is a fairer comparison between embedders.
    """
    if rounds <= 0 or not chunks:
        return
    step = max(1, len(chunks) // sample)
    texts = [c.text for c in chunks[::step][:sample]]
    best: dict[str, float] = dict.fromkeys(embs, 0.0)
    for _ in range(rounds):
        for name, emb in embs.items():
            t = time.perf_counter()
            emb.embed(texts, batch_size=batch_size)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - t))
    for name, value in best.items():
        rep.results[name].best_chunks_per_s = round(value, 1)
    log(f"best-of-{rounds} chunks/s on {len(texts)} chunks: {best}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def markdown(reports: dict[str, DatasetReport]) -> str:
    lines: list[str] = []
    for ds, rep in reports.items():
        lines.append(
            f"\n### {ds} ({rep.n_docs} docs, {rep.n_chunks} chunks, "
            f"avg {rep.avg_chunk_tokens:.0f} tokens, {rep.n_questions} questions)\n"
        )
        lines.append(
            "| embedder | recall@5 | MRR@10 | chunks/s full pass | chunks/s best of rounds "
            "| query ms p50 (1 thread) |"
        )
        lines.append("|---|---|---|---|---|---|")
        for name, r in rep.results.items():
            cells = [r.recall_at_5, r.mrr_at_10, r.chunks_per_s, r.best_chunks_per_s]
            cells.append(r.query_ms_p50)
            shown = [
                "–" if v is None else f"{v:.3f}" if i < 2 else f"{v:.1f}"
                for i, v in enumerate(cells)
            ]
            lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--eval-dir", type=Path, default=Path("../shared/eval"))
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--embedders", default=",".join(CANDIDATES))
    ap.add_argument("--chunk-tokens", type=int, default=254)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (0 = skip)")
    ap.add_argument("--sample", type=int, default=256, help="chunks per throughput round")
    ap.add_argument("--threads", type=int, default=None, help="ingestion threads (all cores)")
    ap.add_argument("--limit-chunks", type=int, default=None, help="smoke test: first N chunks")
    ap.add_argument("--limit-questions", type=int, default=None)
    ap.add_argument("--no-quality", action="store_true", help="only the best-of-rounds throughput")
    ap.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.embedders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        ap.error(f"unknown embedders {unknown}; choose from {list(CANDIDATES)}")

    started = time.time()
    load_start = os.getloadavg()
    chunker = Chunker(args.chunk_tokens)
    reports: dict[str, DatasetReport] = {}
    loaded: dict[str, tuple[Embedder, Embedder]] = {}
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        folder = args.eval_dir / ds
        chunks, qs = load_dataset(folder, chunker)
        if args.limit_chunks:
            chunks = chunks[: args.limit_chunks]
        if args.limit_questions:
            qs = qs[: args.limit_questions]
        rep = DatasetReport(
            n_docs=len({c.doc_id for c in chunks}),
            n_chunks=len(chunks),
            avg_chunk_tokens=round(sum(c.tokens for c in chunks) / max(1, len(chunks)), 1),
            n_questions=len(qs),
        )
        log(f"{ds}: {rep.n_docs} docs -> {rep.n_chunks} chunks, {rep.n_questions} questions")
        for name in names:
            if name not in loaded:
                query_emb = batch_emb = CANDIDATES[name](args.threads)
                if not args.no_quality:
                    query_emb = CANDIDATES[name](1)
                loaded[name] = (batch_emb, query_emb)
            batch_emb, query_emb = loaded[name]
            if args.no_quality:
                res = Result()
            else:
                res = evaluate(name, batch_emb, query_emb, chunks, qs, args.batch_size)
            rep.results[name] = res
            log(f"{ds} {name}: {res}")
        measure_best_throughput(
            {n: loaded[n][0] for n in names}, chunks, rep, args.rounds, args.sample, args.batch_size
        )
        reports[ds] = rep

    payload: dict[str, Any] = {
        "config": {
            "chunk_tokens": args.chunk_tokens,
            "chunk_tokenizer": "all-MiniLM-L6-v2 WordPiece",
            "batch_size": args.batch_size,
            "threads": embedders._resolve_threads(args.threads),
            "cores": embedders.available_cores(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(time.time() - started, 1),
        },
        "datasets": {ds: asdict(rep) for ds, rep in reports.items()},
    }
    text = json.dumps(payload, ensure_ascii=False, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text if args.json else markdown(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
