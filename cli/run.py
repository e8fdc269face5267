from __future__ import annotations

import os

import typer

from core.logging_setup import LOG_FORMAT_ENV, LOG_FORMATS, configure_logging
from core.settings import get_settings

LOG_FORMAT_HELP = "json: one JSON object per line (for log collectors); text: for people"


def _log_format(value: str) -> str:
    value = value.strip().lower()
    if value not in LOG_FORMATS:
        raise typer.BadParameter(f"use {' or '.join(LOG_FORMATS)}")
    return value


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind"),
    port: int = typer.Option(8000, help="Port"),
    log_format: str = typer.Option(
        "json", envvar=LOG_FORMAT_ENV, callback=_log_format, help=LOG_FORMAT_HELP
    ),
    log_level: str = typer.Option("INFO", help="DEBUG also logs probes and scrapes"),
) -> None:
    import uvicorn

    from api.app import create_app

    configure_logging("json" if log_format == "json" else "text", log_level)
    # Uvicorn's own logging config and access log are off: ours writes one line per request,
    # with its request id and route template (api.request_context).
    uvicorn.run(
        create_app(get_settings()),
        host=host,
        port=port,
        log_config=None,
        log_level=log_level.lower(),
        access_log=False,
    )


def worker(
    concurrency: int = typer.Option(0, help="Worker processes (default: ZHIKU_WORKER_CONCURRENCY)"),
    loglevel: str = typer.Option("INFO"),
    log_format: str = typer.Option(
        "json", envvar=LOG_FORMAT_ENV, callback=_log_format, help=LOG_FORMAT_HELP
    ),
) -> None:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # workers.tasks configures logging in this format when Celery sets up the worker
    os.environ[LOG_FORMAT_ENV] = log_format
    configure_logging("json" if log_format == "json" else "text", loglevel)  # from the start
    from workers.tasks import app as celery

    settings = get_settings()
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        "--without-gossip",
        "--without-mingle",
        "-Q",
        "zhiku",
    ]
    if log_format == "json":
        argv.insert(0, "--quiet")  # no banner: every line of the output is JSON
    celery.worker_main(argv)
