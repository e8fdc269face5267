"""`zhiku bench load-chat`: many concurrent streamed chat sessions against the real stack.

The deployment (set up before anything is timed): a scratch data dir with SQLite, a private
Redis (`redis-server` on a free port, nothing kept on disk: rate limits and nothing else), the
synthetic bilingual library of `bench chat` ingested inline through the real pipeline, one staff
account per stream (a group with read access to the library), the api as a real uvicorn server
in a subprocess, and the main model: the configured endpoint when it answers, else a vLLM server
started here (`bench_chat.main_model`).

Rate limits stay at the product's defaults: each stream is its own user, so the per-user
question limit (ZHIKU_RATE_LIMIT_CHAT_PER_MINUTE, 30 a minute) is never reached by a stream
asking a few questions; a 429 would show up as an error.

All streams start together (after a small warm-up that is not counted) and each asks `--turns`
questions in one conversation, one after the other. At the client: TTFT = request sent → first
`token` event, total = request sent → `done` event; tokens = the completion tokens the
platform reports (or, when it cut the answer short, the streamed text's tokens by the model's
tokenizer). Errors are classified: HTTP 429, HTTP 503, other HTTP statuses, `error` events in
the stream (by code), streams that end without `done`, timeouts, connection failures.
Answers given without the model (no evidence, blocked) are counted apart, not as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer

from cli import bench_chat
from cli.bench_chat import API_PREFIX, MainModel, err, free_port
from cli.bench_report import write_result
from core.settings import Settings, get_settings

GROUP = "bench-load"
USER_PREFIX = "bench-user-"
NO_DISK = ("--save", "", "--appendonly", "no")


# --- small helpers shared with load-ingest -----------------------------------------------------


def percentile(values: Sequence[float], q: float, digits: int = 1) -> float | None:
    """Nearest-rank percentile (q in 0..100), rounded; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[min(rank, len(ordered)) - 1], digits)


