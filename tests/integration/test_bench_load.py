"""The load benchmarks at a small scale, end to end, so they cannot rot: `zhiku bench
load-ingest` (the api, a private Redis, a real Celery worker process) and `zhiku bench
load-chat` (the api, the real retriever, the session's vLLM server), then `zhiku bench report`
over what they wrote. The ingest run starts first and works in the background while the chat
run goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, TEST_MODEL, VllmServers

pytestmark = [pytest.mark.integration]

DOCS = 12


def zhiku(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli.main", *args]


def bench_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["ZHIKU_DATA_DIR"] = str(tmp / "unused-data")  # the benchmarks make their own
    env.pop("ZHIKU_DATABASE_URL", None)
    return env


class Run:
    def __init__(self, proc: subprocess.Popen[str], out: Path) -> None:
        self.proc, self.out = proc, out

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
            pytest.fail(f"timed out:\n{stderr[-4000:]}")
        assert self.proc.returncode == 0, stderr[-4000:]
        printed = json.loads(stdout.strip().splitlines()[-1])
        written = json.loads(self.out.read_text(encoding="utf-8"))
        assert written["result"] == printed  # --out holds what --json printed
        self.stderr = stderr
        return dict(written)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


@pytest.fixture(scope="module")
def ingest_run(results_dir: Path) -> Iterator[Run]:
    out = results_dir / "load-ingest.json"
    args = ["bench", "load-ingest", "--docs", str(DOCS), "--batch", "5", "--queries", "4"]
    proc = subprocess.Popen(
        zhiku(*args, "--json", "--out", str(out)),
        cwd=REPO,
        env=bench_env(results_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = Run(proc, out)
    yield run
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.mark.vllm
def test_load_chat_streams_answer_without_errors(
    ingest_run: Run, vllm: VllmServers, results_dir: Path
) -> None:
    env = bench_env(results_dir)
    env.update(
        ZHIKU_MAIN_BASE_URLS=vllm.wait("main"),
        ZHIKU_MAIN_MODEL="zhiku-main",
        ZHIKU_MAIN_TOKENIZER=str(TEST_MODEL),
        ZHIKU_MAIN_READ_TIMEOUT="120",
    )
    out = results_dir / "load-chat.json"
    args = ["bench", "load-chat", "--streams", "4", "--turns", "2", "--max-tokens", "16"]
    proc = subprocess.Popen(
        zhiku(*args, "--json", "--out", str(out)),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = Run(proc, out)
    doc = run.result(timeout=600)
    r = doc["result"]
    assert doc["bench"] == "load-chat" and doc["params"]["streams"] == 4
    assert r["errors"] == 0, r["error_examples"]
    assert r["errors_by_kind"] == {}
    assert (r["streams"], r["requests"], r["not_asked"]) == (4, 8, 0)
    assert r["completed"] == 8 and r["answered"] + r["excluded"] == 8
    assert r["answered"] >= 6, r  # the questions are about the library: the model answers
    assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p95"] <= r["total_ms_p95"], r
    assert r["tokens_per_s"] > 0 and r["requests_per_s"] > 0
    assert "8/8 answered" in run.stderr  # progress is shown


def test_load_ingest_makes_every_document_ready(ingest_run: Run) -> None:
    doc = ingest_run.result(timeout=600)
    r = doc["result"]
    assert doc["bench"] == "load-ingest" and doc["params"]["docs"] == DOCS
    assert r["errors"] == 0, (r["failures"], r["error_examples"])
    assert (r["documents"], r["queued"], r["ready"]) == (DOCS, DOCS, DOCS)
    assert (r["failed_documents"], r["not_ready"], r["rejected"], r["duplicates"]) == (0, 0, 0, 0)
    assert r["upload_requests"] == 3 and r["upload_errors"] == 0
    assert r["chunks"] >= DOCS and r["chunks_per_s"] > 0 and r["docs_per_s"] > 0
    assert len(r["formats"]) >= 3  # mixed formats even in a small run
    assert 0 < r["upload_ms_p50"] <= r["upload_ms_p95"]
    assert 0 < r["ready_s_p50"] <= r["ready_s_p95"] <= r["ready_s_max"] <= r["seconds"]
    assert 0 < r["first_ready_s"] <= r["ready_s_max"]
    assert 0 < r["search_ms_p50"] <= r["search_ms_p95"] and r["search_errors"] == 0
    assert "ready 12" in ingest_run.stderr  # progress is shown


def test_report_renders_one_table_of_both(results_dir: Path) -> None:
    if not (results_dir / "load-chat.json").is_file():
        pytest.skip("load-chat did not run")
    if not (results_dir / "load-ingest.json").is_file():
        pytest.skip("load-ingest did not run")
    run = subprocess.run(
        zhiku("bench", "report", str(results_dir)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    summary = (results_dir / "summary.md").read_text(encoding="utf-8")
    assert summary in run.stdout
    assert "| Load: chat streams | 4 concurrent streams, 8 questions | errors | 0 |" in summary
    assert f"| Load: library ingest via api | {DOCS} docs," in summary
    rows = json.loads((results_dir / "summary.json").read_text(encoding="utf-8"))["rows"]
    assert {r["Benchmark"] for r in rows} == {"Load: chat streams", "Load: library ingest via api"}
