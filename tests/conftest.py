"""Shared fixtures: settings on a scratch data dir, SQLite and PostgreSQL databases, Redis,
a real Celery worker process, an API client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
EVAL_DOCS = SHARED / "eval" / "docs"
PG_ADMIN_URL = os.environ.get(
    "ZHIKU_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEST_REDIS_URL = os.environ.get("ZHIKU_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.ping()
    client.flushdb()
    return TEST_REDIS_URL


def _create_pg_database() -> tuple[str, str]:
    from sqlalchemy import create_engine, text

    name = f"zhiku_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_pg_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    from core import db

    db.dispose_engines()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each DB test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'zhiku.db'}"
        return
    name, url = _create_pg_database()
    try:
        yield url
    finally:
        _drop_pg_database(name)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str):  # type: ignore[no-untyped-def]
    from core import db
    from core.settings import Settings

    s = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        redis_url=redis_url,
        lease_seconds=6,
        requeue_after_seconds=5,
        reconcile_interval_seconds=2,
    )
    s.data_dir.mkdir(parents=True, exist_ok=True)
    db.migrate(s)
    yield s
    db.dispose_engines()


def settings_env(s) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update(
        {
            "ZHIKU_DATA_DIR": str(s.data_dir),
            "ZHIKU_DATABASE_URL": s.db_url,
            "ZHIKU_REDIS_URL": s.redis_url,
            "ZHIKU_LEASE_SECONDS": str(s.lease_seconds),
            "ZHIKU_REQUEUE_AFTER_SECONDS": str(s.requeue_after_seconds),
            "ZHIKU_RECONCILE_INTERVAL_SECONDS": str(s.reconcile_interval_seconds),
            "ZHIKU_INDEX_BATCH_MAX_DOCS": str(s.index_batch_max_docs),
            "ZHIKU_INDEX_BATCH_MAX_DELAY_SECONDS": str(s.index_batch_max_delay_seconds),
            "ZHIKU_MAX_UPLOAD_BYTES": str(s.max_upload_bytes),
        }
    )
    return env


class WorkerProcess:
    """A real `zhiku worker` process (Celery, prefork pool) on the test's settings."""

    def __init__(self, settings, log_path: Path):  # type: ignore[no-untyped-def]
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--loglevel", "INFO"],
            cwd=REPO,
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.3)
        raise RuntimeError(f"worker did not start: {self.log_path.read_text()[-3000:]}")

    def children(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def worker(settings, tmp_path: Path) -> Iterator[WorkerProcess]:  # type: ignore[no-untyped-def]
    import redis

    redis.Redis.from_url(settings.redis_url).flushdb()  # no stale jobs from earlier tests
    w = WorkerProcess(settings, tmp_path / "worker.log")
    w.start()
    yield w
    w.stop()


@pytest.fixture
def app_client(settings):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def admin_token(settings, app_client) -> str:  # type: ignore[no-untyped-def]
    from core import db
    from core.models import Role
    from core.repo import users

    with db.session_scope(settings) as session:
        users.create_user(session, "root-admin", "correct horse battery", role=Role.admin)
    r = app_client.post(
        "/api/v1/auth/login", json={"username": "root-admin", "password": "correct horse battery"}
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


# ---------------------------------------------------------------------------------------------
# Real vLLM CPU servers with the prepared quantized model. They take minutes to start, so they
# are launched as soon as collection shows a test marked `vllm`, and boot while other tests run.

MODELS_CACHE = REPO / ".models-cache"
TEST_MODEL = MODELS_CACHE / "smollm2-135m-w4a16"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServers:
    """Two replicas of the main model: `main` (all cores) and `replica` (one core)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: dict[str, object] = {}
        self.error: str | None = None
        self.thread: object | None = None
        self.warm: set[str] = set()

    def start(self) -> None:
        import threading

        reuse = os.environ.get("ZHIKU_TEST_VLLM_URLS")  # development: "main_url,replica_url"
        if reuse:
            self.reused = reuse.split(",")
            return

        self.thread = threading.Thread(target=self._boot, daemon=True)
        self.thread.start()

    def _boot(self) -> None:
        from serving import model_server

        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            prep = subprocess.run(
                [sys.executable, "-m", "cli.main", "models", "prepare", "--out", str(TEST_MODEL)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            if prep.returncode != 0:
                raise RuntimeError(f"model preparation failed:\n{prep.stdout}\n{prep.stderr}")
            # Disjoint cores: OpenMP threads of one server stall when another process takes
            # their core (the first test run, with both on core 1, timed out).
            cores = os.cpu_count() or 1
            binds = (
                ("0", "1") if cores == 2 else (f"0-{cores // 2 - 1}", f"{cores // 2}-{cores - 1}")
            )
            for name, bind in zip(("main", "replica"), binds, strict=True):
                spec = model_server.ServerSpec(
                    TEST_MODEL,
                    "zhiku-main",
                    _free_port(),
                    max_model_len=4096,
                    kv_cache_gb=1,
                    cpu_threads=bind,
                )
                self.servers[name] = model_server.launch(spec, self.log_dir)
        except Exception as exc:  # reported by the fixture
            self.error = str(exc)

    reused: list[str] | None = None

    def wait(self, name: str, timeout: float = 900) -> str:
        from serving import model_server

        if self.reused:
            return self.reused[0 if name == "main" else 1]
        assert self.thread is not None
        self.thread.join(timeout)  # type: ignore[attr-defined]
        if self.error:
            raise RuntimeError(self.error)
        server = self.servers[name]
        if name not in self.warm:
            model_server.wait_ready(server, timeout)  # type: ignore[arg-type]
            model_server.warm_up(server.spec, timeout)  # type: ignore[attr-defined]
            self.warm.add(name)
        return str(server.spec.base_url)  # type: ignore[attr-defined]

    def process(self, name: str):  # type: ignore[no-untyped-def]
        if self.reused:
            pytest.skip("reusing servers from ZHIKU_TEST_VLLM_URLS: not killing them")
        return self.servers[name]

    def stop(self) -> None:
        from serving import model_server

        for server in self.servers.values():
            model_server.stop(server)  # type: ignore[arg-type]


_VLLM: VllmServers | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _VLLM
    if any(item.get_closest_marker("vllm") for item in items) and _VLLM is None:
        _VLLM = VllmServers(REPO / "test-artifacts" / "vllm")
        _VLLM.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _VLLM is not None:
        _VLLM.stop()


@pytest.fixture(scope="session")
def vllm() -> VllmServers:
    """The running servers (waits for them; fails with the server log if they cannot start)."""
    assert _VLLM is not None, "mark the test with @pytest.mark.vllm"
    _VLLM.wait("main")
    _VLLM.wait("replica")  # booting, it would slow every test that uses the main server
    return _VLLM
