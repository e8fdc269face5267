"""`zhiku bench chat`: time to first token (TTFT) and time per output token (TPOT) through the
platform's streamed `POST /api/v1/chat` against the bare model server, in one run.

Set-up (nothing of it is timed): a scratch data dir with SQLite, a synthetic bilingual library
(policy/FAQ pages, each with its own facts) ingested inline through the real pipeline, a bench
admin, and the api as a real HTTP server in a subprocess. The model server is the configured
main endpoint when it answers, else one started here (and stopped at the end).

The direct path sends the model exactly what the platform would: the passages are retrieved
in-process from the same data dir with the same retriever settings, filtered by the same
evidence threshold and fitted by `build_prompt` with the same options (context window, answer
tokens, the model's tokenizer); the request carries the same sampling parameters. Prompts are
built before the direct batch starts, so the direct numbers are the model server's alone.

Fairness with vLLM's prefix cache: every request has its own question (drawn from a shuffled
pool, alternately for the two paths), so neither path replays the other's prompt and both get
the same kind of partial hits (the shared system prompt, popular passages).

Measures, at the client: TTFT = request sent → first content token (platform: first `token`
event); TPOT = (last token − first token) / (completion tokens − 1), with the completion tokens
from the server's usage (platform: `timings.completion_tokens` of the `done` event; when the
platform stopped a repeating answer early there is no usage, and the streamed text's tokens are
counted with the model's tokenizer instead). Answers the platform ends without calling the model
(not found, blocked) are excluded and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from core.settings import Settings, get_settings

API_PREFIX = "/api/v1"
BENCH_USER = "bench-admin"
LIBRARY = "bench-chat"
WARMUP = 10  # four questions on both paths (the prompts must match), then three on each
#: Platform TTFT target: at most this factor of the direct TTFT plus this many milliseconds.
TTFT_FACTOR, TTFT_SLACK_MS = 1.1, 150.0
#: TPOT counts as "within noise" when the platform's median exceeds the direct one by less than
#: two standard errors of the difference of medians, or by less than this share.
TPOT_SHARE = 0.10

err = Console(stderr=True, highlight=False, markup=False)


# --- the synthetic corpus ----------------------------------------------------------------------

EN_TOPICS = [
    "parking permits", "bicycle storage", "library loans", "meeting room booking",
    "visitor badges", "laptop upgrades", "phone stipends", "gym memberships", "tuition support",
    "relocation support", "remote work days", "overtime meals", "shuttle buses",
    "printing quotas", "cafeteria vouchers", "mail room deliveries", "lost property",
    "language classes", "standing desks", "team offsites", "sabbatical leave", "volunteer days",
    "referral bonuses", "badge replacement", "software licences",
]  # fmt: skip
ZH_TOPICS = [
    "年度体检", "员工宿舍", "通勤补贴", "节日礼品", "培训课程", "出差住宿", "办公用品领用",
    "团建活动", "生日福利", "茶水间咖啡", "快递代收", "雨伞借用", "充电桩使用", "午休室预约",
    "英语角活动", "读书会", "摄影社团", "羽毛球场地", "职业资格补贴", "员工子女夏令营",
    "图书采购", "打印机维修", "储物柜申请", "名片印制", "公务用车",
]  # fmt: skip
EN_TEAMS = [
    "Amber", "Basalt", "Cedar", "Delta", "Ember", "Fjord", "Granite", "Harbor", "Indigo",
    "Juniper", "Kestrel", "Lantern", "Meadow", "Nimbus", "Orchid", "Pebble", "Quartz", "Raven",
    "Saffron", "Tundra", "Umber", "Violet", "Willow", "Yarrow", "Zephyr",
]  # fmt: skip
ZH_TEAMS = [
    "青松", "白鹭", "红枫", "远山", "清泉", "金桂", "翠竹", "星河", "晨光", "雪莲", "海棠", "云杉",
    "紫藤", "银杏", "明月", "飞燕", "碧波", "朝阳", "秋实", "春晖", "松涛", "梧桐", "兰亭", "蓝湾",
    "锦鲤",
]  # fmt: skip
EN_SITES = [
    "Suzhou", "Hangzhou", "Chengdu", "Wuhan", "Xiamen", "Qingdao", "Dalian", "Kunming",
    "Nanjing", "Tianjin", "Shenyang", "Harbin", "Changsha", "Fuzhou", "Hefei", "Jinan",
    "Lanzhou", "Guiyang", "Nanning", "Haikou", "Taiyuan", "Urumqi", "Lhasa", "Xining", "Yinchuan",
]  # fmt: skip
ZH_SITES = [
    "上海", "北京", "深圳", "广州", "西安", "重庆", "宁波", "无锡", "佛山", "东莞", "温州", "烟台",
    "珠海", "扬州", "绍兴", "洛阳", "桂林", "三亚", "大理", "丽江", "泉州", "嘉兴", "常州", "南通",
    "徐州",
]  # fmt: skip
EN_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
ZH_MONTHS = [f"{m}月" for m in "一二三四五六七八九十"] + ["十一月", "十二月"]


@dataclass(frozen=True)
class Corpus:
    files: dict[str, str]  # file name → text
    questions: list[tuple[str, str]]  # (kind: language and phrasing, question)


def _facts(i: int) -> tuple[int, int, int, int]:
    """Distinct numbers for topic i: fee, working days, month index, yearly limit."""
    return 120 + 37 * i, 2 + (i * 5) % 13, (i * 7) % 12, 3 + (i * 11) % 17


def make_corpus() -> Corpus:
    """50 short policy pages, half English, half Chinese, five facts each, and ten questions
    per page (two phrasings of each fact)."""
    files: dict[str, str] = {}
    questions: list[tuple[str, str]] = []
    for i, t in enumerate(EN_TOPICS):
        fee, days, month, limit = _facts(i)
        team, site, cap = EN_TEAMS[i], EN_SITES[i], t[0].upper() + t[1:]
        files[f"en-{i:02d}.md"] = (
            f"# {cap} policy\n\n"
            f"The {t} fee is {fee} yuan per month. "
            f"Requests for {t} are handled by the {team} team. "
            f"{cap} requests are answered within {days} working days. "
            f"{cap} is offered at the {site} office starting in {EN_MONTHS[month]}. "
            f"Each employee may use {t} at most {limit} times per year.\n"
        )
        questions += enumerate_kinds(
            "en",
            f"What is the monthly fee for {t}?",
            f"Which team handles requests for {t}?",
            f"Within how many working days are {t} requests answered?",
            f"At which office is {t} offered?",
            f"How many times per year may an employee use {t}?",
            f"How many yuan per month do {t} cost?",
            f"Who handles {t} requests?",
            f"How long does it take to answer a request for {t}?",
            f"When does the {site} office start offering {t}?",
            f"What is the yearly limit on using {t}?",
        )
    for i, t in enumerate(ZH_TOPICS):
        fee, days, month, limit = _facts(i + len(EN_TOPICS))
        team, site = ZH_TEAMS[i], ZH_SITES[i]
        files[f"zh-{i:02d}.md"] = (
            f"# {t}管理规定\n\n"
            f"{t}的费用为每月{fee}元。"
            f"{t}的申请由{team}小组负责办理。"
            f"{t}的申请会在{days}个工作日内得到答复。"
            f"{site}办公室从{ZH_MONTHS[month]}起提供{t}服务。"
            f"每位员工每年最多可以使用{t}{limit}次。\n"
        )
        questions += enumerate_kinds(
            "zh",
            f"{t}每月的费用是多少？",
            f"{t}的申请由哪个小组负责？",
            f"{t}的申请多少个工作日内答复？",
            f"哪个办公室提供{t}服务？",
            f"每位员工每年最多可以使用几次{t}？",
            f"{t}每个月要交多少元？",
            f"哪个小组办理{t}的申请？",
            f"申请{t}后多久能得到答复？",
            f"{site}办公室从什么时候起提供{t}服务？",
            f"{t}每年的使用次数上限是多少？",
        )
    return Corpus(files, questions)


def enumerate_kinds(lang: str, *questions: str) -> list[tuple[str, str]]:
    return [(f"{lang}-{i}", q) for i, q in enumerate(questions)]


def question_pool(questions: Sequence[tuple[str, str]], needed: int, seed: int = 7) -> list[str]:
    """`needed` distinct questions in a fixed shuffled order, as pairs of one kind (same
    language, same phrasing, different topics): questions 2k and 2k+1 make prompts of about
    the same length, so alternating between two paths gives both the same mix. Numbered
    variants follow once the corpus's own questions run out."""
    rng = random.Random(seed)
    kinds: dict[str, list[str]] = {}
    for kind, q in questions:
        kinds.setdefault(kind, []).append(q)
    pairs: list[tuple[str, str]] = []
    for group in kinds.values():
        rng.shuffle(group)
        pairs += [(group[i], group[i + 1]) for i in range(0, len(group) - 1, 2)]
    rng.shuffle(pairs)
    base = [q for pair in pairs for q in pair]
    pool = list(base)
    round_ = 1
    while len(pool) < needed:
        round_ += 1
        pool += [
            f"{q.rstrip('？')}（第{round_}问）？" if q.endswith("？") else f"{q} (take {round_})"
            for q in base
        ]
    return pool[:needed]


