"""Async client for OpenAI-compatible chat servers (vLLM, SGLang, Ollama, llama.cpp, TGI).

One `LLMClient` talks to one model served by one or more replicas (`EndpointConfig.base_urls`,
each ending in `/v1`). Only `httpx` is used.

Routing: a request with an `affinity_key` (a conversation id) goes to the key's rendezvous-hash
home replica while it is available, so vLLM's prefix cache is reused; otherwise, and while the
home is down, to the least-loaded available replica (see `serving.replicas`).

Failures: the caller sees two errors. `ModelUnavailable` (its text is fit for users, its
`reason` is for logs) for anything that is not the request's fault: every replica down or its
circuit open, connection errors and 5xx/429 after retries, timeouts, a stream that broke, no
free slot within `queue_timeout`. `ModelRequestError` for other 4xx (context too long, bad
parameters, unknown model): retrying would not help.

Retries: at most `max_attempts` attempts in all, with jittered exponential backoff (or a short
`Retry-After`), preferring a replica this request has not tried yet. Connection errors,
connect timeouts, 429 and 5xx are retried; read timeouts are not (the server may still be
generating, and the caller should hear back within about connect + read timeout). A stream is
never retried once any content reached the caller.

Timeouts: `connect_timeout` to connect; `first_token_timeout` is the longest wait for the
first bytes of a reply (a busy server queues requests before it starts them, so under load
this wait is much longer than the gaps between tokens); `read_timeout` is the longest silence
allowed between bytes of a stream once it has started. A non-streamed reply may take the
longer of the two. All are enforced by httpx and again by an asyncio deadline, so a stalled
server cannot hang a request.

Concurrency: at most `max_concurrency` requests per client at a time, across replicas; a
request that waits longer than `queue_timeout` for a slot fails with `ModelUnavailable`.

Cancelling: close the iterator returned by `stream` (`aclose()`, leaving an
`async with contextlib.aclosing(...)` block, or cancelling the task). That closes the HTTP
response and so the connection, which makes vLLM abort the generation, and frees the slot.

Health: `start()` runs a background task that GETs `{base}/models` on every replica each
`health_interval_seconds`; any HTTP answer below 500 means up. Failed requests feed each
replica's circuit breaker (`breaker_failures` consecutive failures open it for
`breaker_reset_seconds`, then one trial request decides).

Reasoning: `reasoning_content` / `reasoning` fields sent by the server are returned apart from
the text; `<think>` tags inside the text are left for `serving.reasoning`.

Tracing: each chat and token-count request carries the current request id
(`core.logging_setup`) as `X-Request-Id`; vLLM makes it the completion's id (`chatcmpl-<id>`)
and its request log's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

import httpx

from core.logging_setup import current_request_id
from serving.replicas import Clock, Lease, Outcome, ReplicaSet, ReplicaStatus

__all__ = [
    "ChatResult",
    "EndpointConfig",
    "LLMClient",
    "ModelRequestError",
    "ModelUnavailable",
    "ReplicaStatus",
    "StreamDelta",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Message = dict[str, str]

USER_MESSAGE = "The language model is unavailable; try again in a moment."
MAX_RETRY_AFTER = 5.0  # a longer Retry-After is not waited for; normal backoff applies
HEALTH_READ_TIMEOUT = 5.0
TRACE_HEADER = "X-Request-Id"  # the header vLLM reads


@dataclass(frozen=True)
class EndpointConfig:
    base_urls: tuple[str, ...]
    model: str
    api_key: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 60.0
    first_token_timeout: float = 0.0  # 0: the same as read_timeout
    max_concurrency: int = 16
    queue_timeout: float = 30.0
    max_attempts: int = 3
    breaker_failures: int = 5
    breaker_reset_seconds: float = 15.0
    health_interval_seconds: float = 10.0
    backoff_seconds: float = 0.2  # first retry waits this × uniform(0.5, 1.5), then doubles
    backoff_max_seconds: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.base_urls, str) or not self.base_urls:
            raise ValueError("base_urls must be a non-empty tuple of URLs")
        if self.max_attempts < 1 or self.max_concurrency < 1:
            raise ValueError("max_attempts and max_concurrency must be at least 1")

    @property
    def first_wait(self) -> float:
        """Longest wait for a reply's first bytes (never shorter than `read_timeout`)."""
        return max(self.read_timeout, self.first_token_timeout)