@contextlib.contextmanager
def private_redis(root: Path) -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port (nothing persisted), so that the
    benchmark neither disturbs nor is disturbed by other users of the machine's Redis."""
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with (root / "redis.log").open("ab") as log:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), *NO_DISK],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({proc.returncode})")
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(url, socket_timeout=1).ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def deployment_env(
    settings: Settings, model: MainModel | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of the benchmark's api and worker processes: its scratch settings."""
    import os

    env = dict(os.environ)
    env.update(
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        ZHIKU_DATA_DIR=str(settings.data_dir),
        ZHIKU_DATABASE_URL=settings.db_url,
        ZHIKU_REDIS_URL=settings.redis_url,
        # logs for people: the benchmark reads the worker's "ready." line and shows log tails
        ZHIKU_LOG_FORMAT="text",
    )
    if model is not None:
        env.update(
            ZHIKU_MAIN_BASE_URLS=",".join(model.base_urls),
            ZHIKU_MAIN_MODEL=model.model,
            ZHIKU_MAIN_CONTEXT_WINDOW=str(model.context_window),
            ZHIKU_MAIN_TOKENIZER=model.tokenizer,
            ZHIKU_ANSWER_MAX_TOKENS=str(settings.answer_max_tokens),
        )
        if model.api_key:
            env["ZHIKU_MAIN_API_KEY"] = model.api_key
    env.update(extra or {})
    return env


def create_staff(settings: Settings, library_id: int, count: int) -> dict[str, str]:
    """`count` staff accounts in one group that may read the library: username → password."""
    from core import db
    from core.models import Permission
    from core.repo import groups, libraries, users

    accounts = {f"{USER_PREFIX}{i:03d}": secrets.token_urlsafe(18) for i in range(count)}
    with db.session_scope(settings) as session:
        group = groups.create(session, GROUP)
        assert group.id is not None
        libraries.grant(
            session, library_id, Permission.read, user_id=None, group_id=group.id, created_by=None
        )
        for name, password in accounts.items():
            user = users.create_user(session, name, password)
            assert user.id is not None
            groups.add_member(session, group.id, user.id)
    return accounts


def login(api: str, username: str, password: str) -> str:
    r = httpx.post(
        f"{api}{API_PREFIX}/auth/login",
        json={"username": username, "password": password},
        timeout=60,
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


# --- one streamed question ---------------------------------------------------------------------


@dataclass
class Turn:
    stream: int
    question: str
    ttft_ms: float | None = None
    total_ms: float | None = None
    tokens: int | None = None
    error: str | None = None  # the kind: http_429, http_503, http_<n>, stream_<code>, …
    detail: str = ""
    excluded: str | None = None  # not_found | blocked | empty
    conversation_id: int | None = None
    extra: dict[str, float] = field(default_factory=dict)


async def ask(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    library_id: int,
    stream: int,
    question: str,
    conversation_id: int | None,
    count: Callable[[str], int],
) -> Turn:
    t = Turn(stream, question)
    body: dict[str, Any] = {"question": question, "stream": True, "library_ids": [library_id]}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    first: float | None = None
    done: dict[str, Any] | None = None
    pieces: list[str] = []
    started = time.perf_counter()
    try:
        async with client.stream(
            "POST", url, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode("utf-8", "replace")
                t.error, t.detail = f"http_{r.status_code}", text[:200]
                return t
            async for event, data in bench_chat.sse_events(r):
                if event == "token":
                    first = time.perf_counter() if first is None else first
                    pieces.append(data["text"])
                elif event == "error":
                    t.error = f"stream_{data.get('code', 'error')}"
                    t.detail = str(data.get("message", ""))[:200]
                elif event == "done":
                    done = data
    except httpx.TimeoutException as exc:
        t.error, t.detail = (
            "timeout",
            f"{type(exc).__name__} after {time.perf_counter() - started:.0f} s",
        )
        return t
    except httpx.HTTPError as exc:
        t.error, t.detail = "connection", f"{type(exc).__name__}: {exc}"[:200]
        return t
    ended = time.perf_counter()
    if t.error is not None:
        return t
    if done is None:
        t.error, t.detail = "stream_incomplete", "the stream ended without a done event"
        return t
    t.conversation_id = done.get("conversation_id")
    t.total_ms = (ended - started) * 1000
    timings = done.get("timings") or {}
    usage = timings.get("completion_tokens")
    t.tokens = int(usage) if usage is not None else (count("".join(pieces)) if pieces else None)
    if done.get("blocked"):
        t.excluded = "blocked"
    elif first is None or (done.get("flags") or {}).get("fallback"):  # no model text to time
        t.excluded = "not_found" if done.get("not_found") else "empty"
    else:
        t.ttft_ms = (first - started) * 1000
    return t


def summarize(turns: list[Turn], streams: int, wall_s: float) -> dict[str, Any]:
    ok = [t for t in turns if t.error is None]
    answered = [t for t in ok if t.ttft_ms is not None]
    kinds = Counter(t.error for t in turns if t.error)
    tokens = sum(t.tokens or 0 for t in ok)
    ttft = [t.ttft_ms for t in answered if t.ttft_ms is not None]
    total = [t.total_ms for t in answered if t.total_ms is not None]
    return {
        "streams": streams,
        "requests": len(turns),
        "completed": len(ok),
        "answered": len(answered),
        "excluded": sum(t.excluded is not None for t in ok),
        "excluded_by_kind": dict(Counter(t.excluded for t in ok if t.excluded)),
        "errors": sum(kinds.values()),
        "errors_by_kind": dict(kinds),
        "error_examples": [f"stream {t.stream}: {t.error}: {t.detail}" for t in turns if t.error][
            :5
        ],
        "ttft_ms_p50": percentile(ttft, 50),
        "ttft_ms_p95": percentile(ttft, 95),
        "ttft_ms_max": percentile(ttft, 100),
        "total_ms_p50": percentile(total, 50),
        "total_ms_p95": percentile(total, 95),
        "total_ms_max": percentile(total, 100),
        "completion_tokens": tokens,
        "wall_s": round(wall_s, 2),
        "tokens_per_s": round(tokens / wall_s, 1) if wall_s else None,
        "requests_per_s": round(len(ok) / wall_s, 3) if wall_s else None,
    }


# --- the command -------------------------------------------------------------------------------


def load_chat(
    streams: int = typer.Option(50, "--streams", help="Concurrent chat sessions (one user each)"),
    turns: int = typer.Option(1, "--turns", help="Questions per session, one after the other"),
    max_tokens: int = typer.Option(
        128, "--max-tokens", help="Answer tokens (ZHIKU_ANSWER_MAX_TOKENS) of the deployment"
    ),
    timeout: float = typer.Option(
        900.0, "--timeout", help="Client timeout per request, seconds (50 streams queue)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
    out: Path | None = typer.Option(None, "--out", help="Also write the result here"),
) -> None:
    """STREAMS concurrent streamed chat sessions through the api (uvicorn), the real retriever
    and the real vLLM server: errors by kind, TTFT and total latency (p50/p95), tokens/s and
    requests/s."""
    if streams < 1 or turns < 1 or max_tokens < 2 or timeout <= 0:
        raise typer.BadParameter("--streams, --turns ≥ 1, --max-tokens ≥ 2, --timeout > 0")
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-load-chat-") as tmp:
        root = Path(tmp)
        try:
            with (
                private_redis(root / "redis") as redis_url,
                bench_chat.main_model(base, root / "logs", False) as model,
            ):
                result = _run(base, root, redis_url, model, streams, turns, max_tokens, timeout)
            if result["errors"]:
                for kept in bench_chat.keep_logs(root, out, "load-chat"):
                    err.print(f"errors: kept {kept}", style="yellow")
        except (RuntimeError, TimeoutError, FileNotFoundError, httpx.HTTPError) as exc:
            err.print(f"bench load-chat failed: {exc}", style="red")
            for kept in bench_chat.keep_logs(root, out, "load-chat"):
                err.print(f"kept {kept}", style="yellow")
            raise typer.Exit(1) from None
    params = {"streams": streams, "turns": turns, "max_tokens": max_tokens, "timeout": timeout}
    if out is not None:
        write_result(out, "load-chat", params, result)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>18}: {value}")


def _run(
    base: Settings,
    root: Path,
    redis_url: str,
    model: MainModel,
    streams: int,
    turns: int,
    max_tokens: int,
    timeout: float,
) -> dict[str, Any]:
    from cli.ingest_cmd import ingest_paths
    from core import db
    from serving.endpoints import endpoint
    from serving.prompts import heuristic_token_count, tokenizer_counter

    data_dir = root / "data"
    data_dir.mkdir()
    settings = base.model_copy(
        update={
            "data_dir": data_dir,
            "database_url": f"sqlite:///{data_dir / 'bench.db'}",
            "redis_url": redis_url,
            "main_base_urls": ",".join(model.base_urls),
            "main_model": model.model,
            "main_api_key": model.api_key,
            "main_context_window": model.context_window,
            "main_tokenizer": model.tokenizer,
            "answer_max_tokens": max_tokens,
        }
    )
    env = deployment_env(settings, model)
    corpus = bench_chat.make_corpus()
    docs = root / "corpus"
    docs.mkdir()
    for name, text in corpus.files.items():
        (docs / name).write_text(text, encoding="utf-8")
    try:
        db.migrate(settings)
        err.print(f"ingesting {len(corpus.files)} documents into a scratch library …")
        summary = ingest_paths(settings, [docs], bench_chat.LIBRARY, True, True, True, 0)
        if summary.failures:
            raise RuntimeError(f"ingestion failed: {summary.failures}")
        err.print(f"creating {streams} staff accounts …")
        accounts = create_staff(settings, summary.library_id, streams)
        main = endpoint(settings, "main")
        count = (
            tokenizer_counter(main.tokenizer_dir) if main.tokenizer_dir else None
        ) or heuristic_token_count
    finally:
        db.dispose_engines()
    warm = 2
    pool = bench_chat.question_pool(corpus.questions, warm + streams * turns)
    err.print("starting the api server …")
    with bench_chat.api_server(env, root / "api.log") as api:
        tokens = [login(api, name, pw) for name, pw in accounts.items()]
        plan = LoadPlan(api, tokens, summary.library_id, pool[:warm], pool[warm:], turns, timeout)
        return asyncio.run(_measure(plan, count))


@dataclass(frozen=True)
class LoadPlan:
    api: str
    tokens: list[str]  # one per stream
    library_id: int
    warm: list[str]
    questions: list[str]  # turns per stream, stream by stream
    turns: int
    timeout: float


async def _measure(plan: LoadPlan, count: Callable[[str], int]) -> dict[str, Any]:
    url = f"{plan.api}{API_PREFIX}/chat"
    streams = len(plan.tokens)
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    timeout = httpx.Timeout(plan.timeout, connect=30.0)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        err.print("warming up (not counted) …")
        for q in plan.warm:  # loads the api's retriever, safety classifier and model client
            t = await ask(client, url, plan.tokens[0], plan.library_id, -1, q, None, count)
            if t.error:
                raise RuntimeError(f"warm-up failed: {t.error}: {t.detail}")
        done = 0
        total = streams * plan.turns
        started = time.perf_counter()

        async def session(i: int) -> list[Turn]:
            nonlocal done
            out: list[Turn] = []
            conversation: int | None = None
            mine = plan.questions[i * plan.turns : (i + 1) * plan.turns]
            for q in mine:
                t = await ask(
                    client, url, plan.tokens[i], plan.library_id, i, q, conversation, count
                )
                out.append(t)
                done += 1
                state = t.error or t.excluded or f"TTFT {t.ttft_ms:,.0f} ms"
                err.print(
                    f"[{time.perf_counter() - started:6.1f} s] {done}/{total} answered "
                    f"(stream {i}: {state})"
                )
                if t.error:
                    break  # a session whose question failed stops, as a user would retry later
                conversation = t.conversation_id
            return out

        err.print(f"{streams} streams × {plan.turns} question(s), all at once …")
        per_stream = await asyncio.gather(*(session(i) for i in range(streams)))
        wall = time.perf_counter() - started
    turns = [t for s in per_stream for t in s]
    result = summarize(turns, streams, wall)
    result["not_asked"] = total - len(turns)
    return result