# --- measurements ------------------------------------------------------------------------------


@dataclass
class Sample:
    path: str  # "platform" | "direct"
    question: str
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    excluded: str | None = None  # not_found | blocked | empty (no model output to time)
    server: dict[str, float] = field(default_factory=dict)  # the platform's own timings
    note: str = ""  # why it was excluded, in more words
    counted_tokens: int | None = None  # the streamed text's tokens, by the model's tokenizer


def _tpot(first: float | None, last: float | None, tokens: int | None) -> float | None:
    if first is None or last is None or tokens is None or tokens < 2:
        return None
    return (last - first) * 1000 / (tokens - 1)


async def platform_request(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    library_id: int,
    question: str,
    count: Callable[[str], int],
) -> Sample:
    """One streamed answer. When the platform stops a stream early (a small model repeating
    itself), the server sends no usage: the completion tokens are then counted in the streamed
    text with the model's tokenizer."""
    s = Sample("platform", question)
    body = {"question": question, "stream": True, "library_ids": [library_id]}
    headers = {"Authorization": f"Bearer {token}"}
    first = last = None
    done: dict[str, Any] | None = None
    pieces: list[str] = []
    started = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode("utf-8", "replace")
                s.error = f"HTTP {r.status_code}: {text[:200]}"
                return s
            async for event, data in sse_events(r):
                now = time.perf_counter()
                if event == "token":
                    first = now if first is None else first
                    last = now
                    pieces.append(data["text"])
                elif event == "error":
                    s.error = f"error event: {json.dumps(data, ensure_ascii=False)[:200]}"
                elif event == "done":
                    done = data
    except Exception as exc:  # any failure of a request is an error of its path
        s.error = f"{type(exc).__name__}: {exc}"
        return s
    if s.error is not None:
        return s
    if done is None:
        s.error = "the stream ended without a done event"
        return s
    timings = done.get("timings") or {}
    s.server = {k: float(v) for k, v in timings.items() if isinstance(v, int | float)}
    usage = timings.get("completion_tokens")
    s.completion_tokens = int(usage) if usage is not None else None
    prompt = timings.get("prompt_tokens")
    s.prompt_tokens = int(prompt) if prompt is not None else None
    s.counted_tokens = count("".join(pieces)) if pieces else None
    if done.get("blocked"):
        s.excluded = "blocked"
    elif first is None or (done.get("flags") or {}).get("fallback"):  # no model text to time
        s.excluded = "not_found" if done.get("not_found") else "empty"
    if s.excluded:
        s.note = f"{question!r} → {str(done.get('answer'))[:80]!r}"
    elif first is not None:
        s.ttft_ms = (first - started) * 1000
        s.tpot_ms = _tpot(first, last, s.completion_tokens or s.counted_tokens)
    return s


