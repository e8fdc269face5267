"""Liveness and readiness for load balancers, orchestrators and people.

- `GET /healthz`: the process is up. No checks, no credentials, `{"status": "ok"}`.
- `GET /readyz`: this api can serve: the database answers, Redis answers, at least one worker
  answers a ping, and the model servers (main; safety when a guard model is configured) each
  have a replica that serves the configured model. 200 when all hold, 503 when one does not.
  Anyone gets `{"status": "ready" | "not_ready"}`; an administrator (session or bearer token)
  also gets every check with `ok`, `error` and `took_ms`. The checks run at once, each with
  short timeouts, and the answer comes within `DEADLINE` seconds whatever is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ALL_COMPLETED, ThreadPoolExecutor, wait
from typing import Literal

import anyio
import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from api import system_status
from api.deps import ActAsDep, BearerDep, CookieDep, SettingsDep, authenticate, identify
from core import db, tasks
from core.access import Principal
from core.errors import ZhikuError
from core.settings import Settings

DEADLINE = 4.0  # seconds for all checks together
REDIS_TIMEOUT = 1.0
WORKER_TIMEOUT = 1.0  # how long the first worker has to answer the ping

router = APIRouter(tags=["health"])


class Check(BaseModel):
    ok: bool = False
    error: str | None = Field(None, description="Why not")
    took_ms: float = 0.0
    detail: str | None = Field(None, description="What was found (e.g. workers that answered)")


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check] | None = Field(
        None, description="Only for administrators: each check and how long it took"
    )


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__


def check_database(settings: Settings) -> Check:
    db.ping(settings)
    return Check(ok=True)


def check_redis(settings: Settings) -> Check:
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        retry_on_timeout=False,
    )
    try:
        client.ping()
    finally:
        client.close()
    return Check(ok=True)


def check_workers(settings: Settings) -> Check:
    """At least one worker answers a broadcast ping (we stop waiting at the first answer)."""
    check_redis(settings)  # kombu would retry a dead broker for a long time
    app = tasks.celery_app(settings)
    with system_status.control_connection(settings) as conn:
        replies = app.control.ping(timeout=WORKER_TIMEOUT, limit=1, connection=conn) or []
    names = sorted(name for reply in replies for name in reply)
    if not names:
        return Check(ok=False, error=f"no worker answered a ping within {WORKER_TIMEOUT:g} s")
    return Check(ok=True, detail=f"answered: {', '.join(names)}")


def check_models(settings: Settings) -> Check:
    """The main model (and the safety model when configured) has at least one replica up that
    serves the configured model; replicas that are down are named in `detail`."""
    found = system_status.models_status(settings)
    problems: list[str] = []
    notes: list[str] = []
    for model in (found.main, found.safety):
        if model is None:
            continue
        if not model.configured:
            if model.role == "main":
                problems.append("no main model server is configured (ZHIKU_MAIN_BASE_URLS)")
            continue
        serving = [r for r in model.replicas if r.up and r.serves_model]
        down = [f"{model.role} {r.url}: {r.error}" for r in model.replicas if r.error]
        if not serving:
            problems += down or [f"{model.role}: no replica serves {model.model!r}"]
        else:
            notes.append(f"{model.role}: {len(serving)}/{len(model.replicas)} replicas serve")
            notes += down
    if problems:
        return Check(ok=False, error="; ".join(problems), detail="; ".join(notes) or None)
    return Check(ok=True, detail="; ".join(notes) or None)


CHECKS: dict[str, Callable[[Settings], Check]] = {
    "database": check_database,
    "redis": check_redis,
    "workers": check_workers,
    "models": check_models,
}


def _timed(check: Callable[[Settings], Check], settings: Settings) -> Check:
    started = time.monotonic()
    try:
        result = check(settings)
    except Exception as exc:
        result = Check(ok=False, error=_describe(exc))
    result.took_ms = round((time.monotonic() - started) * 1000, 1)
    return result


def readiness(settings: Settings, deadline: float = DEADLINE) -> dict[str, Check]:
    """Every check at once; a check still running at `deadline` is reported as timed out."""
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="ready")
    try:
        futures = {name: pool.submit(_timed, check, settings) for name, check in CHECKS.items()}
        wait(futures.values(), timeout=deadline, return_when=ALL_COMPLETED)
        return {
            name: future.result()
            if future.done()
            else Check(ok=False, error=f"no answer within {deadline:g} s", took_ms=deadline * 1000)
            for name, future in futures.items()
        }
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung check ends on its own


async def _is_admin(
    request: Request,
    settings: Settings,
    creds: BearerDep,
    cookie: CookieDep,
    act_as: ActAsDep,
) -> bool:
    """Whether valid admin credentials came; invalid ones count as none (no 401 here)."""
    if creds is None and not cookie:
        return False

    def who() -> Principal:
        with Session(db.get_engine(settings), expire_on_commit=False) as session:
            return identify(request, session, settings, creds, cookie, act_as)

    try:
        principal = await anyio.to_thread.run_sync(who)
        principal = await authenticate(request, settings, creds, cookie, principal)
    except ZhikuError:
        return False
    except Exception:  # the database is down: the checks will say so, to nobody
        return False
    return principal.is_admin


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (no checks, no credentials)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    response_model_exclude_none=True,
    include_in_schema=False,  # 503 is its normal "not ready" answer: an infrastructure probe
)
async def readyz(
    request: Request,
    settings: SettingsDep,
    creds: BearerDep,
    cookie: CookieDep,
    act_as: ActAsDep,
) -> JSONResponse:
    """200 when the database, Redis, a worker and the model servers answer; 503 otherwise.
    Administrators see each check."""
    admin = await _is_admin(request, settings, creds, cookie, act_as)
    checks = await anyio.to_thread.run_sync(readiness, settings)
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=checks if admin else None)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )
