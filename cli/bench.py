from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import typer

from cli import bench_chat, bench_ingest_load, bench_load, bench_report
from cli.bench_report import write_result
from cli.ingest_cmd import ingest_paths
from core import db
from core.repo import chunks as chunk_repo
from core.settings import Settings, get_settings
from ingest.parse import parse_document
from retrieval.analyzer import analyze, text_language
from workers.embedding import ingestion_embedder, ingestion_embedder_en

app = typer.Typer(no_args_is_help=True)


@app.command("ingest")
def bench_ingest(
    docs: Path = typer.Option(..., "--docs", help="Folder of documents to ingest"),
    as_json: bool = typer.Option(False, "--json"),
    out: Path | None = typer.Option(None, "--out", help="Also write the result here (JSON)"),
    label: str = typer.Option("", "--label", help="Name of the document set in the report"),
) -> None:
    """Pipeline throughput against the raw embedder on the same chunks, in one run.

    Ingests DIR inline into a scratch data dir (SQLite), then embeds the resulting chunk texts
    again with the bare embedder.
    """
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=f"sqlite:///{tmp}/bench.db",
            embedder=base.embedder,
            embedder_en=base.embedder_en,
            embed_batch_size=base.embed_batch_size,
            embed_threads=base.embed_threads,
            chunk_max_tokens=base.chunk_max_tokens,
            chunk_overlap_tokens=base.chunk_overlap_tokens,
        )
        db.migrate(settings)
        # One-time process start-up stays outside the timed part, for the pipeline (parser
        # libraries, spaCy, jieba) as for the raw embedder (weights), as in a running worker.
        embedder = ingestion_embedder(settings)
        embedder.embed(["warm up 预热"])
        embedder_en = ingestion_embedder_en(settings)
        if embedder_en is not None:
            embedder_en.embed(["warm up"])
        parse_document(b"Warm-up title\n\nA warm-up paragraph that has a verb in it.", "warm.txt")
        analyze("预热 warm-up")
        started = time.perf_counter()
        summary = ingest_paths(settings, [docs], "bench", True, True, as_json, 0)
        if not as_json:
            typer.echo("embedding the same chunks with the bare embedder …", err=True)
        pipeline_s = time.perf_counter() - started
        with db.session_scope(settings) as session:
            texts = [
                c.text
                for d in _ready_docs(settings, summary.library_id)
                for c in chunk_repo.for_document(session, d)
            ]
        # The raw baseline does what the pipeline's embedding step does: every chunk through
        # the main embedder, the English ones through the English embedder too.
        english = [t for t in texts if text_language(t) == "en"]
        started = time.perf_counter()
        embedder.embed(texts, batch_size=settings.embed_batch_size)
        if embedder_en is not None and english:
            embedder_en.embed(english, batch_size=settings.embed_batch_size)
        embed_s = time.perf_counter() - started
        db.dispose_engines()
    n_docs = summary.ready
    n_chunks = len(texts)
    pipeline_cps = n_chunks / pipeline_s if pipeline_s else 0.0
    embed_cps = n_chunks / embed_s if embed_s else 0.0
    result = {
        "documents": n_docs,
        "failed": len(summary.failures),
        "chunks": n_chunks,
        "seconds": round(pipeline_s, 3),
        "docs_per_s": round(n_docs / pipeline_s, 3) if pipeline_s else 0.0,
        "pipeline_chunks_per_s": round(pipeline_cps, 2),
        "embedder_chunks_per_s": round(embed_cps, 2),
        "ratio": round(pipeline_cps / embed_cps, 3) if embed_cps else 0.0,
        "embedder": embedder.name,
        "embedder_en": embedder_en.name if embedder_en is not None else None,
        "english_chunks": len(english),
        "cpus": os.cpu_count(),
    }
    if out is not None:
        write_result(out, "ingest", {"docs": str(docs), "label": label or docs.name}, result)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>24}: {value}")


def _ready_docs(settings: Settings, library_id: int) -> list[int]:
    from core.models import DocStatus
    from core.repo import documents

    with db.session_scope(settings) as session:
        rows, _ = documents.list_for_library(
            session, library_id, status=DocStatus.ready, limit=1_000_000
        )
    return [d.id for d in rows if d.id is not None]


DEFAULT_SIZES = (10_000, 100_000, 1_000_000)


@app.command("search")
def bench_search(
    chunks: list[int] = typer.Option(
        list(DEFAULT_SIZES), "--chunks", help="Library size (repeatable)"
    ),
    queries: int = typer.Option(200, help="Timed queries per size"),
    as_json: bool = typer.Option(False, "--json"),
    out: Path | None = typer.Option(None, "--out", help="Also write the result here (JSON)"),
) -> None:
    """Hybrid query latency (p50/p95) on one synthetic library per size, FAISS recall@10
    against exact search, and index bytes per chunk."""
    from retrieval.embedders import load_embedder
    from retrieval.search_bench import bench_size
    from retrieval.vector_index import set_search_threads

    settings = get_settings()
    set_search_threads(settings.search_threads)
    embedder = load_embedder(settings.embedder, threads=1)
    sizes: dict[str, dict[str, float | int | str]] = {}
    for n in chunks:
        if n < 1:
            raise typer.BadParameter("--chunks must be positive")
        result = bench_size(
            n,
            embedder,
            exact_max=settings.exact_index_max,
            queries=queries,
            progress=lambda msg: typer.echo(msg, err=True),
        )
        sizes[str(n)] = result.as_json()
        if not as_json:
            r = sizes[str(n)]
            typer.echo(
                f"{n:>9,} chunks  p50 {r['p50_ms']:>7} ms  p95 {r['p95_ms']:>7} ms  "
                f"recall@10 vs exact {r['recall@10_vs_exact']}  "
                f"{r['bytes_per_chunk']} B/chunk  ({r['vector_index']}, built in "
                f"{r['build_s']} s)"
            )
    found = {"sizes": sizes, "embedder": embedder.name, "cpus": os.cpu_count()}
    if out is not None:
        write_result(out, "search", {"chunks": chunks, "queries": queries}, found)
    if as_json:
        typer.echo(json.dumps(found))


app.command("chat")(bench_chat.bench_chat)
app.command("load-chat")(bench_load.load_chat)
app.command("load-ingest")(bench_ingest_load.load_ingest)
app.command("report")(bench_report.bench_report)
