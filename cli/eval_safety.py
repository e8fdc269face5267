"""`zhiku eval safety`: run the default safety screen over a labelled JSONL file and report
precision, recall and F1 for `unsafe` (overall and per language) and the latency per check.

Data set format (shared/eval/safety_dev.jsonl): lines ``{"text", "label": "safe"|"unsafe",
"category", "lang"}``. The screen is the embedded classifier (`serving.safety_classifier`,
fed by the retrieval package's USE embedder, plus bge-small-en when the model uses it); with
``--guard-url`` a guard model behind an OpenAI-compatible server screens instead
(`serving.guard`). The sensitive-word lexicon is a separate layer and is not part of this
evaluation.

Latency is measured per check, one text at a time (what a question pays), after a warm-up.
``--json`` prints one object: ``{"all": {...}, "zh": {...}, "en": {...}}``, each with
``precision``, ``recall``, ``f1``, ``p50_ms``, ``p95_ms``, ``n`` and the confusion counts.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from retrieval.metrics import percentile
from serving.guard import Verdict, guard_check
from serving.safety_classifier import SafetyClassifier, detect_lang, needs_embed_en

GROUPS = ("all", "zh", "en")


def warn_if_trained_on(dataset: Path) -> None:
    """The bundled classifier was fitted on the development set too: scores on that file are
    training-set scores. Say so, and where the honest (cross-validated) figures come from."""
    from serving.safety_classifier import MODEL_META

    try:
        meta = json.loads(Path(MODEL_META).read_text())
    except (OSError, ValueError):
        return
    names = {Path(str(src.get("path", ""))).name for src in meta.get("trained_on", {}).values()}
    if dataset.name in names:
        typer.secho(
            f"note: the bundled classifier was trained on {dataset.name}; these are training-set "
            "numbers. Cross-validated ones: .venv/bin/python scripts/train_safety.py --cv",
            fg="yellow",
            err=True,
        )


@dataclass(frozen=True)
class SafetyItem:
    text: str
    unsafe: bool
    category: str
    lang: str


def load_items(path: Path) -> list[SafetyItem]:
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file (JSONL with text, label, lang)")
    items: list[SafetyItem] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = str(row["text"]), str(row["label"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise typer.BadParameter(f"{path}:{n}: not a safety item ({exc})") from exc
            if label not in ("safe", "unsafe"):
                raise typer.BadParameter(f"{path}:{n}: label must be safe or unsafe, got {label!r}")
            lang = str(row.get("lang") or "") or detect_lang(text)
            items.append(SafetyItem(text, label == "unsafe", str(row.get("category") or ""), lang))
    if not items:
        raise typer.BadParameter(f"{path} holds no items")
    return items


def take_slice(items: list[SafetyItem], max_items: int | None) -> list[SafetyItem]:
    """A reproducible sub-set spread evenly over the file (so every source is represented)."""
    if max_items is None or max_items >= len(items):
        return items
    if max_items < 1:
        raise typer.BadParameter("--max-items must be at least 1")
    step = len(items) / max_items
    return [items[int(i * step)] for i in range(max_items)]


def summarize(items: list[SafetyItem], verdicts: list[Verdict], ms: list[float]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for group in GROUPS:
        idx = [i for i, it in enumerate(items) if group == "all" or it.lang == group]
        tp = sum(1 for i in idx if items[i].unsafe and not verdicts[i].safe)
        fp = sum(1 for i in idx if not items[i].unsafe and not verdicts[i].safe)
        fn = sum(1 for i in idx if items[i].unsafe and verdicts[i].safe)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        times = [ms[i] for i in idx]
        report[group] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "p50_ms": round(percentile(times, 50), 2),
            "p95_ms": round(percentile(times, 95), 2),
            "n": len(idx),
            "unsafe": sum(1 for i in idx if items[i].unsafe),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return report


def _by_category(items: list[SafetyItem], verdicts: list[Verdict]) -> dict[str, tuple[int, int]]:
    """category -> (items judged correctly, items)."""
    out: dict[str, tuple[int, int]] = {}
    for it, v in zip(items, verdicts, strict=True):
        key = it.category.split("/")[0] if it.category.startswith("cold") else it.category
        key = f"{key} ({'unsafe' if it.unsafe else 'safe'})"
        ok, n = out.get(key, (0, 0))
        out[key] = (ok + int(it.unsafe != v.safe), n + 1)
    return out


def _print(
    report: dict[str, Any], name: str, screen: str, by_cat: dict[str, tuple[int, int]]
) -> None:
    console = Console()
    table = Table(title=f"safety screen ({screen}) on {name}")
    for col in ("lang", "n", "unsafe", "precision", "recall", "F1", "p50 ms", "p95 ms"):
        table.add_column(col, justify="left" if col == "lang" else "right")
    for group in GROUPS:
        m = report[group]
        if not m["n"]:
            continue
        table.add_row(
            group,
            str(m["n"]),
            str(m["unsafe"]),
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            f"{m['p50_ms']:.1f}",
            f"{m['p95_ms']:.1f}",
        )
    console.print(table)
    cats = Table(title="accuracy per category")
    cats.add_column("category")
    cats.add_column("correct", justify="right")
    for key in sorted(by_cat):
        ok, n = by_cat[key]
        cats.add_row(key, f"{ok}/{n}")
    console.print(cats)


def _openai_chat(base_url: str, model: str, timeout: float) -> Callable[..., Awaitable[str]]:
    """A coroutine calling an OpenAI-compatible /chat/completions (stdlib only)."""
    url = base_url.rstrip("/")
    url = (
        url
        if url.endswith("/chat/completions")
        else url + ("/chat/completions" if url.endswith("/v1") else "/v1/chat/completions")
    )

    def call(messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        body = json.dumps(
            {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
            }
        ).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = json.loads(resp.read())
        return str(data["choices"][0]["message"]["content"] or "")

    async def chat(
        messages: list[dict[str, str]], *, max_tokens: int = 32, temperature: float = 0.0
    ) -> str:
        return await asyncio.to_thread(call, messages, max_tokens, temperature)

    return chat


def _classifier_screen() -> Callable[[str], Verdict]:
    from retrieval.embedders import load_embedder

    use = load_embedder("use", threads=1)
    embed_en = None
    if needs_embed_en():
        bge = load_embedder("bge-small-en", threads=1)
        embed_en = bge.embed
    clf = SafetyClassifier.load(embed=use.embed, embed_en=embed_en)
    return clf.check


def _guard_screen(url: str, model: str, style: str, timeout: float) -> Callable[[str], Verdict]:
    if style not in ("instruction", "conversation"):
        raise typer.BadParameter("--guard-style must be 'instruction' or 'conversation'")
    chosen: Literal["instruction", "conversation"] = (
        "conversation" if style == "conversation" else "instruction"
    )
    chat = _openai_chat(url, model, timeout)

    def check(text: str) -> Verdict:
        return asyncio.run(
            guard_check(
                chat,
                text,
                "user",
                style=chosen,
                lang="zh" if detect_lang(text) == "zh" else "en",
            )
        )

    return check


def eval_safety(
    dataset: Path = typer.Option(
        ..., "--dataset", help="JSONL lines {text, label, category, lang}"
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object"),
    max_items: int | None = typer.Option(
        None, "--max-items", help="Evaluate a slice spread evenly over the file"
    ),
    guard_url: str | None = typer.Option(
        None, "--guard-url", help="Screen with a guard model at this OpenAI-compatible URL"
    ),
    guard_model: str = typer.Option("guard", "--guard-model", help="Model name at --guard-url"),
    guard_style: str = typer.Option(
        "instruction",
        "--guard-style",
        help="instruction (any model) or conversation (Llama Guard / Qwen3Guard chat templates)",
    ),
    guard_timeout: float = typer.Option(60.0, "--guard-timeout", help="Seconds per guard call"),
) -> None:
    """Measure the safety screen (embedded classifier, or a guard model) on a labelled set."""
    items = take_slice(load_items(dataset), max_items)
    if guard_url is None:
        warn_if_trained_on(dataset)
    if guard_url:
        screen_name = f"guard {guard_model}"
        check = _guard_screen(guard_url, guard_model, guard_style, guard_timeout)
    else:
        screen_name = "classifier"
        check = _classifier_screen()
    check("warm-up 预热")
    verdicts: list[Verdict] = []
    ms: list[float] = []
    for it in items:
        started = time.perf_counter()
        verdicts.append(check(it.text))
        ms.append((time.perf_counter() - started) * 1000.0)
    report = summarize(items, verdicts, ms)
    if json_out:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print(report, dataset.name, screen_name, _by_category(items, verdicts))
