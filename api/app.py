"""The FastAPI application: REST under /api/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from api import errors, health, http_security, metrics, request_context
from api.rate_limit import Limiter
from api.routes import (
    api_keys,
    audit,
    auth,
    chat,
    conversations,
    documents,
    feedback,
    groups,
    lexicon,
    libraries,
    openai_compat,
    search,
    system,
    users,
)
from core import db, instance_secrets
from core.settings import Settings, get_settings

API_PREFIX = "/api/v1"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# Assets are revalidated on each load (ETag → 304): an upgrade never serves stale scripts.
ASSET_CACHE = {"Cache-Control": "no-cache"}


class WebAssets(StaticFiles):
    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.update(ASSET_CACHE)
        return response


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        db.migrate(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine = getattr(app.state, "chat_engine", None)
        if engine is not None:
            await engine.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="Zhiku API",
        version="0.1.0",
        description="Offline enterprise knowledge base. Authenticate with "
        "POST /api/v1/auth/login and send 'Authorization: Bearer <token>'.",
        # Swagger UI and ReDoc load scripts from a CDN: offline, and forbidden by our CSP.
        # The schema stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.secrets = secrets = instance_secrets.load_or_create(settings.data_dir)
    app.state.limiter = Limiter(settings.redis_url, prefix=f"zk:{secrets.instance_id}:rl:")
    errors.install(app)
    http_security.install(app, settings)
    app.state.metrics = app_metrics = metrics.Metrics(settings)
    request_context.install(app, observers=[app_metrics.observe_exchange])  # outermost
    v1 = APIRouter(prefix=API_PREFIX, responses=errors.ERROR_RESPONSES)
    for module in (
        auth,
        users,
        groups,
        api_keys,
        libraries,
        documents,
        search,
        chat,
        conversations,
        feedback,
        lexicon,
        audit,
        system,
    ):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(openai_compat.router, responses=errors.ERROR_RESPONSES)
    app.include_router(health.router)  # /healthz, /readyz
    app.include_router(metrics.router)  # /metrics

    @app.get("/", include_in_schema=False)
    def web_ui() -> FileResponse:
        """The web UI: one page; its screens are client-side routes (#/chat, #/admin/…)."""
        return FileResponse(WEB_DIR / "index.html", headers=ASSET_CACHE)

    app.mount("/static", WebAssets(directory=WEB_DIR / "static"), name="static")

    return app
