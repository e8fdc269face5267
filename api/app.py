"""The FastAPI application: REST under /api/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api import errors
from api.routes import (
    auth,
    chat,
    conversations,
    documents,
    lexicon,
    libraries,
    openai_compat,
    search,
    users,
)
from core import db
from core.settings import Settings, get_settings

API_PREFIX = "/api/v1"


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
    )
    app.state.settings = settings
    errors.install(app)
    v1 = APIRouter(prefix=API_PREFIX)
    for module in (auth, users, libraries, documents, search, chat, conversations, lexicon):
        v1.include_router(module.router)
    app.include_router(v1)
    app.include_router(openai_compat.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
