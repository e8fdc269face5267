"""Prometheus metrics of the api process, served at GET /metrics (text format 0.0.4).

Recorded as things happen: request latency by route template, method and status class;
error responses by status and code; answers (time to first token, tokens per second,
outcomes, safety blocks by stage and layer, failures by code); retrieval latency. Read at
scrape time, so they are right whichever process did the work: the ingest queue's depth (from
Redis) and documents by status and indexed chunks (from the database), with counters of
documents and chunks that reached `ready` for `rate()`. A part that cannot be read (Redis
down) is left out and reported by `zhiku_scrape_part_up{part}` = 0 and
`zhiku_scrape_errors_total{part}`; the scrape itself still answers.

Who may read it: administrators (signed in) and API keys with the `metrics` scope whose owner
is an administrator (docs/observability.md, ADR 0010).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api import errors
from api.deps import authenticate
from api.request_context import Exchange
from api.system_status import queue_status
from core import access, db, tasks
from core.access import Principal
from core.errors import Forbidden
from core.models import DocStatus
from core.repo import documents as documents_repo
from core.settings import Settings
from serving.answering import AnswerResult

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_SCOPE = "metrics"
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TTFT_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60)
TPS_BUCKETS = (1, 2.5, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500)
RETRIEVAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class StateCollector(Collector):
    """What other processes did, read when Prometheus scrapes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._errors: dict[str, int] = {"redis": 0, "database": 0}
        # Counters of documents and chunks that reached `ready`: the rises of the database's
        # totals between scrapes, added up since this process's first scrape (a deletion is
        # not an ingestion; a restart starts again at 0, which Prometheus reads as a reset).
        self._last_ready: tuple[int, int] | None = None
        self._ingested = [0, 0]

    def describe(self) -> Iterable[Metric]:
        return []  # no collect() at registration: that would reach Redis and the database

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "zhiku_scrape_part_up",
            "1 when this part of the scrape could be read (redis: queue; database: documents)",
            labels=["part"],
        )
        started = time.perf_counter()
        try:
            queue = queue_status(self.settings)
        except Exception as exc:
            self._errors["redis"] += 1
            up.add_metric(["redis"], 0)
            log.warning("metrics: the ingest queue could not be read: %s", exc)
        else:
            up.add_metric(["redis"], 1)
            depth = GaugeMetricFamily(
                "zhiku_ingest_queue_depth",
                "Ingest tasks waiting in the queue",
                labels=["queue"],
            )
            depth.add_metric([tasks.INGEST_QUEUE], queue.depth or 0)
            yield depth
            yield GaugeMetricFamily(
                "zhiku_ingest_queue_unacked",
                "Tasks taken by a worker and not finished yet (all queues)",
                value=queue.unacked or 0,
            )
        try:
            with db.session_scope(self.settings) as session:
                counts = documents_repo.totals_by_status(session)
        except Exception as exc:
            self._errors["database"] += 1
            up.add_metric(["database"], 0)
            log.warning("metrics: documents could not be counted: %s", exc)
        else:
            up.add_metric(["database"], 1)
            by_status = GaugeMetricFamily(
                "zhiku_documents", "Documents by status (all libraries)", labels=["status"]
            )
            for status in [s.value for s in DocStatus] + sorted(
                set(counts) - {s.value for s in DocStatus}
            ):
                by_status.add_metric([status], counts.get(status, (0, 0))[0])
            yield by_status
            ready = counts.get(DocStatus.ready.value, (0, 0))
            yield GaugeMetricFamily(
                "zhiku_indexed_chunks", "Chunks of ready documents", value=ready[1]
            )
            if self._last_ready is not None:
                for i in (0, 1):
                    self._ingested[i] += max(0, ready[i] - self._last_ready[i])
            self._last_ready = ready
            yield CounterMetricFamily(
                "zhiku_ingested_documents",
                "Documents that reached ready (seen by this process's scrapes)",
                value=self._ingested[0],
            )
            yield CounterMetricFamily(
                "zhiku_ingested_chunks",
                "Chunks of documents that reached ready (seen by this process's scrapes)",
                value=self._ingested[1],
            )
        yield up
        errors_total = CounterMetricFamily(
            "zhiku_scrape_errors",
            "Scrapes in which a part could not be read",
            labels=["part"],
        )
        for part, n in sorted(self._errors.items()):
            errors_total.add_metric([part], n)
        yield errors_total
        yield GaugeMetricFamily(
            "zhiku_scrape_duration_seconds",
            "How long reading the queue and the database took",
            value=time.perf_counter() - started,
        )