async def direct_request(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any] | None, question: str
) -> Sample:
    s = Sample("direct", question)
    if payload is None:  # the platform would answer "not found" without the model
        s.excluded = "not_found"
        return s
    first = last = None
    started = time.perf_counter()
    try:
        async with client.stream("POST", url, json=payload) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode("utf-8", "replace")
                s.error = f"HTTP {r.status_code}: {text[:200]}"
                return s
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if chunk.get("error"):
                    s.error = f"error in stream: {str(chunk['error'])[:200]}"
                    return s
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        first = now if first is None else first
                        last = now
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    s.completion_tokens = usage.get("completion_tokens")
                    s.prompt_tokens = usage.get("prompt_tokens")
    except Exception as exc:  # any failure of a request is an error of its path
        s.error = f"{type(exc).__name__}: {exc}"
        return s
    if first is None:
        s.excluded = "empty"
        s.note = f"{question!r}: {s.completion_tokens} tokens, no text (a stop string?)"
        return s
    s.ttft_ms = (first - started) * 1000
    s.tpot_ms = _tpot(first, last, s.completion_tokens)
    return s


async def run_pool(
    items: Sequence[str], concurrency: int, one: Callable[[str], Awaitable[Sample]]
) -> list[Sample]:
    """Run `one` over `items` with `concurrency` workers, each starting its next request as
    soon as its previous one ends; the samples in the order of `items`."""
    todo = list(enumerate(items))[::-1]
    out: dict[int, Sample] = {}

    async def worker() -> None:
        while todo:
            i, item = todo.pop()
            out[i] = await one(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [out[i] for i in range(len(items))]


# --- statistics --------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


def _p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=20, method="inclusive")[18], 1)


