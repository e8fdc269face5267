"""`zhiku eval retrieval`: ingest a QA set's corpus through the real pipeline, run every
question in each ranking mode and report recall@1/5/10, MRR@10, nDCG@10 and query latency,
per language and overall.

Data set format (the sets in shared/eval): `corpus.jsonl` lines `{"doc_id", "title", "text",
"lang"}`, `questions.jsonl` lines `{"qid", "question", "answers", "positive_doc_ids", "lang"}`.
A hit is a returned passage whose document is one of the question's positive documents.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli.ingest_cmd import ingest_paths, progress_bar
from core import db
from core.models import DocStatus
from core.repo import documents, libraries
from core.settings import Settings, get_settings
from retrieval.metrics import mrr_at, ndcg_at, percentile, recall_at
from retrieval.service import Retriever

RERANK_MODE = "hybrid+rerank"
BASE_MODES = ("dense", "bm25", "hybrid")
CUTOFFS = (1, 5, 10)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CorpusDoc:
    doc_id: str
    title: str
    text: str
    lang: str


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    positives: frozenset[str]
    lang: str


def _read_jsonl(path: Path) -> Iterator[dict[str, object]]:
    if not path.is_file():
        raise typer.BadParameter(
            f"{path} is missing: a data set folder holds corpus.jsonl and questions.jsonl"
        )
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise typer.BadParameter(f"{path}:{n}: not JSON ({exc})") from exc


def load_dataset(directory: Path) -> tuple[list[CorpusDoc], list[Question]]:
    corpus = [
        CorpusDoc(
            str(d["doc_id"]), str(d.get("title") or ""), str(d["text"]), str(d.get("lang") or "")
        )
        for d in _read_jsonl(directory / "corpus.jsonl")
    ]
    questions = [
        Question(
            str(q["qid"]),
            str(q["question"]),
            frozenset(str(p) for p in q["positive_doc_ids"]),  # type: ignore[attr-defined]
            str(q.get("lang") or ""),
        )
        for q in _read_jsonl(directory / "questions.jsonl")
    ]
    return corpus, questions


def take_slice(
    corpus: list[CorpusDoc],
    questions: list[Question],
    max_questions: int | None,
    max_docs: int | None,
    seed: int = 0,
) -> tuple[list[CorpusDoc], list[Question]]:
    """A reproducible sub-set: the first questions spread evenly over the file, every positive
    document of theirs, and other documents (distractors) up to `max_docs`."""
    if max_questions is not None and max_questions < len(questions):
        step = len(questions) / max_questions
        questions = [questions[int(i * step)] for i in range(max_questions)]
    if max_docs is None or max_docs >= len(corpus):
        return corpus, questions
    needed = set().union(*(q.positives for q in questions)) if questions else set()
    keep = [d for d in corpus if d.doc_id in needed]
    others = [d for d in corpus if d.doc_id not in needed]
    random.Random(seed).shuffle(others)
    keep += others[: max(0, max_docs - len(keep))]
    return keep, questions


def file_name(doc_id: str) -> str:
    return _UNSAFE.sub("_", doc_id)[:180] + ".txt"


def _document_text(doc: CorpusDoc) -> str:
    title = doc.title.strip()
    if title and not doc.text.lstrip().startswith(title):
        return f"{title}\n\n{doc.text}"
    return doc.text


@contextmanager
def _work_settings(base: Settings, work_dir: Path | None) -> Iterator[Settings]:
    tmp = None
    if work_dir is None:
        tmp = tempfile.mkdtemp(prefix="zhiku-eval-")
        work_dir = Path(tmp)
    work_dir.mkdir(parents=True, exist_ok=True)
    data = work_dir.resolve()
    settings = base.model_copy(
        update={"data_dir": data, "database_url": f"sqlite:///{data / 'eval.db'}"}
    )
    try:
        yield settings
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def ingest_corpus(settings: Settings, name: str, corpus: Sequence[CorpusDoc], quiet: bool) -> int:
    """The library holding `corpus`, ingested unless a previous run in the same work dir
    already did (same documents, all ready)."""
    db.migrate(settings)
    with db.session_scope(settings) as session:
        lib = libraries.get_by_name(session, name)
        if lib is not None and lib.id is not None:
            counts = documents.counts_by_status(session, lib.id)
            if counts.get(DocStatus.ready, 0) == len(corpus) and sum(counts.values()) == len(
                corpus
            ):
                return lib.id
            raise typer.BadParameter(
                f"the work dir already holds library {name!r} with other documents; "
                "use an empty --work-dir"
            )
    folder = settings.data_dir / "corpus" / name
    folder.mkdir(parents=True, exist_ok=True)
    for doc in corpus:
        (folder / file_name(doc.doc_id)).write_text(_document_text(doc), encoding="utf-8")
    summary = ingest_paths(settings, [folder], name, True, True, quiet, 0)
    if summary.failures:
        first = summary.failures[0]
        raise typer.BadParameter(
            f"{len(summary.failures)} corpus documents failed to ingest, e.g. "
            f"{first['file']}: {first['reason']}"
        )
    return summary.library_id


def _doc_ids_by_document(settings: Settings, library_id: int) -> dict[int, str]:
    with db.session_scope(settings) as session:
        docs, _ = documents.list_for_library(session, library_id, limit=10**9)
        return {d.id: d.filename.removesuffix(".txt") for d in docs if d.id is not None}


def evaluate(
    settings: Settings,
    library_id: int,
    corpus: Sequence[CorpusDoc],
    questions: Sequence[Question],
    modes: Sequence[str],
    top_k: int,
    quiet: bool,
) -> dict[str, object]:
    retriever = Retriever(settings)
    to_doc_id = {file_name(d.doc_id).removesuffix(".txt"): d.doc_id for d in corpus}
    by_document = {
        i: to_doc_id.get(stem, stem)
        for i, stem in _doc_ids_by_document(settings, library_id).items()
    }
    k = max(top_k, max(CUTOFFS))
    results: dict[str, object] = {}
    latencies: dict[str, list[float]] = {}
    with db.session_scope(settings) as session, progress_bar(quiet, transient=True) as progress:
        retriever.search(session, "warm up 预热", [library_id], top_k=1)
        for mode in modes:
            base = "hybrid" if mode == RERANK_MODE else mode
            rows: list[tuple[str, dict[str, float]]] = []
            times: list[float] = []
            task = progress.add_task(mode, total=len(questions))
            for q in questions:
                started = time.perf_counter()
                result = retriever.search(
                    session,
                    q.question,
                    [library_id],
                    top_k=k,
                    mode=base,
                    rerank=mode == RERANK_MODE,
                )
                times.append((time.perf_counter() - started) * 1000)
                ranked = [by_document.get(p.document_id, "") for p in result.passages]
                metrics = {f"recall@{c}": recall_at(ranked, q.positives, c) for c in CUTOFFS}
                metrics["mrr@10"] = mrr_at(ranked, q.positives, 10)
                metrics["ndcg@10"] = ndcg_at(ranked, q.positives, 10)
                rows.append((q.lang, metrics))
                progress.advance(task)
            latencies[mode] = times
            results[mode] = _aggregate(rows, times)
    primary = "hybrid" if "hybrid" in latencies else next(iter(latencies), "")
    times = latencies.get(primary, [])
    return {
        "modes": results,
        "latency_ms": {
            "mode": primary,
            "p50": round(percentile(times, 50), 2),
            "p95": round(percentile(times, 95), 2),
        },
        "questions": len(questions),
        "documents": len(corpus),
        "top_k": k,
        "weights": settings.search_weights,
        "reranker": settings.reranker or None,
    }


def _aggregate(rows: list[tuple[str, dict[str, float]]], times: list[float]) -> dict[str, object]:
    groups: dict[str, list[dict[str, float]]] = {"all": [m for _, m in rows]}
    for lang, m in rows:
        if lang:
            groups.setdefault(lang, []).append(m)
    out: dict[str, object] = {}
    for name, items in groups.items():
        keys = items[0].keys() if items else ()
        summary: dict[str, float] = {
            key: round(sum(m[key] for m in items) / len(items), 4) for key in keys
        }
        summary["questions"] = len(items)
        out[name] = summary
    all_summary = out["all"]
    assert isinstance(all_summary, dict)
    all_summary["p50_ms"] = round(percentile(times, 50), 2)
    all_summary["p95_ms"] = round(percentile(times, 95), 2)
    return out


def _print_table(report: dict[str, object], name: str) -> None:
    table = Table(
        title=f"retrieval on {name}: {report['questions']} questions, "
        f"{report['documents']} documents"
    )
    metric_names = [f"recall@{c}" for c in CUTOFFS] + ["mrr@10", "ndcg@10"]
    for col in ["mode", "lang", *metric_names, "n", "p50 ms", "p95 ms"]:
        table.add_column(col, justify="left" if col in ("mode", "lang") else "right")
    modes = report["modes"]
    assert isinstance(modes, dict)
    for mode, groups in modes.items():
        for lang, m in groups.items():
            table.add_row(
                mode,
                lang,
                *(f"{m[k]:.3f}" for k in metric_names),
                str(m["questions"]),
                f"{m['p50_ms']:.1f}" if "p50_ms" in m else "",
                f"{m['p95_ms']:.1f}" if "p95_ms" in m else "",
            )
    Console().print(table)


def eval_retrieval(
    dataset: Path = typer.Option(
        ..., "--dataset", help="Folder with corpus.jsonl and questions.jsonl"
    ),
    top_k: int = typer.Option(10, "--top-k", help="Passages retrieved per question"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
    modes: str = typer.Option(
        "",
        help="Comma-separated subset of dense,bm25,hybrid,"
        "hybrid+rerank (default: all that are available)",
    ),
    max_questions: int | None = typer.Option(None, help="Evaluate a slice of the questions"),
    max_docs: int | None = typer.Option(
        None, help="Ingest only the slice's positive documents plus distractors up to this many"
    ),
    work_dir: Path | None = typer.Option(
        None, help="Keep the ingested corpus here and reuse it next time (default: a temporary dir)"
    ),
) -> None:
    """Measure retrieval quality on a QA data set through the real ingestion pipeline."""
    base = get_settings()
    chosen = [m.strip() for m in modes.split(",") if m.strip()] or [
        *BASE_MODES,
        *([RERANK_MODE] if base.reranker else []),
    ]
    for m in chosen:
        if m not in (*BASE_MODES, RERANK_MODE):
            raise typer.BadParameter(f"unknown mode {m!r}")
    if RERANK_MODE in chosen and not base.reranker:
        raise typer.BadParameter("hybrid+rerank needs ZHIKU_RERANKER (a local cross-encoder)")
    corpus, questions = take_slice(*load_dataset(dataset), max_questions, max_docs)
    name = "eval-" + _UNSAFE.sub("-", dataset.resolve().name)
    with _work_settings(base, work_dir) as settings:
        started = time.perf_counter()
        library_id = ingest_corpus(settings, name, corpus, as_json)
        ingest_s = time.perf_counter() - started
        report = evaluate(settings, library_id, corpus, questions, chosen, top_k, as_json)
    report["dataset"] = str(dataset)
    report["ingest_seconds"] = round(ingest_s, 1)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print_table(report, dataset.name)