class Metrics:
    """The app's registry and the metrics recorded as requests and answers happen."""

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_duration = Histogram(
            "zhiku_http_request_duration_seconds",
            "Time to the end of the response (the whole stream for server-sent events)",
            ["method", "route", "status_class"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_errors = Counter(
            "zhiku_http_errors",
            "Error responses (4xx, 5xx) by status and error code",
            ["status", "code"],
            registry=r,
        )
        self.ttft = Histogram(
            "zhiku_answer_time_to_first_token_seconds",
            "From the question to the first answer token sent to the caller",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "zhiku_answer_tokens_per_second",
            "Completion tokens per second of generation (from the request to the model to its "
            "last token)",
            buckets=TPS_BUCKETS,
            registry=r,
        )
        self.completion_tokens = Counter(
            "zhiku_answer_completion_tokens", "Completion tokens generated for answers", registry=r
        )
        self.answers = Counter(
            "zhiku_answers",
            "Answers by outcome: answered, quoted (the model gave no answer), not_found, "
            "blocked, failed",
            ["outcome"],
            registry=r,
        )
        self.safety_blocks = Counter(
            "zhiku_safety_blocks",
            "Questions (stage=input) and answers (stage=output) stopped by the safety screen, "
            "by the layer that stopped them (reason: lexicon or model)",
            ["stage", "reason"],
            registry=r,
        )
        self.answer_failures = Counter(
            "zhiku_answer_failures",
            "Answers that failed, by error code (model_unavailable, model_error, …)",
            ["code"],
            registry=r,
        )
        self.retrieval = Histogram(
            "zhiku_retrieval_duration_seconds",
            "Hybrid retrieval latency, for searches and for answers",
            ["source"],
            buckets=RETRIEVAL_BUCKETS,
            registry=r,
        )
        r.register(StateCollector(settings))

    # -- recording -------------------------------------------------------------------------

    def observe_exchange(self, x: Exchange) -> None:
        self.http_duration.labels(x.method, x.route, f"{x.status // 100}xx").observe(x.seconds)
        if x.status >= 400:
            self.http_errors.labels(str(x.status), x.error_code or "none").inc()

    def observe_retrieval(self, source: str, seconds: float) -> None:
        self.retrieval.labels(source).observe(seconds)

    def observe_answer(self, result: AnswerResult) -> None:
        t = result.timings
        if "retrieval_ms" in t:
            self.observe_retrieval("chat", t["retrieval_ms"] / 1000)
        if result.blocked:
            stage = "output" if "generation_ms" in t else "input"
            layer = result.block.layer if result.block is not None else ""
            self.safety_blocks.labels(stage, layer or "unknown").inc()
            self.answers.labels("blocked").inc()
        elif result.not_found:
            self.answers.labels("not_found").inc()
        elif result.fallback:
            self.answers.labels("quoted").inc()
        else:
            self.answers.labels("answered").inc()
        if "ttft_ms" in t:
            self.ttft.observe(t["ttft_ms"] / 1000)
        tokens = result.completion_tokens
        if tokens:
            self.completion_tokens.inc(tokens)
            seconds = t.get("generation_ms", 0.0) / 1000
            if seconds > 0:
                self.tokens_per_second.observe(tokens / seconds)

    def observe_failure(self, code: str) -> None:
        self.answer_failures.labels(code).inc()
        self.answers.labels("failed").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def of(request: Request) -> Metrics | None:
    found: Metrics | None = getattr(request.app.state, "metrics", None)
    return found


# -- the route -------------------------------------------------------------------------------


def metrics_reader(p: Principal = Depends(authenticate)) -> Principal:
    """Administrators, or an API key with the `metrics` scope owned by an administrator (and
    not acting for anyone)."""
    if p.api_key is None:
        access.require_admin(p)
        return p
    if METRICS_SCOPE not in p.api_key.scopes:
        raise Forbidden(f"this API key lacks the '{METRICS_SCOPE}' scope", code="missing_scope")
    if p.key_owner is not None or not p.user.is_admin:
        raise Forbidden(
            "metrics keys must belong to an administrator and act for nobody",
            code="forbidden",
        )
    return p


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
            "description": "Prometheus text format",
        },
        **errors.ERROR_RESPONSES,
    },
)
def metrics(request: Request, _: Annotated[Principal, Depends(metrics_reader)]) -> Response:
    """Prometheus metrics of this api process (docs/observability.md). For administrators, and
    for API keys with the `metrics` scope (send it as a bearer token)."""
    found = of(request)
    body = found.exposition() if found is not None else b""
    return Response(body, media_type=CONTENT_TYPE)
