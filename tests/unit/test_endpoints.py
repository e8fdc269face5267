"""Where the model servers are (settings over servers.json), and how vLLM is started."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.settings import Settings
from serving import model_server
from serving.endpoints import (
    DEFAULT_CONTEXT_WINDOW,
    clear_servers,
    endpoint,
    read_servers,
    servers_path,
    write_servers,
)
from serving.model_server import ServerSpec

RECORDED = {
    "main": {
        "base_urls": ["http://127.0.0.1:8011/v1/"],
        "model": "zhiku-main",
        "context_window": 2048,
        "tokenizer": "/models/smollm2",
    },
    "safety": {"base_urls": ["http://127.0.0.1:8012/v1"], "model": "guard", "api_key": "k"},
}


@pytest.fixture(autouse=True)
def _no_zhiku_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ZHIKU_"):
            monkeypatch.delenv(name)


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, _env_file=None, **kw)  # type: ignore[call-arg]


# --- endpoints -------------------------------------------------------------------------------


def test_nothing_configured(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    for role in ("main", "safety"):
        ep = endpoint(s, role)
        assert ep.role == role
        assert ep.config is None and not ep.configured
        assert ep.context_window == DEFAULT_CONTEXT_WINDOW
        assert ep.tokenizer_dir == ""
    with pytest.raises(ValueError):
        endpoint(s, "embedder")


def test_recorded_servers_are_used(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    path = write_servers(s, RECORDED)
    assert path == servers_path(s) == tmp_path / "models" / "servers.json"
    assert json.loads(path.read_text()) == RECORDED
    assert read_servers(s) == RECORDED

    main = endpoint(s, "main")
    assert main.configured and main.config is not None
    assert main.config.base_urls == ("http://127.0.0.1:8011/v1",)  # trailing slash dropped
    assert main.config.model == "zhiku-main"
    assert main.config.api_key is None
    assert (main.context_window, main.tokenizer_dir) == (2048, "/models/smollm2")

    safety = endpoint(s, "safety")
    assert safety.config is not None
    assert safety.config.model == "guard" and safety.config.api_key == "k"
    assert safety.context_window == DEFAULT_CONTEXT_WINDOW
    assert safety.config.read_timeout == s.safety_read_timeout


def test_environment_settings_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHIKU_MAIN_BASE_URLS", "http://gpu-1:8000/v1/, http://gpu-2:8000/v1")
    monkeypatch.setenv("ZHIKU_MAIN_MODEL", "qwen")
    monkeypatch.setenv("ZHIKU_MAIN_API_KEY", "secret")
    monkeypatch.setenv("ZHIKU_MAIN_CONTEXT_WINDOW", "8192")
    monkeypatch.setenv("ZHIKU_MAIN_TOKENIZER", "/models/qwen")
    monkeypatch.setenv("ZHIKU_MAIN_READ_TIMEOUT", "5")
    s = _settings(tmp_path)
    write_servers(s, RECORDED)

    main = endpoint(s, "main")
    assert main.config is not None
    assert main.config.base_urls == ("http://gpu-1:8000/v1", "http://gpu-2:8000/v1")
    assert main.config.model == "qwen"
    assert main.config.api_key == "secret"
    assert main.config.read_timeout == 5.0
    assert (main.context_window, main.tokenizer_dir) == (8192, "/models/qwen")
    # The other role still comes from the file.
    safety = endpoint(s, "safety")
    assert safety.config is not None and safety.config.model == "guard"


def test_settings_and_file_combine_field_by_field(tmp_path: Path) -> None:
    s = _settings(tmp_path, main_base_urls="http://other:9000/v1")
    write_servers(s, RECORDED)
    main = endpoint(s, "main")
    assert main.config is not None
    assert main.config.base_urls == ("http://other:9000/v1",)
    assert main.config.model == "zhiku-main"  # not set: the recorded one
    assert main.context_window == 2048

    # A URL without any model name is no endpoint.
    alone = endpoint(_settings(tmp_path / "empty", main_base_urls="http://x/v1"), "main")
    assert alone.config is None


def test_clear_servers(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    write_servers(s, RECORDED)
    clear_servers(s, ["main"])
    assert read_servers(s) == {"safety": RECORDED["safety"]}
    assert endpoint(s, "main").config is None
    assert endpoint(s, "safety").config is not None
    clear_servers(s, ["safety", "main"])
    assert not servers_path(s).exists()
    assert read_servers(s) == {}
    clear_servers(s, ["main"])  # nothing to clear: no error


def test_unreadable_servers_file_counts_as_empty(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    servers_path(s).parent.mkdir(parents=True)
    servers_path(s).write_text("{not json")
    assert read_servers(s) == {}
    assert endpoint(s, "main").config is None
    servers_path(s).write_text("[1, 2]")
    assert read_servers(s) == {}


# --- model server ----------------------------------------------------------------------------

SPEC = ServerSpec(Path("/models/smollm2"), "zhiku-main", 8011, max_model_len=2048)


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_command() -> None:
    cmd = model_server.command(SPEC, Path("/venv/bin/python"))
    assert cmd[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(cmd, "--model") == "/models/smollm2"
    assert _flag(cmd, "--served-model-name") == "zhiku-main"
    assert _flag(cmd, "--port") == "8011"
    assert _flag(cmd, "--host") == "127.0.0.1"
    assert _flag(cmd, "--max-model-len") == "2048"
    assert "--api-key" not in cmd
    assert SPEC.base_url == "http://127.0.0.1:8011/v1"

    keyed = ServerSpec(Path("/m"), "n", 1, api_key="k", extra_args=("--dtype", "bfloat16"))
    cmd = model_server.command(keyed, Path("python"))
    assert _flag(cmd, "--api-key") == "k"
    assert cmd[-2:] == ["--dtype", "bfloat16"]


def test_environment_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_server, "has_gpu", lambda: False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")  # what `import ingest.offline` sets
    env = model_server.environment(SPEC)
    assert "OMP_THREAD_LIMIT" not in env  # with it, a 2-core CPU server hung on its 1st answer
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DO_NOT_TRACK", "VLLM_NO_USAGE_STATS"):
        assert env[name] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == f"0-{(os.cpu_count() or 1) - 1}"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(SPEC.kv_cache_gb)
    assert "HF_HUB_OFFLINE" not in os.environ  # the server's environment is a copy

    bound = ServerSpec(Path("/m"), "n", 1, cpu_threads="1")
    assert model_server.environment(bound)["VLLM_CPU_OMP_THREADS_BIND"] == "1"

    monkeypatch.setattr(model_server, "has_gpu", lambda: True)
    gpu = model_server.environment(SPEC)
    assert gpu["HF_HUB_OFFLINE"] == "1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in gpu


def test_prepare_command_needs_the_quantization_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-venv" / "bin" / "python"
    monkeypatch.setenv("ZHIKU_QUANT_PYTHON", str(missing))
    with pytest.raises(FileNotFoundError) as err:
        model_server.prepare_command(tmp_path / "out")
    assert str(missing) in str(err.value)
    assert "make models-env" in str(err.value)


def test_prepare_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "python"
    python.touch()
    monkeypatch.setenv("ZHIKU_QUANT_PYTHON", str(python))
    out = tmp_path / "out"
    cmd = model_server.prepare_command(out)
    assert cmd == [str(python), "-m", "serving.model_prep", "--out", str(out), "--scheme", "w4a16"]

    gguf = tmp_path / "model.gguf"
    gguf.touch()
    assert model_server.prepare_command(out, source=gguf, force=True)[-3:] == [
        "--gguf",
        str(gguf),
        "--force",
    ]
    assert model_server.prepare_command(out, source=tmp_path)[-2:] == ["--from", str(tmp_path)]


def test_launch_refuses_a_missing_environment(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make models-env"):
        model_server.launch(SPEC, tmp_path, python=tmp_path / "missing-python")
    assert not (tmp_path / f"vllm-{SPEC.served_name}-{SPEC.port}.log").exists()


def test_command_passes_an_absolute_model_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server runs in its log directory: a relative data dir ("./data") must not break it.
    monkeypatch.chdir(tmp_path)
    cmd = model_server.command(ServerSpec(Path("data/models/m"), "n", 1), Path("python"))
    assert _flag(cmd, "--model") == str(tmp_path / "data" / "models" / "m")
