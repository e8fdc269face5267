"""`zhiku bench report`: one table of every benchmark's results, with ratios.

Each bench command writes its result with `--out FILE` as `{"bench": name, "at": time,
"params": {...}, "result": {...}}` (`write_result`). `render` turns a list of those into one
Markdown table; `rows` is the same table as data (written as JSON next to the Markdown). Both
are plain functions of the results, so they are tested without running a benchmark.

Ratios: ingestion is the pipeline's chunks/s over the bare embedder's on the same chunks (1.0
would mean parsing, chunking, storing and indexing cost nothing); search is the hybrid query's
p95 over the p95 of the raw FAISS search plus the raw BM25 search it contains (the rest is
query embedding, fusion and reading the passages); chat is the platform's time to first token
over the bare vLLM server's at the same concurrency (p50 and p95). The load tests have no
baseline: their rows give errors, latencies and throughput.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
COLUMNS = ("Benchmark", "Case", "Measure", "Zhiku", "Baseline", "Ratio")
#: The order of the benchmarks in the table.
ORDER = ("ingest", "search", "chat", "load-chat", "load-ingest")

Row = dict[str, str]


def write_result(path: Path, bench: str, params: Mapping[str, Any], result: Any) -> None:
    """Write one bench command's result for `zhiku bench report`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "bench": bench,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine()},
        "params": dict(params),
        "result": result,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every bench result in `folder` (files written by `write_result`), oldest first."""
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.name == SUMMARY_JSON:
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a bench result ({exc})") from None
        if not isinstance(doc, dict) or "bench" not in doc or "result" not in doc:
            raise ValueError(f"{path}: not a bench result (no 'bench' and 'result')")
        doc["file"] = path.name
        found.append(doc)
    return sorted(found, key=lambda d: (_rank(str(d["bench"])), str(d.get("at", ""))))


def _rank(bench: str) -> int:
    return ORDER.index(bench) if bench in ORDER else len(ORDER)


# --- formatting ---------------------------------------------------------------------------------


def num(v: Any, digits: int = 1) -> str:
    """A number for the table: thousands separated, '–' when missing."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return "–"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def ratio(a: Any, b: Any, digits: int = 2) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return "–"
    return f"{a / b:.{digits}f}×"


def pair(a: Any, b: Any, digits: int = 0) -> str:
    return f"{num(a, digits)} / {num(b, digits)}"


def _row(bench: str, case: str, measure: str, value: str, base: str = "–", r: str = "–") -> Row:
    return dict(zip(COLUMNS, (bench, case, measure, value, base, r), strict=True))


# --- rows per benchmark ---------------------------------------------------------------------------


def ingest_rows(doc: Mapping[str, Any]) -> list[Row]:
    r = doc["result"]
    label = str(doc.get("params", {}).get("label") or "documents")
    case = f"{label}: {num(r.get('documents'))} docs, {num(r.get('chunks'))} chunks"
    if r.get("failed"):
        case += f", {num(r['failed'])} failed"
    return [
        _row(
            "Ingest (pipeline vs raw embedder)",
            case,
            "chunks/s",
            num(r.get("pipeline_chunks_per_s")),
            f"{num(r.get('embedder_chunks_per_s'))} (raw embedder)",
            ratio(r.get("pipeline_chunks_per_s"), r.get("embedder_chunks_per_s")),
        ),
        _row("Ingest (pipeline vs raw embedder)", case, "docs/s", num(r.get("docs_per_s"), 2)),
    ]


def search_rows(doc: Mapping[str, Any]) -> list[Row]:
    out = []
    sizes: Mapping[str, Mapping[str, Any]] = doc["result"].get("sizes", {})
    for n in sorted(sizes, key=int):
        s = sizes[n]
        raw = (
            s["dense_p95_ms"] + s["bm25_p95_ms"]
            if isinstance(s.get("dense_p95_ms"), int | float)
            and isinstance(s.get("bm25_p95_ms"), int | float)
            else None
        )
        out.append(
            _row(
                "Hybrid search latency",
                f"{int(n):,} chunks ({s.get('vector_index', '?')}, recall@10 "
                f"{num(s.get('recall@10_vs_exact'), 3)})",
                "p50 / p95 ms",
                pair(s.get("p50_ms"), s.get("p95_ms"), 1),
                f"p95 FAISS {num(s.get('dense_p95_ms'), 2)} + BM25 {num(s.get('bm25_p95_ms'), 2)}",
                ratio(s.get("p95_ms"), raw, 1),
            )
        )
    return out


def chat_rows(doc: Mapping[str, Any]) -> list[Row]:
    out = []
    levels: Mapping[str, Mapping[str, Any]] = doc["result"]
    for c in sorted(levels, key=int):
        r = levels[c]
        p95 = r.get("p95", {})
        errors = r.get("errors", 0)
        case = f"c={c}, {num(r.get('n', {}).get('platform'))} requests per path"
        if errors:
            case += f", {num(errors)} errors"
        out.append(
            _row(
                "Chat TTFT (platform vs raw vLLM)",
                case,
                "p50 / p95 ms",
                pair(r.get("ttft_ms_platform"), p95.get("ttft_ms_platform")),
                pair(r.get("ttft_ms_direct"), p95.get("ttft_ms_direct")),
                f"{ratio(r.get('ttft_ms_platform'), r.get('ttft_ms_direct'))} / "
                f"{ratio(p95.get('ttft_ms_platform'), p95.get('ttft_ms_direct'))}",
            )
        )
    return out


