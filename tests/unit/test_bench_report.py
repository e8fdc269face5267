"""The benchmark report: one Markdown table of every bench result, with ratios."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli import bench_report
from cli.bench_report import load_results, render, rows, write_result, write_summary

INGEST = {
    "documents": 60,
    "failed": 2,
    "chunks": 400,
    "seconds": 20.0,
    "docs_per_s": 3.0,
    "pipeline_chunks_per_s": 20.0,
    "embedder_chunks_per_s": 50.0,
    "ratio": 0.4,
}
SEARCH = {
    "sizes": {
        "100000": {
            "p50_ms": 9.0,
            "p95_ms": 30.0,
            "dense_p95_ms": 1.0,
            "bm25_p95_ms": 2.0,
            "vector_index": "ivf",
            "recall@10_vs_exact": 0.95,
        },
        "10000": {
            "p50_ms": 5.0,
            "p95_ms": 8.0,
            "dense_p95_ms": 0.5,
            "bm25_p95_ms": 0.5,
            "vector_index": "flat",
            "recall@10_vs_exact": 1.0,
        },
    }
}
CHAT = {
    "1": {
        "ttft_ms_platform": 600.0,
        "ttft_ms_direct": 500.0,
        "p95": {"ttft_ms_platform": 900.0, "ttft_ms_direct": 600.0},
        "n": {"platform": 8, "direct": 8},
        "errors": 0,
    },
    "16": {
        "ttft_ms_platform": 3000.0,
        "ttft_ms_direct": 2000.0,
        "p95": {"ttft_ms_platform": None, "ttft_ms_direct": 2500.0},
        "n": {"platform": 30, "direct": 32},
        "errors": 2,
    },
}
LOAD_CHAT = {
    "streams": 50,
    "requests": 50,
    "errors": 3,
    "errors_by_kind": {"http_429": 1, "stream_model_unavailable": 2},
    "excluded": 1,
    "ttft_ms_p50": 4000.0,
    "ttft_ms_p95": 9000.0,
    "total_ms_p50": 8000.0,
    "total_ms_p95": 15000.0,
    "tokens_per_s": 150.5,
    "requests_per_s": 2.5,
}
LOAD_INGEST = {
    "documents": 100,
    "chunks": 180,
    "workers": 1,
    "upload_errors": 0,
    "rejected": 1,
    "failed_documents": 2,
    "not_ready": 0,
    "chunks_per_s": 10.0,
    "docs_per_s": 5.5,
    "upload_ms_p50": 800.0,
    "upload_ms_p95": 1200.0,
    "ready_s_p50": 30.0,
    "ready_s_p95": 55.0,
    "search_ms_p50": 40.0,
    "search_ms_p95": 90.0,
}


def doc(bench: str, result: Any, at: str = "2026-11-21T10:00:00+00:00", **params: Any) -> Any:
    return {"bench": bench, "at": at, "host": {"cpus": 2}, "params": params, "result": result}


def all_results() -> list[dict[str, Any]]:
    return [
        doc("load-ingest", LOAD_INGEST, at="2026-11-21T12:00:00+00:00"),
        doc("chat", CHAT),
        doc("ingest", INGEST, label="eval docs"),
        doc("search", SEARCH),
        doc("load-chat", LOAD_CHAT),
    ]


def find(table: list[dict[str, str]], bench: str, case: str, measure: str) -> dict[str, str]:
    hits = [
        r
        for r in table
        if r["Benchmark"].startswith(bench) and case in r["Case"] and r["Measure"] == measure
    ]
    assert len(hits) == 1, (bench, case, measure, table)
    return hits[0]


def test_ratios_are_platform_over_baseline() -> None:
    table = rows(all_results())
    ing = find(table, "Ingest", "eval docs", "chunks/s")
    assert (ing["Zhiku"], ing["Ratio"]) == ("20.0", "0.40×")
    assert "50.0" in ing["Baseline"] and "2 failed" in ing["Case"]
    small = find(table, "Hybrid search", "10,000 chunks", "p50 / p95 ms")
    assert small["Zhiku"] == "5.0 / 8.0"
    assert small["Ratio"] == "8.0×"  # p95 8 ms over FAISS 0.5 + BM25 0.5
    assert find(table, "Hybrid search", "100,000 chunks", "p50 / p95 ms")["Ratio"] == "10.0×"
    c1 = find(table, "Chat TTFT", "c=1,", "p50 / p95 ms")
    assert (c1["Zhiku"], c1["Baseline"], c1["Ratio"]) == ("600 / 900", "500 / 600", "1.20× / 1.50×")
    c16 = find(table, "Chat TTFT", "c=16,", "p50 / p95 ms")
    assert c16["Ratio"] == "1.50× / –" and "2 errors" in c16["Case"]  # a missing p95: no ratio


def test_load_rows_show_errors_by_kind_latency_and_throughput() -> None:
    table = rows(all_results())
    errors = find(table, "Load: chat", "50 concurrent streams", "errors")["Zhiku"]
    assert errors == "3 (http_429 1, stream_model_unavailable 2)"
    assert find(table, "Load: chat", "50", "TTFT p50 / p95 ms")["Zhiku"] == "4,000 / 9,000"
    assert find(table, "Load: chat", "50", "tokens/s; requests/s")["Zhiku"] == "150.5; 2.50"
    assert find(table, "Load: chat", "50", "answered without the model")["Zhiku"] == "1"
    errs = find(
        table, "Load: library", "100 docs", "errors (upload / rejected / failed / not ready)"
    )
    assert errs["Zhiku"] == "0 / 1 / 2 / 0"
    # The load ingest's chunks/s is compared with the raw embedder of the ingest benchmark.
    cps = find(table, "Load: library", "100 docs", "chunks/s (upload → all ready)")
    assert (cps["Zhiku"], cps["Ratio"]) == ("10.0", "0.20×")
    assert (
        find(table, "Load: library", "100", "upload → ready p50 / p95 s")["Zhiku"] == "30.0 / 55.0"
    )
    assert (
        find(table, "Load: library", "100", "search on it p50 / p95 ms")["Zhiku"] == "40.0 / 90.0"
    )


def test_render_is_one_markdown_table_in_benchmark_order(tmp_path: Path) -> None:
    for i, d in enumerate(all_results()):
        write_result(tmp_path / f"{i}-{d['bench']}.json", d["bench"], d["params"], d["result"])
    results = load_results(tmp_path)
    assert [d["bench"] for d in results] == ["ingest", "search", "chat", "load-chat", "load-ingest"]
    text = render(results)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| Benchmark | Case | Measure | Zhiku | Baseline | Ratio |"
    assert len(table) == 2 + len(rows(results))
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 7 for line in table)  # 6 cells each
    assert text.index("Ingest") < text.index("Hybrid") < text.index("Chat TTFT")
    assert text.index("Chat TTFT") < text.index("Load: chat") < text.index("Load: library")
    assert "CPU(s)" in text
    md, js = write_summary(tmp_path)
    assert md.read_text(encoding="utf-8") == text
    summary = json.loads(js.read_text(encoding="utf-8"))
    assert summary["rows"] == rows(results)
    assert load_results(tmp_path) == results  # the summary itself is not read back as a result


def test_missing_values_render_as_dashes_and_pipes_are_escaped() -> None:
    sparse = doc("ingest", {"documents": 0, "chunks": 0}, label="a|b")
    text = render([sparse])
    row = next(
        line for line in text.splitlines() if line.startswith("| Ingest") and "chunks/s" in line
    )
    assert "a\\|b" in row and "| – |" in row


def test_unknown_or_broken_results_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        rows([doc("nonsense", {})])
    (tmp_path / "x.json").write_text('{"not": "a result"}')
    with pytest.raises(ValueError, match="not a bench result"):
        load_results(tmp_path)
    with pytest.raises(ValueError, match="no bench results"):
        write_summary(tmp_path / "empty")


def test_number_formatting() -> None:
    assert bench_report.num(12345) == "12,345"
    assert bench_report.num(1234.567, 2) == "1,234.57"
    assert bench_report.num(None) == bench_report.num(True) == bench_report.num("x") == "–"
    assert bench_report.ratio(3.0, 0) == "–"
