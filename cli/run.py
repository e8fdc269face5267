from __future__ import annotations

import os

import typer

from core.settings import get_settings


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind"),
    port: int = typer.Option(8000, help="Port"),
) -> None:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(get_settings()), host=host, port=port, log_level="info")


def worker(
    concurrency: int = typer.Option(0, help="Worker processes (default: ZHIKU_WORKER_CONCURRENCY)"),
    loglevel: str = typer.Option("INFO"),
) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from workers.tasks import app as celery

    settings = get_settings()
    celery.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            "--without-gossip",
            "--without-mingle",
            "-Q",
            "zhiku",
        ]
    )
