"""`zhiku bench chat` end to end against the session's vLLM server: a scratch library, the api
in a subprocess, both paths measured at two concurrency levels, JSON out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_MODEL, VllmServers

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

KEYS = {"ttft_ms_platform", "ttft_ms_direct", "tpot_ms_platform", "tpot_ms_direct", "errors"}


def test_bench_chat_measures_both_paths_without_errors(vllm: VllmServers, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        ZHIKU_DATA_DIR=str(tmp_path / "data"),  # nothing here: the bench makes its own
        ZHIKU_MAIN_BASE_URLS=vllm.wait("main"),
        ZHIKU_MAIN_MODEL="zhiku-main",
        ZHIKU_MAIN_TOKENIZER=str(TEST_MODEL),
        ZHIKU_MAIN_READ_TIMEOUT="120",
    )
    env.pop("ZHIKU_DATABASE_URL", None)
    args = ["bench", "chat", "--concurrency", "1,2", "--requests", "2", "--json"]
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(out) == {"1", "2"}
    for level in out.values():
        assert set(level) >= KEYS, level
        assert level["errors"] == 0, level
        for path in ("platform", "direct"):  # every request measured or counted as excluded
            assert level["n"][path] + sum(level["excluded"][path].values()) == 2, level
        for key in ("ttft_ms_platform", "ttft_ms_direct"):
            assert isinstance(level[key], float) and level[key] > 0, (key, level)
    for key in ("tpot_ms_platform", "tpot_ms_direct"):  # a very short answer has no TPOT
        assert any(isinstance(v[key], float) and v[key] > 0 for v in out.values()), (key, out)
    assert "target" in run.stderr  # the verdict is printed beside the JSON