class ModelUnavailable(Exception):
    """The model could not answer now. `str()` is for users; `reason` is for logs."""

    def __init__(self, reason: str):
        super().__init__(USER_MESSAGE)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason,))


class ModelRequestError(Exception):
    """The server rejected the request (4xx other than 429); retrying will not help."""

    def __init__(self, status: int, message: str):
        super().__init__(f"The model rejected the request (HTTP {status}): {message}")
        self.status = status
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.message))


@dataclass(frozen=True)
class ChatResult:
    text: str
    reasoning: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    replica: str


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed reply. The last one has `final=True`, empty text, and the finish
    reason and token usage when the server sent them."""

    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    final: bool = False


class _AttemptFailed(Exception):
    def __init__(
        self, reason: str, *, retry: bool, outcome: Outcome, retry_after: float | None = None
    ):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.outcome = outcome
        self.retry_after = retry_after


class LLMClient:
    def __init__(
        self,
        config: EndpointConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
    ):
        self.config = config
        self._urls = tuple(u.rstrip("/") for u in config.base_urls)
        self._replicas = ReplicaSet(
            self._urls,
            breaker_failures=config.breaker_failures,
            breaker_reset_seconds=config.breaker_reset_seconds,
            clock=clock,
        )
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=httpx.Timeout(
                config.first_wait, connect=config.connect_timeout, pool=config.connect_timeout
            ),
            limits=httpx.Limits(
                max_connections=config.max_concurrency + 2 * len(self._urls),
                max_keepalive_connections=config.max_concurrency,
            ),
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._health_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name="llm-health")

    async def aclose(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        await self._http.aclose()

    async def __aenter__(self) -> LLMClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def health(self) -> list[ReplicaStatus]:
        """Check every replica now and report."""
        await asyncio.gather(*(self._check(url) for url in self._urls))
        return self._replicas.status()

    def status(self) -> list[ReplicaStatus]:
        """The current bookkeeping, without checking."""
        return self._replicas.status()

    # -- API ---------------------------------------------------------------------------------

    async def chat(
        self,
        messages: list[Message],
        *,
        affinity_key: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        stop: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ChatResult:
        payload = self._payload(messages, max_tokens, temperature, stop, extra, stream=False)
        return await self._request("POST", "/chat/completions", payload, affinity_key, _chat_result)

    async def stream(
        self,
        messages: list[Message],
        *,
        affinity_key: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        stop: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> AsyncGenerator[StreamDelta, None]:
        payload = self._payload(messages, max_tokens, temperature, stop, extra, stream=True)
        await self._acquire_slot()
        try:
            tried: list[str] = []
            failure: _AttemptFailed | None = None
            for attempt in range(1, self.config.max_attempts + 1):
                lease = self._begin(affinity_key, tried, failure)
                delivered = False
                outcome, error = Outcome.NEUTRAL, None
                try:
                    pieces = self._stream_once(lease.replica.url, payload)
                    async with contextlib.aclosing(pieces):
                        async for piece in pieces:
                            delivered = True
                            yield piece
                    outcome = Outcome.SUCCESS
                    return
                except _AttemptFailed as f:
                    outcome, error, failure = f.outcome, f.reason, f
                except ModelRequestError:
                    outcome = Outcome.SUCCESS  # the server is fine; the request was not
                    raise
                finally:
                    self._replicas.end(lease, outcome, error)
                where = f"{lease.replica.url}, attempt {attempt}/{self.config.max_attempts}"
                if delivered:
                    raise ModelUnavailable(f"stream broke after output began ({where}): {error}")
                await self._retry_or_raise(failure, attempt, where)
        finally:
            self._slots.release()

    async def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` by the served model's tokenizer (vLLM's `/tokenize`); None when the
        server has no such endpoint."""
        payload = {"model": self.config.model, "prompt": text}
        try:
            return await self._request("POST", "/tokenize", payload, None, _token_count, root=True)
        except ModelRequestError as e:
            if e.status in (404, 405, 501):
                return None
            raise

    async def list_models(self) -> list[str]:
        return await self._request("GET", "/models", None, None, _model_ids)

    # -- internals ---------------------------------------------------------------------------

    def _payload(
        self,
        messages: list[Message],
        max_tokens: int,
        temperature: float,
        stop: list[str] | None,
        extra: dict[str, Any] | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if stop:
            body["stop"] = stop
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(extra or {})  # `extra` may override anything; a None value drops the key
        return {k: v for k, v in body.items() if v is not None}

    async def _acquire_slot(self) -> None:
        try:
            async with asyncio.timeout(self.config.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ModelUnavailable(
                f"no free slot within {self.config.queue_timeout}s "
                f"({self.config.max_concurrency} requests in flight)"
            ) from None

    def _begin(
        self, affinity_key: str | None, tried: list[str], failure: _AttemptFailed | None
    ) -> Lease:
        replica = self._replicas.pick(affinity_key, exclude=tried)
        if replica is None:
            before = f"after {failure.reason}; " if failure is not None else ""
            raise ModelUnavailable(f"{before}no replica available: {self._replicas.describe()}")
        tried.append(replica.url)
        return self._replicas.begin(replica)

    async def _retry_or_raise(
        self, failure: _AttemptFailed | None, attempt: int, where: str
    ) -> None:
        assert failure is not None
        if not failure.retry or attempt >= self.config.max_attempts:
            raise ModelUnavailable(f"{failure.reason} ({where})")
        delay = self._backoff(attempt, failure.retry_after)
        log.warning(
            "model request failed (%s): %s; retrying in %.2fs", where, failure.reason, delay
        )
        await asyncio.sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after <= MAX_RETRY_AFTER:
            return retry_after
        base = self.config.backoff_seconds * 2.0 ** (attempt - 1)
        return min(self.config.backoff_max_seconds, base) * random.uniform(0.5, 1.5)

    async def _request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        affinity_key: str | None,
        parse: Callable[[Any, str], T],
        *,
        root: bool = False,
    ) -> T:
        """A non-streamed request with retries; `parse(json, replica_url)` runs inside the
        attempt, so a malformed reply counts as that replica's failure."""
        await self._acquire_slot()
        try:
            tried: list[str] = []
            failure: _AttemptFailed | None = None
            for attempt in range(1, self.config.max_attempts + 1):
                lease = self._begin(affinity_key, tried, failure)
                url = lease.replica.url
                outcome, error = Outcome.NEUTRAL, None
                try:
                    data = await self._json_once(method, _join(url, path, root), payload)
                    result = parse(data, url)
                    outcome = Outcome.SUCCESS
                    return result
                except _AttemptFailed as f:
                    outcome, error, failure = f.outcome, f.reason, f
                except ModelRequestError:
                    outcome = Outcome.SUCCESS
                    raise
                finally:
                    self._replicas.end(lease, outcome, error)
                where = f"{url}, attempt {attempt}/{self.config.max_attempts}"
                await self._retry_or_raise(failure, attempt, where)
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    async def _json_once(self, method: str, url: str, payload: dict[str, Any] | None) -> Any:
        deadline = self.config.connect_timeout + self.config.first_wait
        try:
            async with asyncio.timeout(deadline):
                response = await self._http.request(
                    method, url, json=payload, headers=_trace_headers()
                )
        except (TimeoutError, httpx.HTTPError) as exc:
            raise _transport_failure(exc, deadline) from None
        _raise_for_status(response.status_code, response.text, response.headers)
        try:
            return response.json()
        except ValueError:
            raise _AttemptFailed(
                f"reply is not JSON: {response.text[:200]!r}", retry=False, outcome=Outcome.FAILURE
            ) from None

    async def _stream_once(
        self, base: str, payload: dict[str, Any]
    ) -> AsyncGenerator[StreamDelta, None]:
        cfg = self.config
        request = self._http.build_request(
            "POST", base + "/chat/completions", json=payload, headers=_trace_headers()
        )
        deadline = cfg.connect_timeout + cfg.first_wait
        try:
            async with asyncio.timeout(deadline):
                response = await self._http.send(request, stream=True)
        except (TimeoutError, httpx.HTTPError) as exc:
            raise _transport_failure(exc, deadline) from None
        lines = cast(AsyncGenerator[str, None], response.aiter_lines())
        try:
            if not 200 <= response.status_code < 300:
                body = ""
                with contextlib.suppress(TimeoutError, httpx.HTTPError):
                    async with asyncio.timeout(cfg.read_timeout):
                        body = (await response.aread()).decode("utf-8", "replace")
                _raise_for_status(response.status_code, body, response.headers)
            parser = _SSEParser()
            wait = cfg.first_wait  # until the first line; then the gaps between lines
            while not parser.done:
                try:
                    async with asyncio.timeout(wait):
                        line = await anext(lines)
                except StopAsyncIteration:
                    break
                except (TimeoutError, httpx.HTTPError) as exc:
                    raise _transport_failure(exc, wait, streaming=True) from None
                wait = cfg.read_timeout
                for piece in parser.feed(line):
                    yield piece
            yield parser.finish()
        finally:
            with contextlib.suppress(Exception):
                await lines.aclose()
            await response.aclose()

    async def _health_loop(self) -> None:
        while True:
            try:
                await asyncio.gather(*(self._check(url) for url in self._urls))
            except Exception:  # never let the loop die
                log.exception("model health check failed")
            await asyncio.sleep(self.config.health_interval_seconds)

    async def _check(self, base: str) -> None:
        read = min(HEALTH_READ_TIMEOUT, self.config.read_timeout)
        timeout = httpx.Timeout(read, connect=self.config.connect_timeout)
        try:
            async with asyncio.timeout(self.config.connect_timeout + read):
                response = await self._http.get(base + "/models", timeout=timeout)
        except (TimeoutError, httpx.HTTPError) as exc:
            reason = _transport_failure(exc, self.config.connect_timeout + read).reason
            self._replicas.mark_health(base, False, f"health check: {reason}")
            return
        if response.status_code >= 500:
            error = f"health check: HTTP {response.status_code}"
            self._replicas.mark_health(base, False, error)
        else:
            self._replicas.mark_health(base, True)


# -- replies and errors ---------------------------------------------------------------------


def _trace_headers() -> dict[str, str]:
    request_id = current_request_id()
    return {TRACE_HEADER: request_id} if request_id else {}


def _join(base: str, path: str, root: bool) -> str:
    if root and base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base + path


def _transport_failure(
    exc: BaseException, seconds: float, *, streaming: bool = False
) -> _AttemptFailed:
    what = "stream" if streaming else "request"
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return _AttemptFailed(f"connect timeout ({exc})", retry=True, outcome=Outcome.FAILURE)
    if isinstance(exc, httpx.PoolTimeout):
        return _AttemptFailed("no free HTTP connection", retry=False, outcome=Outcome.NEUTRAL)
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        reason = f"{what} timed out: no data for {seconds:g}s ({name})"
        return _AttemptFailed(reason, retry=False, outcome=Outcome.FAILURE)
    # Connection refused or reset, protocol errors: the server may be restarting.
    return _AttemptFailed(f"{what} failed: {name}: {exc}", retry=True, outcome=Outcome.FAILURE)


def _raise_for_status(status: int, body: str, headers: httpx.Headers) -> None:
    if 200 <= status < 300:
        return
    message = _server_message(body)
    if status == 429:
        raise _AttemptFailed(
            f"HTTP 429: {message}",
            retry=True,
            outcome=Outcome.NEUTRAL,
            retry_after=_retry_after(headers.get("retry-after")),
        )
    if 400 <= status < 500 or status == 501:  # 501: the server does not do that at all
        raise ModelRequestError(status, message)
    raise _AttemptFailed(f"HTTP {status}: {message}", retry=status >= 500, outcome=Outcome.FAILURE)


def _server_message(body: str) -> str:
    """The error text of OpenAI-style (`{"error": {"message"}}`), vLLM (`{"message"}`), TGI
    (`{"error": "..."}`) and FastAPI (`{"detail"}`) error bodies; else the raw text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(no body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for value in (error, data.get("message"), data.get("detail")):
            if value:
                return str(value)
    return body.strip()[:500]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _chat_result(data: Any, replica: str) -> ChatResult:
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _AttemptFailed(
            f"malformed reply: {str(data)[:200]}", retry=False, outcome=Outcome.FAILURE
        ) from None
    usage = data.get("usage") or {}
    return ChatResult(
        text=message.get("content") or "",
        reasoning=message.get("reasoning_content") or message.get("reasoning") or "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        replica=replica,
    )


def _token_count(data: Any, replica: str) -> int | None:
    return _int(data.get("count")) if isinstance(data, dict) else None


def _model_ids(data: Any, replica: str) -> list[str]:
    try:
        return [str(m["id"]) for m in data["data"]]
    except (KeyError, TypeError):
        raise _AttemptFailed(
            f"malformed model list: {str(data)[:200]}", retry=False, outcome=Outcome.FAILURE
        ) from None


def _error_chunk(error: Any) -> Exception:
    """An `{"error": …}` event inside a stream, as the exception it stands for."""
    message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    code = error.get("code") if isinstance(error, dict) else None
    try:
        status = int(code) if code is not None else None
    except (TypeError, ValueError):
        status = None
    if status is not None and 400 <= status < 500 and status != 429:
        return ModelRequestError(status, message)
    retry = status is not None and (status == 429 or status >= 500)
    outcome = Outcome.NEUTRAL if status == 429 else Outcome.FAILURE
    return _AttemptFailed(f"error in stream: {message}", retry=retry, outcome=outcome)


class _SSEParser:
    """`data:` lines of a chat-completion event stream → `StreamDelta`s. An event normally is
    one line; a line that does not parse yet is joined with the next (multi-line events)."""

    def __init__(self) -> None:
        self.done = False
        self._data: list[str] = []
        self._finish_reason: str | None = None
        self._prompt_tokens: int | None = None
        self._completion_tokens: int | None = None

    def feed(self, line: str) -> list[StreamDelta]:
        line = line.rstrip("\r\n")
        if not line:
            if self._data:  # an event that never parsed
                raise _AttemptFailed(
                    f"invalid event in stream: {' '.join(self._data)[:200]!r}",
                    retry=True,
                    outcome=Outcome.FAILURE,
                )
            return []
        field, _, value = line.partition(":")
        if field != "data":  # comments (": ping"), `event:`, `id:`, `retry:`
            return []
        self._data.append(value[1:] if value.startswith(" ") else value)
        text = "\n".join(self._data)
        if text.strip() == "[DONE]":
            self._data = []
            self.done = True
            return []
        try:
            event = json.loads(text)
        except ValueError:
            return []
        self._data = []
        return self._event(event)

    def _event(self, event: Any) -> list[StreamDelta]:
        if not isinstance(event, dict):
            raise _AttemptFailed(
                f"unexpected event: {str(event)[:200]}", retry=True, outcome=Outcome.FAILURE
            )
        if event.get("error") or event.get("object") == "error":
            raise _error_chunk(event.get("error", event))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._prompt_tokens = _int(usage.get("prompt_tokens"))
            self._completion_tokens = _int(usage.get("completion_tokens"))
        out: list[StreamDelta] = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") or ""
            reasoning = delta.get("reasoning_content") or delta.get("reasoning") or ""
            if content or reasoning:
                out.append(StreamDelta(content=content, reasoning=reasoning))
            if choice.get("finish_reason"):
                self._finish_reason = str(choice["finish_reason"])
        return out

    def finish(self) -> StreamDelta:
        """The final delta, at `[DONE]` or the end of the body. A body that ends without
        `[DONE]` is accepted only when a finish reason came (some servers omit `[DONE]`)."""
        if not self.done and (self._finish_reason is None or self._data):
            raise _AttemptFailed(
                "stream ended before the reply was complete", retry=True, outcome=Outcome.FAILURE
            )
        return StreamDelta(
            finish_reason=self._finish_reason,
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
            final=True,
        )
