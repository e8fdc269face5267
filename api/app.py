"""The FastAPI application: REST under /api/v1."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from api import errors
from api.routes import auth, documents, libraries, search, users
from core import db
from core.settings import Settings, get_settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        db.migrate(settings)
    app = FastAPI(
        title="Zhiku API",
        version="0.1.0",
        description="Offline enterprise knowledge base. Authenticate with "
        "POST /api/v1/auth/login and send 'Authorization: Bearer <token>'.",
    )
    app.state.settings = settings
    errors.install(app)
    v1 = APIRouter(prefix=API_PREFIX)
    for module in (auth, users, libraries, documents, search):
        v1.include_router(module.router)
    app.include_router(v1)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
