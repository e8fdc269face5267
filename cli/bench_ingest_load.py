"""`zhiku bench load-ingest`: a library of many small documents uploaded through the api.

The deployment: a scratch data dir, a database (SQLite in the data dir, or with `--database
postgresql` a scratch database on the PostgreSQL server at ZHIKU_BENCH_PG_URL, dropped at the
end), a private Redis (`redis-server` on a free port: the Celery broker and the rate limits), the
api as a real uvicorn server and one real Celery worker process (`zhiku worker`) with
`--worker-concurrency` pool processes. Nothing of the set-up is timed.

The documents are generated (deterministic, all distinct): short policies, FAQs, meeting notes
and tables, half Chinese and half English, as Markdown, plain text, HTML, Word (.docx) and CSV.
They are uploaded as a customer's script would: multipart requests of `--batch` files, at most
`--uploaders` requests at a time, by an admin of a fresh library; the rate limits stay at the
product's defaults.

Measured: upload request latency (client clock); time from upload to ready per document (the
document's `created_at`, committed before the 202, to its `updated_at` when it became ready:
both the server's clock); throughput from the first upload request to the last document ready
(client clock); the failures with their reasons; then hybrid search latency (POST
/api/v1/search, client clock, one query at a time) on the finished library.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import typer

from cli import bench_chat
from cli.bench_chat import API_PREFIX, err
from cli.bench_load import deployment_env, login, percentile, private_redis
from cli.bench_report import write_result
from core.settings import Settings, get_settings

ADMIN = "bench-admin"
LIBRARY = "bench-load-ingest"
SEARCH_WARMUP = 6
PG_URL = os.environ.get(
    "ZHIKU_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# --- the documents -----------------------------------------------------------------------------

EN_SUBJECTS = [
    "expense claims", "travel booking", "laptop refresh", "visitor access", "data retention",
    "password resets", "printer setup", "holiday requests", "onboarding", "office moves",
    "contract review", "supplier payments", "safety drills", "parking", "training budgets",
    "remote work", "equipment loans", "meeting rooms", "software requests", "badge access",
]  # fmt: skip
ZH_SUBJECTS = [
    "报销流程", "差旅预订", "电脑更换", "访客登记", "数据保留", "密码重置", "打印机设置",
    "休假申请", "新员工入职", "办公室搬迁", "合同审核", "供应商付款", "消防演练", "停车管理",
    "培训预算", "远程办公", "设备借用", "会议室预约", "软件申请", "门禁卡",
]  # fmt: skip
EN_DEPTS = ["Finance", "IT", "HR", "Facilities", "Legal", "Procurement", "Security", "Admin"]
ZH_DEPTS = ["财务部", "信息技术部", "人力资源部", "行政部", "法务部", "采购部", "安全部", "综合办"]
FORMATS = (("md", 40), ("txt", 25), ("html", 20), ("docx", 10), ("csv", 5))


@dataclass(frozen=True)
class GeneratedDoc:
    name: str  # folder/file.ext
    data: bytes
    media_type: str


def _pick_format(rng: random.Random) -> str:
    return rng.choices([f for f, _ in FORMATS], weights=[w for _, w in FORMATS])[0]


def _en_paragraphs(i: int, rng: random.Random) -> tuple[str, list[str], list[list[str]]]:
    subject, dept = rng.choice(EN_SUBJECTS), rng.choice(EN_DEPTS)
    days, amount, ref = rng.randint(2, 30), rng.randint(50, 5000), f"EN-{i:05d}"
    title = f"{subject.capitalize()} guideline {ref}"
    paras = [
        f"This guideline ({ref}) explains how {subject} work for staff at site "
        f"{rng.randint(1, 60)}. Requests are handled by the {dept} team within {days} working "
        "days of receipt.",
        f"Amounts up to {amount} yuan are approved by the line manager; larger amounts need the "
        f"approval of the {dept} director. Keep every receipt for {rng.randint(1, 10)} years.",
        f"Questions about {subject} go to the {dept} service desk, extension "
        f"{rng.randint(1000, 9999)}. The desk is open from {rng.randint(7, 10)} am to "
        f"{rng.randint(4, 7)} pm on working days.",
    ][: rng.randint(1, 3)]
    table = [
        ["Item", "Limit (yuan)", "Approver"],
        *[[f"{subject} item {k}", str(amount * k), dept] for k in range(1, rng.randint(3, 6))],
    ]
    return title, paras, table


def _zh_paragraphs(i: int, rng: random.Random) -> tuple[str, list[str], list[list[str]]]:
    subject, dept = rng.choice(ZH_SUBJECTS), rng.choice(ZH_DEPTS)
    days, amount, ref = rng.randint(2, 30), rng.randint(50, 5000), f"ZH-{i:05d}"
    title = f"{subject}管理办法（{ref}）"
    paras = [
        f"本办法（编号{ref}）说明第{rng.randint(1, 60)}号园区员工办理{subject}的要求。"
        f"申请由{dept}负责受理，在收到后{days}个工作日内办结。",
        f"金额在{amount}元以内的由直属经理审批；超过该金额的须经{dept}负责人批准。"
        f"所有凭证须保存{rng.randint(1, 10)}年。",
        f"有关{subject}的问题请联系{dept}服务台，分机{rng.randint(1000, 9999)}。"
        f"服务时间为工作日上午{rng.randint(7, 10)}点至下午{rng.randint(4, 7)}点。",
    ][: rng.randint(1, 3)]
    table = [
        ["项目", "限额（元）", "审批人"],
        *[[f"{subject}第{k}项", str(amount * k), dept] for k in range(1, rng.randint(3, 6))],
    ]
    return title, paras, table


def _docx(title: str, paras: list[str], table: list[list[str]]) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading(title, level=1)
    for p in paras:
        d.add_paragraph(p)
    t = d.add_table(rows=len(table), cols=len(table[0]))
    for r, row in enumerate(table):
        for c, cell in enumerate(row):
            t.cell(r, c).text = cell
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def make_document(i: int, seed: int = 11) -> GeneratedDoc:
    """Document number i of the generated library: the same bytes on every call."""
    rng = random.Random(seed * 1_000_003 + i)
    zh = i % 2 == 1
    title, paras, table = (_zh_paragraphs if zh else _en_paragraphs)(i, rng)
    fmt = _pick_format(rng)
    folder = f"{'zh' if zh else 'en'}/{i // 1000:02d}"
    stem = f"{folder}/doc-{i:05d}"
    if fmt == "md":
        rows = ["| " + " | ".join(r) + " |" for r in table]
        rows.insert(1, "|" + "---|" * len(table[0]))
        text = f"# {title}\n\n" + "\n\n".join(paras) + "\n\n" + "\n".join(rows) + "\n"
        return GeneratedDoc(f"{stem}.md", text.encode(), "text/markdown")
    if fmt == "txt":
        text = f"{title}\n\n" + "\n\n".join(paras) + "\n"
        return GeneratedDoc(f"{stem}.txt", text.encode(), "text/plain")
    if fmt == "html":
        cells = "".join(
            "<tr>" + "".join(f"<td>{_html_escape(c)}</td>" for c in r) + "</tr>" for r in table
        )
        body = "".join(f"<p>{_html_escape(p)}</p>" for p in paras)
        lang = "zh" if zh else "en"
        text = (
            f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
            f"<title>{_html_escape(title)}</title></head><body><h1>{_html_escape(title)}</h1>"
            f"{body}<table>{cells}</table></body></html>"
        )
        return GeneratedDoc(f"{stem}.html", text.encode(), "text/html")
    if fmt == "docx":
        media = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        return GeneratedDoc(f"{stem}.docx", _docx(title, paras, table), media)
    lines = [",".join(r) for r in table]
    return GeneratedDoc(f"{stem}.csv", ("\n".join(lines) + "\n").encode(), "text/csv")


def search_queries(count: int, seed: int = 5) -> list[str]:
    """Questions a user might ask of the generated library, half Chinese, half English."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        if k % 2:
            s, d = rng.choice(ZH_SUBJECTS), rng.choice(ZH_DEPTS)
            out.append(
                rng.choice([f"{s}由哪个部门受理？", f"{d}的{s}审批限额是多少", f"{s} 凭证保存几年"])
            )
        else:
            s, d = rng.choice(EN_SUBJECTS), rng.choice(EN_DEPTS)
            out.append(
                rng.choice(
                    [
                        f"Who handles {s}?",
                        f"approval limit for {s} at {d}",
                        f"How long must receipts for {s} be kept?",
                    ]
                )
            )
    return out