def _median_se(values: Sequence[float]) -> float:
    """Standard error of the median, from the median absolute deviation."""
    if len(values) < 2:
        return math.inf
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    return 1.2533 * 1.4826 * mad / math.sqrt(len(values))


def tpot_within_noise(platform: Sequence[float], direct: Sequence[float]) -> bool | None:
    if not platform or not direct:
        return None
    diff = statistics.median(platform) - statistics.median(direct)
    noise = 2 * math.hypot(_median_se(platform), _median_se(direct))
    return diff <= max(noise, TPOT_SHARE * statistics.median(direct))


def summarize(platform: list[Sample], direct: list[Sample]) -> dict[str, Any]:
    def values(samples: list[Sample], key: str) -> list[float]:
        return [v for s in samples if (v := getattr(s, key)) is not None]

    def server(key: str) -> float | None:
        return _median([s.server[key] for s in platform if key in s.server and s.ttft_ms])

    tp, td = values(platform, "ttft_ms"), values(direct, "ttft_ms")
    pp, pd = values(platform, "tpot_ms"), values(direct, "tpot_ms")
    errors_p = sum(s.error is not None for s in platform)
    errors_d = sum(s.error is not None for s in direct)
    mp, md = _median(tp), _median(td)
    # Request j of each path had questions of one kind (language, phrasing) and the same place
    # in its batch: the paired difference is far less noisy than the difference of medians.
    paired = [
        a.ttft_ms - b.ttft_ms
        for a, b in zip(platform, direct, strict=False)
        if a.ttft_ms is not None and b.ttft_ms is not None
    ]
    out: dict[str, Any] = {
        "ttft_ms_platform": mp,
        "ttft_ms_direct": md,
        "tpot_ms_platform": _median(pp),
        "tpot_ms_direct": _median(pd),
        "errors": errors_p + errors_d,
        "errors_platform": errors_p,
        "errors_direct": errors_d,
        "ttft_overhead_ms": round(mp - md, 1) if mp is not None and md is not None else None,
        "ttft_ratio": round(mp / md, 3) if mp is not None and md else None,
        "ttft_overhead_ms_paired": _median(paired),
        "p95": {
            "ttft_ms_platform": _p95(tp),
            "ttft_ms_direct": _p95(td),
            "tpot_ms_platform": _p95(pp),
            "tpot_ms_direct": _p95(pd),
        },
        "n": {
            "platform": len(tp),
            "direct": len(td),
            "tpot_platform": len(pp),
            "tpot_direct": len(pd),
        },
        "excluded": {
            "platform": dict(Counter(s.excluded for s in platform if s.excluded)),
            "direct": dict(Counter(s.excluded for s in direct if s.excluded)),
        },
        "tokens": {  # means where the server reported usage
            "prompt_platform": _mean(values(platform, "prompt_tokens")),
            "prompt_direct": _mean(values(direct, "prompt_tokens")),
            "completion_platform": _mean(values(platform, "completion_tokens")),
            "completion_direct": _mean(values(direct, "completion_tokens")),
        },
        # Where the platform's time to first token goes, by its own clock (medians).
        "platform_server_ms": {
            "retrieval": server("retrieval_ms"),
            "ttft": server("ttft_ms"),
            "total": server("total_ms"),
        },
        "target_ttft": (
            mp <= TTFT_FACTOR * md + TTFT_SLACK_MS if mp is not None and md is not None else None
        ),
        "target_tpot": tpot_within_noise(pp, pd),
    }
    # Platform answers cut short carry no usage: their tokens were counted in the streamed text.
    # How well that count agrees with the usage where both are known:
    both = [
        s.counted_tokens / s.completion_tokens
        for s in platform
        if s.counted_tokens and s.completion_tokens
    ]
    out["n"]["tpot_platform_counted"] = sum(
        s.tpot_ms is not None and s.completion_tokens is None for s in platform
    )
    out["tokens"]["counted_vs_usage"] = round(statistics.median(both), 3) if both else None
    first_errors = [f"{s.path}: {s.error}" for s in platform + direct if s.error][:3]
    if first_errors:
        out["error_examples"] = first_errors
    notes = [f"{s.path}: {s.excluded}: {s.note}" for s in platform + direct if s.excluded]
    if notes:
        out["excluded_examples"] = notes[:5]
    return out


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class MainModel:
    base_urls: tuple[str, ...]
    model: str
    api_key: str | None
    context_window: int
    tokenizer: str


