"""The state of an installation at a glance, for administrators: workers, the ingest queue,
documents, model servers, indexes and disk.

Each part is checked on its own thread with its own short timeouts and reports its own error:
one part that is down or slow (Redis, a model server, a large disk) never fails the others,
and `collect` answers within `DEADLINE` seconds whatever happens — a part still running then
is reported as timed out.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
from kombu import Connection
from pydantic import BaseModel, Field

from core import db, tasks
from core.models import DocStatus, utcnow
from core.repo import chunks as chunks_repo
from core.repo import documents as documents_repo
from core.repo import libraries as libraries_repo
from core.settings import Settings
from retrieval import index_store
from serving import model_server
from serving.endpoints import endpoint

DEADLINE = 4.5  # seconds for the whole report
REDIS_TIMEOUT = 1.0
WORKER_TIMEOUT = 1.0  # how long workers have to answer the broadcast
MODEL_TIMEOUT = 2.0
WALK_BUDGET = 2.0  # seconds for adding up the originals' sizes
# kombu's Redis transport keeps a queue as a list under the queue's name, and messages with a
# priority in lists named `<queue>\x06\x16<step>` (kombu.transport.redis: sep, PRIORITY_STEPS).
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_UNACKED = "unacked"


# --- the report ---------------------------------------------------------------------------


class Part(BaseModel):
    ok: bool = Field(False, description="This part is healthy")
    error: str | None = Field(None, description="Why not: what failed or what is wrong")
    took_ms: float = Field(0.0, description="How long checking this part took")


class WorkerOut(BaseModel):
    name: str = Field(description="Celery node name, e.g. celery@host")
    active_tasks: int = Field(description="Tasks it is running now")


class WorkersStatus(Part):
    online: int = Field(0, description="Workers that answered within a second")
    workers: list[WorkerOut] = Field(default_factory=list)


class QueueStatus(Part):
    name: str = tasks.INGEST_QUEUE
    depth: int | None = Field(None, description="Tasks waiting in the ingest queue")
    unacked: int | None = Field(
        None, description="Tasks taken by a worker and not yet finished (all queues)"
    )


class DocumentsStatus(Part):
    by_status: dict[str, int] = Field(
        default_factory=dict, description="Documents of all libraries by status"
    )
    total: int = 0


class ReplicaStatus(BaseModel):
    url: str
    up: bool
    response_ms: float | None = Field(None, description="Time to list its models (or to fail)")
    serves_model: bool | None = Field(None, description="It lists the configured model")
    error: str | None = None


class ModelStatus(BaseModel):
    role: str = Field(description="main (answers) or safety (the guard model)")
    configured: bool
    model: str | None = Field(None, description="The served model name asked for")
    note: str | None = None
    replicas: list[ReplicaStatus] = Field(default_factory=list)


class ModelsStatus(Part):
    main: ModelStatus | None = None
    safety: ModelStatus | None = None


class IndexStatus(BaseModel):
    library_id: int
    library_name: str
    chunks: int = Field(description="Chunk rows in the database")
    vectors: int | None = Field(None, description="Vectors in the published index")
    vectors_en: int | None = Field(None, description="Vectors in the English index")
    version: int | None = Field(None, description="Published snapshot version; null: none yet")
    bytes: int = Field(0, description="Bytes of the library's index files on disk")
    error: str | None = None


class IndexesStatus(Part):
    libraries: list[IndexStatus] = Field(default_factory=list)
    total_bytes: int = 0


class DiskStatus(Part):
    total_bytes: int | None = Field(None, description="Of the file system holding the data dir")
    used_bytes: int | None = None
    free_bytes: int | None = None
    originals_bytes: int | None = Field(None, description="Uploaded originals")
    originals_complete: bool = Field(
        True, description="false: too many files to add up in time; originals_bytes is a floor"
    )


class SystemStatus(BaseModel):
    checked_at: datetime
    took_ms: float
    workers: WorkersStatus
    queue: QueueStatus
    documents: DocumentsStatus
    models: ModelsStatus
    indexes: IndexesStatus
    disk: DiskStatus


# --- the parts ------------------------------------------------------------------------------


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        retry_on_timeout=False,
    )


def control_connection(settings: Settings) -> Connection:
    """A broker connection for worker broadcasts that gives up quickly when Redis is away."""
    return Connection(
        settings.redis_url,
        connect_timeout=REDIS_TIMEOUT,
        transport_options={
            "socket_connect_timeout": REDIS_TIMEOUT,
            "socket_timeout": WORKER_TIMEOUT + 1,
        },
    )


def workers_status(settings: Settings) -> WorkersStatus:
    """The workers that answer a broadcast within `WORKER_TIMEOUT`, with their running tasks."""
    client = _redis(settings)
    try:
        client.ping()  # kombu would retry a dead broker for a long time
    finally:
        client.close()
    app = tasks.celery_app(settings)
    with control_connection(settings) as conn:
        replies = app.control.inspect(timeout=WORKER_TIMEOUT, connection=conn).active() or {}
    workers = sorted(
        (
            WorkerOut(name=str(name), active_tasks=len(active) if isinstance(active, list) else 0)
            for name, active in replies.items()
        ),
        key=lambda w: w.name,
    )
    return WorkersStatus(
        ok=bool(workers),
        error=None if workers else f"no worker answered within {WORKER_TIMEOUT:g} s",
        online=len(workers),
        workers=workers,
    )


def queue_status(settings: Settings) -> QueueStatus:
    client = _redis(settings)
    try:
        names = [
            tasks.INGEST_QUEUE + (f"{KOMBU_PRIORITY_SEP}{step}" if step else "")
            for step in KOMBU_PRIORITY_STEPS
        ]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        pipe.hlen(KOMBU_UNACKED)
        *depths, unacked = pipe.execute()
    finally:
        client.close()
    return QueueStatus(ok=True, depth=sum(int(d) for d in depths), unacked=int(unacked))


def documents_status(settings: Settings) -> DocumentsStatus:
    with db.session_scope(settings) as session:
        counts = {s: n for s, (n, _) in documents_repo.totals_by_status(session).items()}
    by_status = {s.value: counts.pop(s.value, 0) for s in DocStatus} | counts
    return DocumentsStatus(ok=True, by_status=by_status, total=sum(by_status.values()))


def _model_status(settings: Settings, role: str, pool: ThreadPoolExecutor) -> ModelStatus:
    ep = endpoint(settings, role)
    if ep.config is None:
        note = None
        if role == "safety":
            note = f"safety_backend={settings.safety_backend}" + (
                ": the bundled classifier screens in-process"
                if settings.safety_backend == "classifier"
                else ""
            )
        return ModelStatus(role=role, configured=False, note=note)
    config = ep.config
    futures = [
        pool.submit(model_server.probe, url, config.api_key, MODEL_TIMEOUT)
        for url in config.base_urls
    ]
    replicas = []
    for url, future in zip(config.base_urls, futures, strict=True):
        try:
            found = future.result(timeout=MODEL_TIMEOUT * 1.5)
        except Exception as exc:  # a probe that hangs past its timeouts
            replicas.append(ReplicaStatus(url=url, up=False, error=_describe(exc)))
            continue
        serves = found.serves(config.model) if found.up else None
        error = found.error
        if found.up and not serves:
            error = f"does not serve {config.model!r} (it serves {', '.join(found.models)})"
        replicas.append(
            ReplicaStatus(
                url=url,
                up=found.up,
                response_ms=round(found.seconds * 1000, 1),
                serves_model=serves,
                error=error,
            )
        )
    return ModelStatus(role=role, configured=True, model=config.model, replicas=replicas)


def models_status(settings: Settings) -> ModelsStatus:
    """The main and safety model servers: every replica asked at once."""
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
    try:
        main = _model_status(settings, "main", pool)
        safety = _model_status(settings, "safety", pool)
    finally:
        pool.shutdown(wait=False)  # a probe hung past its timeouts is reported, not awaited
    problems = []
    if not main.configured:
        problems.append("no main model server is configured (zhiku models serve)")
    for m in (main, safety):
        problems += [f"{m.role} {r.url}: {r.error}" for r in m.replicas if r.error]
    return ModelsStatus(
        ok=not problems, error="; ".join(problems) or None, main=main, safety=safety
    )


def _tree_bytes(root: Path, deadline: float | None = None) -> tuple[int, bool]:
    """Bytes of the files under `root` (symlinks not followed) and whether all were counted
    before `deadline` (a time.monotonic() value)."""
    total = 0
    stack = [root]
    while stack:
        if deadline is not None and time.monotonic() > deadline:
            return total, False
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total, True


def indexes_status(settings: Settings) -> IndexesStatus:
    with db.session_scope(settings) as session:
        libs = [(lib.id, lib.name) for lib in libraries_repo.list_all(session)]
        chunk_counts = chunks_repo.counts_by_library(session)
    out: list[IndexStatus] = []
    root = settings.indexes_dir
    for library_id, name in libs:
        assert library_id is not None
        entry = IndexStatus(
            library_id=library_id, library_name=name, chunks=int(chunk_counts.get(library_id, 0))
        )
        entry.bytes = _tree_bytes(index_store.library_dir(root, library_id))[0]
        try:
            manifest = index_store.read_manifest(root, library_id)
            if manifest is not None:
                entry.vectors = manifest.count
                entry.vectors_en = manifest.count_en
                entry.version = manifest.version
        except Exception as exc:  # a damaged manifest is this library's problem only
            entry.error = _describe(exc)
        out.append(entry)
    problems = [f"library {x.library_id}: {x.error}" for x in out if x.error]
    return IndexesStatus(
        ok=not problems,
        error="; ".join(problems) or None,
        libraries=out,
        total_bytes=sum(x.bytes for x in out),
    )


def disk_status(settings: Settings) -> DiskStatus:
    usage = shutil.disk_usage(settings.data_dir)
    originals, complete = _tree_bytes(settings.originals_dir, time.monotonic() + WALK_BUDGET)
    return DiskStatus(
        ok=True,
        total_bytes=usage.total,
        used_bytes=usage.used,
        free_bytes=usage.free,
        originals_bytes=originals,
        originals_complete=complete,
    )


# --- putting it together --------------------------------------------------------------------

P = TypeVar("P", bound=Part)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


def _timed(check: Callable[[Settings], P], kind: type[P], settings: Settings) -> P:
    started = time.monotonic()
    try:
        part = check(settings)
    except Exception as exc:
        part = kind(ok=False, error=_describe(exc))
    part.took_ms = round((time.monotonic() - started) * 1000, 1)
    return part


PARTS: dict[str, tuple[Callable[[Settings], Any], type[Part]]] = {
    "workers": (workers_status, WorkersStatus),
    "queue": (queue_status, QueueStatus),
    "documents": (documents_status, DocumentsStatus),
    "models": (models_status, ModelsStatus),
    "indexes": (indexes_status, IndexesStatus),
    "disk": (disk_status, DiskStatus),
}


def collect(settings: Settings, deadline: float = DEADLINE) -> SystemStatus:
    """Every part, checked at once; within `deadline` seconds in any case."""
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(PARTS), thread_name_prefix="status")
    try:
        futures = {
            name: pool.submit(_timed, check, kind, settings)
            for name, (check, kind) in PARTS.items()
        }
        wait(futures.values(), timeout=deadline, return_when=ALL_COMPLETED)
        parts: dict[str, Part] = {}
        for name, future in futures.items():
            kind = PARTS[name][1]
            if future.done():
                parts[name] = future.result()
            else:
                parts[name] = kind(
                    ok=False,
                    error=f"no answer within {deadline:g} s",
                    took_ms=round(deadline * 1000, 1),
                )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung check finishes on its own
    return SystemStatus(
        checked_at=utcnow(),
        took_ms=round((time.monotonic() - started) * 1000, 1),
        **parts,
    )
