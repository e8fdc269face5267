"""The `zhiku` command."""

from __future__ import annotations

import typer

from cli import (
    admin,
    ask,
    audit,
    backup,
    bench,
    demo,
    eval_retrieval,
    index,
    ingest_cmd,
    models,
    run,
    search_cmd,
)
from cli.eval_safety import eval_safety

app = typer.Typer(no_args_is_help=True, help="Zhiku (知库): offline enterprise knowledge base")
app.command("serve", help="Run the api server.")(run.serve)
app.command("worker", help="Run a Celery worker (ingestion).")(run.worker)
app.command("ingest", help="Ingest files, folders and .zip archives into a library.")(
    ingest_cmd.ingest
)
app.command("search", help="Search the knowledge base.")(search_cmd.search)
app.command("ask", help="Ask a question; get a cited answer.")(ask.ask)
app.add_typer(admin.app, name="admin", help="Administration: users.")
app.add_typer(demo.app, name="demo", help="The demo library: Zhiku's own guide, zh/en.")
app.add_typer(audit.app, name="audit", help="The audit log: export, purge.")
app.add_typer(index.app, name="index", help="Per-library search indexes.")
app.command("backup", help="Back up the database, originals, indexes and secrets.")(backup.backup)
app.command("restore", help="Restore a backup into an empty data dir and database.")(backup.restore)
app.add_typer(bench.app, name="bench", help="Benchmarks.")
models.app.command("prepare")(models.prepare)
models.app.command("serve")(models.serve)
models.app.command("status")(models.status)
app.add_typer(models.app, name="models", help="The quantized main model and its servers.")
evaluation = typer.Typer(no_args_is_help=True)
evaluation.command("retrieval")(eval_retrieval.eval_retrieval)
evaluation.command("safety")(eval_safety)
app.add_typer(evaluation, name="eval", help="Quality evaluations on QA data sets.")

if __name__ == "__main__":
    app()