@contextlib.contextmanager
def main_model(base: Settings, log_dir: Path, quiet: bool) -> Iterator[MainModel]:
    """The configured main endpoint if it answers, else a vLLM server started (and, at the
    end, stopped) here on the prepared default model."""
    from cli.models import MAIN_NAME, default_model_dir, run_prepare
    from serving import model_server
    from serving.endpoints import endpoint
    from serving.model_prep import MARKER

    ep = endpoint(base, "main")
    if ep.config is not None:
        up = tuple(u for u in ep.config.base_urls if model_server.answers(u, ep.config.api_key))
        if up:
            err.print(f"model server: {', '.join(up)} ({ep.config.model})")
            yield MainModel(
                up, ep.config.model, ep.config.api_key, ep.context_window, ep.tokenizer_dir
            )
            return
        urls = ", ".join(ep.config.base_urls)
        err.print(f"the configured model server ({urls}) does not answer; starting one")
    model_dir = default_model_dir(base)
    if not (model_dir / MARKER).is_file():
        run_prepare(model_dir, None, "w4a16", False, quiet=quiet)
    spec = model_server.ServerSpec(model_dir, MAIN_NAME, free_port(), max_model_len=4096)
    err.print(f"starting vLLM on {spec.base_url} ({model_dir})")
    server = model_server.launch(spec, log_dir)
    try:
        model_server.wait_ready(server, timeout=900)
        yield MainModel((spec.base_url,), MAIN_NAME, None, spec.max_model_len, str(model_dir))
    finally:
        model_server.stop(server)


@contextlib.contextmanager
def api_server(env: dict[str, str], log: Path, timeout: float = 180.0) -> Iterator[str]:
    """`zhiku serve` in a subprocess; its base URL once /healthz answers."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the api server exited ({proc.returncode}):\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the api server did not start in {timeout:.0f} s:\n{_tail(log)}"
                )
            time.sleep(0.3)
        yield url
    finally:
        stop_group(proc, grace=30)


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a process started in its own process group (SIGTERM, SIGKILL after `grace`)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a server-sent event stream from the chat api."""
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


def keep_logs(root: Path, out: Path | None, prefix: str) -> list[Path]:
    """The scratch dir goes away: copy its api and model server logs next to the result
    (`out`'s directory, or the current one) as `<prefix>-<name>`."""
    dest = out.parent if out else Path.cwd()
    kept: list[Path] = []
    for log in [root / "api.log", *sorted((root / "logs").glob("*.log"))]:
        if log.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / f"{prefix}-{log.name}"
            shutil.copyfile(log, target)
            kept.append(target)
    return kept


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the direct path's prompts -----------------------------------------------------------------


class DirectPrompts:
    """Builds the request the platform would send the model for a question."""

    def __init__(self, settings: Settings) -> None:
        from retrieval.service import Retriever
        from serving.endpoints import endpoint
        from serving.prompts import heuristic_token_count, tokenizer_counter

        self.settings = settings
        self.main = endpoint(settings, "main")
        assert self.main.config is not None
        self.count = (
            tokenizer_counter(self.main.tokenizer_dir) if self.main.tokenizer_dir else None
        ) or heuristic_token_count
        self.retriever = Retriever(settings)

    def payload(self, question: str, library_ids: list[int]) -> dict[str, Any] | None:
        from sqlmodel import Session

        from core import db
        from core.language import text_language
        from serving.evidence import relevant_passages
        from serving.prompts import STOP, build_prompt

        s = self.settings
        question = question.strip()
        with Session(db.get_engine(s), expire_on_commit=False) as session:
            found = self.retriever.search(
                session, question, library_ids, top_k=s.answer_passages, rerank=False
            ).passages
        relevant = relevant_passages(question, found)
        if not relevant:
            return None
        prompt = build_prompt(
            question,
            relevant,
            lang=text_language(question),
            history=[],
            count=self.count,
            context_window=self.main.context_window,
            max_answer_tokens=s.answer_max_tokens,
        )
        assert self.main.config is not None
        return {
            "model": self.main.config.model,
            "messages": prompt.messages,
            "max_tokens": s.answer_max_tokens,
            "temperature": s.answer_temperature,
            "stop": STOP,
            "stream": True,
            "stream_options": {"include_usage": True},
        }


