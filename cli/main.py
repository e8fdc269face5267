"""The `zhiku` command."""

from __future__ import annotations

import typer

from cli import admin, bench, eval_retrieval, index, ingest_cmd, run, search_cmd

app = typer.Typer(no_args_is_help=True, help="Zhiku (知库): offline enterprise knowledge base")
app.command("serve", help="Run the api server.")(run.serve)
app.command("worker", help="Run a Celery worker (ingestion).")(run.worker)
app.command("ingest", help="Ingest files, folders and .zip archives into a library.")(
    ingest_cmd.ingest
)
app.command("search", help="Search the knowledge base.")(search_cmd.search)
app.add_typer(admin.app, name="admin", help="Administration: users.")
app.add_typer(index.app, name="index", help="Per-library search indexes.")
app.add_typer(bench.app, name="bench", help="Benchmarks.")
evaluation = typer.Typer(no_args_is_help=True)
evaluation.command("retrieval")(eval_retrieval.eval_retrieval)
app.add_typer(evaluation, name="eval", help="Quality evaluations on QA data sets.")

if __name__ == "__main__":
    app()