# --- processes ---------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(kind: str, data_dir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{data_dir / 'bench.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"zhiku_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        from core import db

        db.dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def worker_process(
    env: dict[str, str], concurrency: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`zhiku worker` (Celery, prefork pool of `concurrency` processes) until it says ready."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--concurrency", str(concurrency)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while b" ready." not in log.read_bytes():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the worker exited ({proc.returncode}):\n{bench_chat._tail(log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start in 300 s:\n{bench_chat._tail(log)}")
            time.sleep(0.3)
        yield proc
    finally:
        bench_chat.stop_group(proc, grace=60)


# --- the command -------------------------------------------------------------------------------


def load_ingest(
    docs: int = typer.Option(10_000, "--docs", help="Documents to generate and upload"),
    batch: int = typer.Option(100, "--batch", help="Files per upload request"),
    uploaders: int = typer.Option(2, "--uploaders", help="Upload requests at a time"),
    worker_concurrency: int = typer.Option(
        1, "--worker-concurrency", help="Pool processes of the one Celery worker"
    ),
    database: str = typer.Option("sqlite", "--database", help="sqlite | postgresql"),
    queries: int = typer.Option(50, "--queries", help="Timed searches on the finished library"),
    timeout: float = typer.Option(
        4 * 3600.0, "--timeout", help="Longest wait for every document to be done, seconds"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
    out: Path | None = typer.Option(None, "--out", help="Also write the result here"),
) -> None:
    """Generate DOCS small documents (zh/en; md, txt, html, docx, csv), upload them through the
    api into one library with a real Celery worker, wait until all are done: errors with
    reasons, docs/s and chunks/s, p95 upload latency and upload-to-ready time, search latency."""
    if docs < 1 or batch < 1 or uploaders < 1 or worker_concurrency < 1 or queries < 0:
        raise typer.BadParameter("--docs, --batch, --uploaders, --worker-concurrency must be ≥ 1")
    if database not in ("sqlite", "postgresql"):
        raise typer.BadParameter("--database is sqlite or postgresql")
    base = get_settings()
    params = {
        "docs": docs,
        "batch": batch,
        "uploaders": uploaders,
        "worker_concurrency": worker_concurrency,
        "database": database,
        "queries": queries,
    }
    with tempfile.TemporaryDirectory(prefix="zhiku-bench-load-ingest-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        data_dir.mkdir()
        try:
            with (
                private_redis(root / "redis") as redis_url,
                scratch_database(database, data_dir) as db_url,
            ):
                settings = base.model_copy(
                    update={"data_dir": data_dir, "database_url": db_url, "redis_url": redis_url}
                )
                result = _run(settings, root, params, timeout)
        except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
            err.print(f"bench load-ingest failed: {exc}", style="red")
            raise typer.Exit(1) from None
    if out is not None:
        write_result(out, "load-ingest", params, result)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>22}: {value}")


def _run(settings: Settings, root: Path, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    from core import db
    from core.models import Role
    from core.repo import users

    n = int(params["docs"])
    err.print(f"generating {n:,} documents …")
    generated = [make_document(i) for i in range(n)]
    kinds = Counter(d.name.rsplit(".", 1)[1] for d in generated)
    try:
        db.migrate(settings)
        password = secrets.token_urlsafe(24)
        with db.session_scope(settings) as session:
            users.create_user(session, ADMIN, password, role=Role.admin)
    finally:
        db.dispose_engines()
    env = deployment_env(settings, None)
    err.print("starting the api server and the worker …")
    with (
        bench_chat.api_server(env, root / "api.log") as api,
        worker_process(env, int(params["worker_concurrency"]), root / "worker.log") as worker,
    ):
        token = login(api, ADMIN, password)
        result = asyncio.run(_measure(api, token, generated, params, timeout, worker))
    result["formats"] = dict(kinds)
    result["workers"] = 1
    result["worker_concurrency"] = params["worker_concurrency"]
    result["database"] = params["database"]
    return result


async def _measure(
    api: str,
    token: str,
    generated: list[GeneratedDoc],
    params: dict[str, Any],
    timeout: float,
    worker: subprocess.Popen[bytes],
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    batch, uploaders = int(params["batch"]), int(params["uploaders"])
    async with httpx.AsyncClient(
        base_url=f"{api}{API_PREFIX}", headers=headers, timeout=httpx.Timeout(600.0, connect=30.0)
    ) as client:
        r = await client.post("/libraries", json={"name": LIBRARY})
        r.raise_for_status()
        library_id = int(r.json()["id"])

        batches = [generated[i : i + batch] for i in range(0, len(generated), batch)]
        upload_ms: list[float] = []
        upload_errors: list[str] = []
        rejected: list[dict[str, str]] = []
        queued = duplicates = 0
        slots = asyncio.Semaphore(uploaders)
        started = time.perf_counter()

        async def upload(part: list[GeneratedDoc]) -> None:
            nonlocal queued, duplicates
            files = [("files", (d.name, d.data, d.media_type)) for d in part]
            async with slots:
                t0 = time.perf_counter()
                try:
                    resp = await client.post(f"/libraries/{library_id}/documents", files=files)
                except httpx.HTTPError as exc:
                    upload_errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    return
                upload_ms.append((time.perf_counter() - t0) * 1000)
            if resp.status_code != 202:
                upload_errors.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            report = resp.json()
            queued += int(report["queued"])
            duplicates += int(report["duplicates"])
            rejected.extend(
                {"file": i["file"], "reason": i.get("reason") or ""}
                for i in report["items"]
                if i["status"] == "rejected"
            )
            err.print(
                f"[{time.perf_counter() - started:7.1f} s] uploaded {queued + len(rejected):,}"
                f"/{len(generated):,} ({len(upload_errors)} failed requests)"
            )

        err.print(
            f"uploading in {len(batches)} requests of ≤{batch} files, {uploaders} at a time …"
        )
        await asyncio.gather(*(upload(b) for b in batches))
        uploaded_s = time.perf_counter() - started

        # Wait until every queued document is ready or failed.
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        last = ""
        while True:
            r = await client.get(f"/libraries/{library_id}")
            if r.status_code == 200:
                counts = {k: int(v) for k, v in r.json().get("documents", {}).items()}
            finished = counts.get("ready", 0) + counts.get("failed", 0)
            line = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
            if line != last:
                rate = counts.get("ready", 0) / (time.perf_counter() - started)
                err.print(f"[{time.perf_counter() - started:7.1f} s] {line} ({rate:.2f} docs/s)")
                last = line
            if finished >= queued:
                break
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}) with {line}")
            if time.monotonic() > deadline:
                err.print(f"timed out after {timeout:.0f} s waiting for the documents", style="red")
                break
            await asyncio.sleep(2.0)
        done_s = time.perf_counter() - started

        docs = await _all_documents(client, library_id)
        ready = [d for d in docs if d["status"] == "ready"]
        failed = [d for d in docs if d["status"] == "failed"]
        ready_s = [(_time(d["updated_at"]) - _time(d["created_at"])) for d in ready]
        chunks = sum(int(d["chunk_count"]) for d in ready)
        # first upload committed → first document ready (server clock): the worker's start-up
        first_ready_s = (
            round(
                min(_time(d["updated_at"]) for d in ready)
                - min(_time(d["created_at"]) for d in docs),
                1,
            )
            if ready
            else None
        )

        search_ms: list[float] = []
        search_errors: list[str] = []
        qs = search_queries(int(params["queries"]) + SEARCH_WARMUP)
        if int(params["queries"]):
            err.print(f"timing {params['queries']} searches on the library …")
        for k, q in enumerate(qs if int(params["queries"]) else []):
            t0 = time.perf_counter()
            r = await client.post("/search", json={"query": q, "library_ids": [library_id]})
            ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                search_errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
            elif k >= SEARCH_WARMUP:  # the first ones load the index, encoders, reranker
                search_ms.append(ms)

    return {
        "documents": len(generated),
        "queued": queued,
        "duplicates": duplicates,
        "rejected": len(rejected),
        "upload_requests": len(batches),
        "upload_errors": len(upload_errors),
        "ready": len(ready),
        "failed_documents": len(failed),
        "not_ready": queued - len(ready) - len(failed),
        "errors": len(upload_errors) + len(rejected) + (queued - len(ready)) + len(search_errors),
        "chunks": chunks,
        "upload_s": round(uploaded_s, 1),
        "first_ready_s": first_ready_s,
        "seconds": round(done_s, 1),
        "docs_per_s": round(len(ready) / done_s, 3) if done_s else None,
        "chunks_per_s": round(chunks / done_s, 2) if done_s else None,
        "upload_ms_p50": percentile(upload_ms, 50, 0),
        "upload_ms_p95": percentile(upload_ms, 95, 0),
        "ready_s_p50": percentile(ready_s, 50),
        "ready_s_p95": percentile(ready_s, 95),
        "ready_s_max": percentile(ready_s, 100),
        "search_ms_p50": percentile(search_ms, 50),
        "search_ms_p95": percentile(search_ms, 95),
        "search_errors": len(search_errors),
        "failures": [
            {"file": f"{d['folder']}/{d['filename']}".lstrip("/"), "reason": d.get("reason") or ""}
            for d in failed
        ][:20]
        + [{"file": x["file"], "reason": f"rejected: {x['reason']}"} for x in rejected][:20],
        "error_examples": (upload_errors + search_errors)[:5],
    }


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def _all_documents(client: httpx.AsyncClient, library_id: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    offset = 0
    while True:
        r = await client.get(
            f"/libraries/{library_id}/documents", params={"offset": offset, "limit": 1000}
        )
        r.raise_for_status()
        page = r.json()
        out += page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= int(page["total"]):
            return out