# --- the command -------------------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter("--concurrency takes numbers like 1,4,16") from None
    if not levels or any(c < 1 for c in levels):
        raise typer.BadParameter("--concurrency takes positive numbers like 1,4,16")
    return levels


def bench_chat(
    concurrency: str = typer.Option(
        "1,4,16", "--concurrency", help="Concurrent streams per level, comma-separated"
    ),
    requests: int = typer.Option(
        0, "--requests", help="Requests per path per level (default: max(2 × level, 8))"
    ),
    max_tokens: int = typer.Option(
        64, "--max-tokens", help="Answer tokens (ZHIKU_ANSWER_MAX_TOKENS), same for both paths"
    ),
    as_json: bool = typer.Option(False, "--json"),
    out: Path | None = typer.Option(None, "--out", help="Also write the result here (JSON)"),
) -> None:
    """TTFT and TPOT through POST /api/v1/chat (streamed) against the bare model server, at
    each concurrency level, in one run."""
    levels = parse_levels(concurrency)
    if requests < 0 or max_tokens < 2:
        raise typer.BadParameter("--requests must be ≥ 0 and --max-tokens ≥ 2")
    counts = [requests or max(2 * c, 8) for c in levels]
    base = get_settings()
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-chat-") as tmp:
        root = Path(tmp)
        try:
            with main_model(base, root / "logs", as_json) as model:
                results = _run(base, root, model, levels, counts, max_tokens)
        except (RuntimeError, TimeoutError, FileNotFoundError, httpx.HTTPError) as exc:
            err.print(f"bench chat failed: {exc}", style="red")
            for kept in keep_logs(root, out, "chat"):
                err.print(f"kept {kept}", style="yellow")
            raise typer.Exit(1) from None
    verdict = _verdict(results, levels)
    if out is not None:
        from cli.bench_report import write_result

        params = {"concurrency": levels, "requests": counts, "max_tokens": max_tokens}
        write_result(out, "chat", params, {str(c): r for c, r in results.items()})
    if as_json:
        typer.echo(json.dumps({str(c): r for c, r in results.items()}, ensure_ascii=False))
        for line in verdict:
            err.print(line)
    else:
        _table(results)
        for line in verdict:
            typer.echo(line)


def _run(
    base: Settings,
    root: Path,
    model: MainModel,
    levels: list[int],
    counts: list[int],
    max_tokens: int,
) -> dict[int, dict[str, Any]]:
    from cli.ingest_cmd import ingest_paths
    from core import db
    from core.models import Role
    from core.repo import users

    data_dir = root / "data"
    data_dir.mkdir()
    db_url = f"sqlite:///{data_dir / 'bench.db'}"
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db_url,
        "main_base_urls": ",".join(model.base_urls),
        "main_model": model.model,
        "main_api_key": model.api_key,
        "main_context_window": model.context_window,
        "main_tokenizer": model.tokenizer,
        "answer_max_tokens": max_tokens,
    }
    settings = base.model_copy(update=overrides)
    env = dict(os.environ)
    env.update(
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        ZHIKU_DATA_DIR=str(data_dir),
        ZHIKU_DATABASE_URL=db_url,
        ZHIKU_MAIN_BASE_URLS=overrides["main_base_urls"],
        ZHIKU_MAIN_MODEL=model.model,
        ZHIKU_MAIN_CONTEXT_WINDOW=str(model.context_window),
        ZHIKU_MAIN_TOKENIZER=model.tokenizer,
        ZHIKU_ANSWER_MAX_TOKENS=str(max_tokens),
        # the benchmark is one user asking in bursts; per-user limits would measure 429s
        ZHIKU_RATE_LIMIT_PER_MINUTE="1000000",
        ZHIKU_RATE_LIMIT_CHAT_PER_MINUTE="1000000",
    )
    if model.api_key:
        env["ZHIKU_MAIN_API_KEY"] = model.api_key

    corpus = make_corpus()
    docs = root / "corpus"
    docs.mkdir()
    for name, text in corpus.files.items():
        (docs / name).write_text(text, encoding="utf-8")
    db.migrate(settings)
    err.print(f"ingesting {len(corpus.files)} documents into a scratch library …")
    summary = ingest_paths(settings, [docs], LIBRARY, True, True, True, 0)
    if summary.failures:
        raise RuntimeError(f"ingestion failed: {summary.failures}")
    password = secrets.token_urlsafe(24)
    with db.session_scope(settings) as session:
        users.create_user(session, BENCH_USER, password, role=Role.admin)
    err.print("loading the retriever for the direct path …")
    prompts = DirectPrompts(settings)

    pool = question_pool(corpus.questions, 2 * sum(counts) + WARMUP)
    warm, pool = pool[:WARMUP], pool[WARMUP:]
    # The direct path's prompts are built before anything is timed.
    direct_payloads = {q: prompts.payload(q, [summary.library_id]) for q in pool[1::2] + warm}

    err.print("starting the api server …")
    try:
        with api_server(env, root / "api.log") as api:
            r = httpx.post(
                f"{api}{API_PREFIX}/auth/login",
                json={"username": BENCH_USER, "password": password},
                timeout=30,
            )
            r.raise_for_status()
            plan = Plan(
                api=api,
                token=str(r.json()["access_token"]),
                library_id=summary.library_id,
                model=model,
                levels=levels,
                counts=counts,
                pool=pool,
                warm=warm,
                payloads=direct_payloads,
                count=prompts.count,
            )
            return asyncio.run(_measure(plan))
    finally:
        db.dispose_engines()