def errors_text(count: Any, by_kind: Mapping[str, int] | None) -> str:
    parts = [f"{k} {v}" for k, v in sorted((by_kind or {}).items()) if v]
    return num(count) + (f" ({', '.join(parts)})" if parts else "")


def load_chat_rows(doc: Mapping[str, Any]) -> list[Row]:
    r = doc["result"]
    case = f"{num(r.get('streams'))} concurrent streams, {num(r.get('requests'))} questions"
    name = "Load: chat streams"
    rows = [
        _row(name, case, "errors", errors_text(r.get("errors"), r.get("errors_by_kind"))),
        _row(name, case, "TTFT p50 / p95 ms", pair(r.get("ttft_ms_p50"), r.get("ttft_ms_p95"))),
        _row(name, case, "total p50 / p95 ms", pair(r.get("total_ms_p50"), r.get("total_ms_p95"))),
        _row(
            name,
            case,
            "tokens/s; requests/s",
            f"{num(r.get('tokens_per_s'))}; {num(r.get('requests_per_s'), 2)}",
        ),
    ]
    if r.get("excluded"):
        rows.append(_row(name, case, "answered without the model", num(r["excluded"])))
    return rows


def load_ingest_rows(doc: Mapping[str, Any], embedder_cps: float | None) -> list[Row]:
    r = doc["result"]
    case = (
        f"{num(r.get('documents'))} docs, {num(r.get('chunks'))} chunks, "
        f"{num(r.get('workers'))} worker process(es)"
    )
    name = "Load: library ingest via api"
    failed = r.get("failed_documents") or 0
    rejected = r.get("rejected") or 0
    upload_errors = r.get("upload_errors") or 0
    return [
        _row(
            name,
            case,
            "errors (upload / rejected / failed / not ready)",
            f"{num(upload_errors)} / {num(rejected)} / {num(failed)} / {num(r.get('not_ready'))}",
        ),
        _row(
            name,
            case,
            "chunks/s (upload → all ready)",
            num(r.get("chunks_per_s")),
            f"{num(embedder_cps)} (raw embedder, ingest bench)" if embedder_cps else "–",
            ratio(r.get("chunks_per_s"), embedder_cps),
        ),
        _row(name, case, "docs/s", num(r.get("docs_per_s"), 2)),
        _row(
            name,
            case,
            "upload request p50 / p95 ms",
            pair(r.get("upload_ms_p50"), r.get("upload_ms_p95")),
        ),
        _row(
            name,
            case,
            "upload → ready p50 / p95 s",
            pair(r.get("ready_s_p50"), r.get("ready_s_p95"), 1),
        ),
        _row(
            name,
            case,
            "search on it p50 / p95 ms",
            pair(r.get("search_ms_p50"), r.get("search_ms_p95"), 1),
        ),
    ]


def rows(results: Iterable[Mapping[str, Any]]) -> list[Row]:
    results = list(results)
    embedder_cps = next(
        (
            float(d["result"]["embedder_chunks_per_s"])
            for d in results
            if d["bench"] == "ingest" and d["result"].get("embedder_chunks_per_s")
        ),
        None,
    )
    out: list[Row] = []
    for doc in results:
        bench = doc["bench"]
        if bench == "ingest":
            out += ingest_rows(doc)
        elif bench == "search":
            out += search_rows(doc)
        elif bench == "chat":
            out += chat_rows(doc)
        elif bench == "load-chat":
            out += load_chat_rows(doc)
        elif bench == "load-ingest":
            out += load_ingest_rows(doc, embedder_cps)
        else:
            raise ValueError(f"unknown benchmark {bench!r} in {doc.get('file', 'a result')}")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: Iterable[Mapping[str, Any]]) -> str:
    """The Markdown table of every result, with the run's dates and machine."""
    results = list(results)
    table = rows(results)
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---", "---", "---", "---:", "---:", "---:"]) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in table]
    dates = sorted(str(d.get("at", "")) for d in results if d.get("at"))
    cpus = {d.get("host", {}).get("cpus") for d in results} - {None}
    head = "# Zhiku benchmarks\n\n"
    if dates:
        head += f"Measured {dates[0]} – {dates[-1]}"
        head += f" on {', '.join(str(c) for c in sorted(cpus))} CPU(s).\n\n" if cpus else ".\n\n"
    return head + "\n".join(lines) + "\n"


def write_summary(folder: Path) -> tuple[Path, Path]:
    results = load_results(folder)
    if not results:
        raise ValueError(f"no bench results in {folder}")
    md, js = folder / SUMMARY_MD, folder / SUMMARY_JSON
    md.write_text(render(results), encoding="utf-8")
    js.write_text(
        json.dumps({"rows": rows(results), "results": results}, ensure_ascii=False, indent=1),
        encoding="utf-8",
    )
    return md, js


def bench_report(
    folder: Path = typer.Argument(Path("bench-results"), help="Folder of --out results"),
) -> None:
    """Collect the results the bench commands wrote with --out into one table:
    FOLDER/summary.md (Markdown) and FOLDER/summary.json."""
    try:
        md, js = write_summary(folder)
    except ValueError as exc:
        typer.echo(f"bench report: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(md.read_text(encoding="utf-8"))
    typer.echo(f"written: {md} and {js}", err=True)
