"""`zhiku eval retrieval` on slices of the development sets in ../shared/eval, through the real
pipeline, embedder, indexes and reranker. The floors sit well below what the code reaches on
these slices (see the ADR on fusion), so a failure means retrieval got worse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
EVAL = REPO.parent / "shared" / "eval"
METRICS = {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}


def _run(dataset: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    assert (EVAL / dataset / "corpus.jsonl").is_file(), f"missing {EVAL / dataset}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "eval",
            "retrieval",
            "--dataset",
            str(EVAL / dataset),
            "--json",
            "--work-dir",
            str(tmp_path / dataset),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def test_english_slice(tmp_path: Path) -> None:
    report = _run("rgb_en", tmp_path, "--max-questions", "40", "--max-docs", "300")
    modes = report["modes"]
    assert set(modes) == {"dense", "bm25", "hybrid", "hybrid+rerank"}
    for groups in modes.values():
        assert set(groups) == {"all", "en"}
        assert set(groups["all"]) >= METRICS
        assert groups["all"]["questions"] == 40
        assert 0 < groups["all"]["p50_ms"] <= groups["all"]["p95_ms"]
    assert report["latency_ms"]["p95"] > 0
    r5 = {m: g["all"]["recall@5"] for m, g in modes.items()}
    assert r5["hybrid"] >= 0.8
    assert r5["hybrid+rerank"] >= 0.85
    assert r5["hybrid+rerank"] >= max(r5["dense"], r5["bm25"])

    # A second run on the same work dir reuses the ingested corpus and gives the same numbers.
    again = _run(
        "rgb_en", tmp_path, "--max-questions", "40", "--max-docs", "300", "--modes", "bm25"
    )
    assert again["modes"]["bm25"]["all"]["recall@5"] == r5["bm25"]
    assert again["ingest_seconds"] < report["ingest_seconds"]


def test_chinese_slice(tmp_path: Path) -> None:
    report = _run(
        "rgb_zh",
        tmp_path,
        "--max-questions",
        "40",
        "--max-docs",
        "800",
        "--modes",
        "dense,bm25,hybrid",
    )
    modes = report["modes"]
    assert set(modes["hybrid"]) == {"all", "zh"}
    assert modes["hybrid"]["all"]["recall@5"] >= 0.85
    assert modes["hybrid"]["zh"]["mrr@10"] >= modes["dense"]["zh"]["mrr@10"]