@dataclass(frozen=True)
class Plan:
    api: str
    token: str
    library_id: int
    model: MainModel
    levels: list[int]
    counts: list[int]  # requests per path, per level
    pool: list[str]  # the measured questions, alternately for the two paths
    warm: list[str]
    payloads: dict[str, dict[str, Any] | None]  # the direct path's requests
    count: Callable[[str], int]  # the model's tokenizer


async def _measure(plan: Plan) -> dict[int, dict[str, Any]]:
    model, levels, warm, pool = plan.model, plan.levels, plan.warm, plan.pool
    chat_url = f"{plan.api}{API_PREFIX}/chat"
    top = max(levels)
    timeout = httpx.Timeout(300.0, connect=10.0)
    limits = httpx.Limits(max_connections=top + 4, max_keepalive_connections=top + 4)
    headers = {"Authorization": f"Bearer {model.api_key}"} if model.api_key else {}
    rr = iter(range(1 << 62))

    async with (
        httpx.AsyncClient(timeout=timeout, limits=limits) as pclient,
        httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers) as dclient,
    ):

        async def platform(q: str) -> Sample:
            return await platform_request(
                pclient, chat_url, plan.token, plan.library_id, q, plan.count
            )

        async def direct(q: str) -> Sample:
            url = model.base_urls[next(rr) % len(model.base_urls)] + "/chat/completions"
            return await direct_request(dclient, url, plan.payloads[q], q)

        # Warm-up, not counted: loads the api's retriever, safety classifier and model client.
        # Its first four questions go to both paths: the same prompts must reach the model.
        err.print("warming up …")
        checked = [(await platform(q), await direct(q)) for q in warm[:4]]
        rest = warm[4:]
        half = len(rest) // 2
        warmed = await run_pool(rest[:half], half, platform)
        warmed += await run_pool(rest[half:], len(rest) - half, direct)
        failed = [s.error for s in [*(x for pair in checked for x in pair), *warmed] if s.error]
        if failed:
            raise RuntimeError(f"warm-up failed: {failed[0]}")
        compared = [(p, d) for p, d in checked if p.prompt_tokens and d.prompt_tokens]
        differ = [
            (p.prompt_tokens, d.prompt_tokens)
            for p, d in compared
            if p.prompt_tokens != d.prompt_tokens
        ]
        if differ:
            err.print(
                f"warning: prompt tokens platform/direct {differ}: the direct path does not "
                "send the platform's prompt",
                style="yellow",
            )
        elif compared:
            tokens = ", ".join(str(p.prompt_tokens) for p, _ in compared)
            err.print(f"same prompts on both paths ({tokens} tokens)")
        else:
            err.print("prompts not compared: the platform reported no usage (answers cut short)")

        results: dict[int, dict[str, Any]] = {}
        at = 0
        for i, (c, n) in enumerate(zip(levels, plan.counts, strict=True)):
            chunk, at = pool[at : at + 2 * n], at + 2 * n
            mine = {"platform": chunk[0::2], "direct": chunk[1::2]}
            samples: dict[str, list[Sample]] = {}
            order = ("platform", "direct") if i % 2 == 0 else ("direct", "platform")
            for path in order:
                err.print(f"c={c}: {n} {path} requests …")
                started = time.perf_counter()
                samples[path] = await run_pool(
                    mine[path], c, platform if path == "platform" else direct
                )
                err.print(f"c={c}: {path} done in {time.perf_counter() - started:.1f} s")
            results[c] = summarize(samples["platform"], samples["direct"])
            results[c]["first"] = order[0]
        return results


def _fmt(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _table(results: dict[int, dict[str, Any]]) -> None:
    table = Table(
        title="Chat streaming, medians in ms: platform (POST /api/v1/chat) vs direct (vLLM)"
    )
    columns = "c|n p/d|TTFT platform|TTFT direct|overhead|paired|ratio|TPOT platform|TPOT direct"
    for name in [*columns.split("|"), "errors p/d", "excluded p/d"]:
        table.add_column(name, justify="right")
    for c, r in results.items():
        ex = r["excluded"]
        table.add_row(
            str(c),
            f"{r['n']['platform']}/{r['n']['direct']}",
            _fmt(r["ttft_ms_platform"]),
            _fmt(r["ttft_ms_direct"]),
            _fmt(r["ttft_overhead_ms"]),
            _fmt(r["ttft_overhead_ms_paired"]),
            _fmt(r["ttft_ratio"], 2),
            _fmt(r["tpot_ms_platform"], 1),
            _fmt(r["tpot_ms_direct"], 1),
            f"{r['errors_platform']}/{r['errors_direct']}",
            f"{sum(ex['platform'].values())}/{sum(ex['direct'].values())}",
        )
    out = Console(highlight=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=120)
    out.print(table)
    typer.echo(
        "overhead = TTFT platform − direct (medians); paired = median of the differences "
        "between requests j of the two paths (same language and phrasing, same batch position)"
    )
    for c, r in results.items():
        srv, p95, tok = r["platform_server_ms"], r["p95"], r["tokens"]
        typer.echo(
            f"c={c}: p95 TTFT {_fmt(p95['ttft_ms_platform'])}/{_fmt(p95['ttft_ms_direct'])} ms, "
            f"p95 TPOT {_fmt(p95['tpot_ms_platform'], 1)}/{_fmt(p95['tpot_ms_direct'], 1)} ms; "
            f"platform's own clock: retrieval {_fmt(srv['retrieval'])} ms, first token "
            f"{_fmt(srv['ttft'])} ms; prompt tokens {_fmt(tok['prompt_platform'])}/"
            f"{_fmt(tok['prompt_direct'])}, completion {_fmt(tok['completion_platform'])}/"
            f"{_fmt(tok['completion_direct'])}; {r['first']} first"
        )
        if r["n"]["tpot_platform_counted"]:
            typer.echo(
                f"  {r['n']['tpot_platform_counted']} platform answers were cut short (no usage): "
                f"their tokens were counted in the text (count/usage where both known: "
                f"{_fmt(tok['counted_vs_usage'], 3)})"
            )
        for e in r.get("error_examples", []):
            typer.echo(f"  error: {e}")
        for e in r.get("excluded_examples", []):
            typer.echo(f"  excluded: {e}")


def _verdict(results: dict[int, dict[str, Any]], levels: list[int]) -> list[str]:
    lines = []
    ok = True
    for c, r in results.items():
        ttft, tpot = r["target_ttft"], r["target_tpot"]
        ok = ok and bool(ttft) and bool(tpot)
        lines.append(
            f"c={c}: TTFT {_fmt(r['ttft_ms_platform'])} ≤ {TTFT_FACTOR} × "
            f"{_fmt(r['ttft_ms_direct'])} + {TTFT_SLACK_MS:.0f} ms: "
            f"{'yes' if ttft else 'NO'}; TPOT within noise: {'yes' if tpot else 'NO'}"
        )
    at = 16 if 16 in results else max(levels)
    errors = results[at]["errors"]
    ok = ok and errors == 0
    lines.append(f"errors at c={at}: {errors}")
    lines.append(f"target {'holds' if ok else 'does NOT hold'}")
    return lines
