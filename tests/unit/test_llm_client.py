"""The OpenAI-compatible model client: replica choice and circuit breaker (pure, injected
clock), and the HTTP behaviour against `httpx.MockTransport` servers and one real stalled
socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import httpx
import pytest

from serving.llm_client import (
    USER_MESSAGE,
    EndpointConfig,
    LLMClient,
    ModelRequestError,
    ModelUnavailable,
    StreamDelta,
)
from serving.replicas import CircuitState, Outcome, ReplicaSet

T = TypeVar("T")
A, B, C = "http://a:8001/v1", "http://b:8001/v1", "http://c:8001/v1"
MESSAGES = [{"role": "user", "content": "年假有几天?"}]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(*urls: str, **kw: Any) -> EndpointConfig:
    base = EndpointConfig(
        base_urls=urls or (A,),
        model="main",
        connect_timeout=0.5,
        read_timeout=1.0,
        queue_timeout=1.0,
        backoff_seconds=0.001,
        backoff_max_seconds=0.005,
    )
    return replace(base, **kw)


def completion(text: str = "五天[1]。", **message: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    }


def sse(*events: Any) -> bytes:
    out = []
    for e in events:
        out.append("data: " + (e if isinstance(e, str) else json.dumps(e)) + "\n\n")
    return "".join(out).encode()


def chunk(
    content: str | None = None, reasoning: str | None = None, finish: str | None = None
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}


USAGE = {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 3}}


class Server:
    """A scripted MockTransport: `replies` are used in order (the last one repeats); each is
    an httpx.Response, an exception to raise, or a callable of the request."""

    def __init__(self, *replies: Any, models_ok: bool = True):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.models_ok = models_ok

    def chats(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path.endswith("/chat/completions")]

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models") and request.method == "GET":
            if not self.models_ok:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, json={"data": [{"id": "main"}]})
        self.requests.append(request)
        reply = self.replies[min(len(self.requests) - 1, len(self.replies) - 1)]
        if isinstance(reply, Exception):
            if isinstance(reply, httpx.RequestError):
                reply.request = request
            raise reply
        if callable(reply):
            result: httpx.Response = reply(request)
            return result
        assert isinstance(reply, httpx.Response)
        return reply

    def client(self, cfg: EndpointConfig | None = None, **kw: Any) -> LLMClient:
        return LLMClient(cfg or config(), transport=httpx.MockTransport(self.handler), **kw)


class Body(httpx.AsyncByteStream):
    """A response body that yields `parts` (bytes, or a float to sleep, or an exception to
    raise) and records whether the client closed it."""

    def __init__(self, *parts: bytes | float | Exception):
        self.parts = parts
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, float):
                await asyncio.sleep(part)
            elif isinstance(part, Exception):
                raise part
            else:
                self.sent += 1
                yield part

    async def aclose(self) -> None:
        self.closed = True


def streaming(body: Body) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)


async def collect(stream: AsyncIterator[StreamDelta], got: list[StreamDelta]) -> None:
    async for d in stream:
        got.append(d)


# -- replica choice and breaker (pure) ------------------------------------------------------


def replica_set(*urls: str, clock: FakeClock | None = None) -> ReplicaSet:
    return ReplicaSet(
        urls or (A, B, C),
        breaker_failures=5,
        breaker_reset_seconds=15.0,
        clock=clock or FakeClock(),
    )


def test_affinity_is_stable_spread_and_falls_back_to_least_loaded() -> None:
    rs = replica_set(A, B, C)
    homes = {f"conv-{i}": rs.pick(f"conv-{i}") for i in range(60)}
    assert all(rs.pick(k) is r for k, r in homes.items())  # the same every time
    assert {r.url for r in homes.values() if r} == {A, B, C}  # and spread over replicas
    assert all(
        ReplicaSet([C, A, B], breaker_failures=5, breaker_reset_seconds=1).home(k).url == r.url
        for k, r in homes.items()
        if r
    )  # independent of order and process

    key = "conv-7"
    home = rs.home(key)
    others = [r for r in rs.replicas if r is not home]
    others[0].in_flight, others[1].in_flight = 3, 1
    home.in_flight = 10  # load alone does not move a conversation
    assert rs.pick(key) is home
    rs.mark_health(home.url, False, "refused")
    assert rs.pick(key) is others[1]  # home down → least loaded
    rs.mark_health(home.url, True)
    assert rs.pick(key) is home  # back home when it is up again
    assert rs.pick(key, exclude=[home.url]) is others[1]  # a retry goes elsewhere


def test_least_loaded_without_key_and_exclusions() -> None:
    rs = replica_set(A, B, C)
    a, b, c = rs.replicas
    assert rs.pick() is a  # ties: configuration order
    a.in_flight, b.in_flight, c.in_flight = 2, 0, 1
    assert rs.pick() is b
    lease = rs.begin(b)
    lease2 = rs.begin(b)
    assert b.in_flight == 2 and rs.pick() is c
    rs.end(lease, Outcome.SUCCESS)
    rs.end(lease2, Outcome.NEUTRAL)
    assert b.in_flight == 0
    assert rs.pick(exclude=[B]) is c
    assert rs.pick(exclude=[A, B, C]) is b  # everything tried: retry the best anyway
    for r in rs.replicas:
        rs.mark_health(r.url, False)
    # Failed health checks alone only rank: a loaded server may still answer.
    assert rs.pick() is b
    rs.mark_health(C, True)
    assert rs.pick() is c  # a healthy one is preferred
    for r in rs.replicas:
        for _ in range(5):
            rs.end(rs.begin(r), Outcome.FAILURE)
    assert rs.pick() is None  # every circuit open: nothing to try


def test_breaker_opens_after_n_failures_and_half_opens_after_reset() -> None:
    clock = FakeClock()
    rs = replica_set(A, B, clock=clock)
    a, b = rs.replicas

    def fail(n: int) -> None:
        for _ in range(n):
            rs.end(rs.begin(a), Outcome.FAILURE, "HTTP 503")

    fail(4)
    rs.end(rs.begin(a), Outcome.SUCCESS)  # a success resets the count
    fail(4)
    assert a.breaker.state is CircuitState.CLOSED and rs.pick() is a
    fail(1)
    assert a.breaker.state is CircuitState.OPEN
    assert rs.pick() is b and rs.pick("any-key", exclude=[B]) is b
    assert rs.status()[0].circuit == "open" and rs.status()[0].last_error == "HTTP 503"

    clock.now += 14.9
    assert a.breaker.state is CircuitState.OPEN
    clock.now += 0.2
    assert a.breaker.state is CircuitState.HALF_OPEN
    b.in_flight = 5
    trial = rs.begin(rs.pick() or b)  # one trial request goes to a…
    assert trial.replica is a and trial.trial
    assert rs.pick() is b  # …and no second one while it runs
    rs.end(trial, Outcome.FAILURE)
    assert a.breaker.state is CircuitState.OPEN  # trial failed: open for another period
    clock.now += 15.0
    trial = rs.begin(a)
    rs.end(trial, Outcome.SUCCESS)
    assert a.breaker.state is CircuitState.CLOSED and a.breaker.failures == 0
    assert rs.pick() is a

    fail(5)
    clock.now += 15.0
    cancelled = rs.begin(a)
    rs.end(cancelled, Outcome.NEUTRAL)  # a cancelled trial frees the trial slot
    assert a.breaker.state is CircuitState.HALF_OPEN and a.available


# -- chat: retries and errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(503, json={"error": {"message": "overloaded"}}),
        httpx.Response(429, headers={"retry-after": "0"}, json={"message": "slow down"}),
        httpx.ConnectError("connection refused"),
        httpx.ConnectTimeout("connect timeout"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["503", "429", "refused", "connect-timeout", "disconnect"],
)
def test_chat_retries_transient_failures_then_succeeds(first: Any) -> None:
    server = Server(first, httpx.Response(200, json=completion(reasoning_content="想一想")))

    async def go() -> None:
        async with server.client() as client:
            result = await client.chat(MESSAGES, max_tokens=64, stop=["</s>"])
            assert result.text == "五天[1]。" and result.reasoning == "想一想"
            assert result.finish_reason == "stop" and result.replica == A
            assert (result.prompt_tokens, result.completion_tokens) == (12, 4)
            assert client.status()[0].in_flight == 0

    run(go())
    assert len(server.chats()) == 2
    body = json.loads(server.chats()[1].content)
    assert body == {
        "model": "main",
        "messages": MESSAGES,
        "max_tokens": 64,
        "temperature": 0.2,
        "stop": ["</s>"],
    }


def test_chat_gives_up_after_max_attempts() -> None:
    server = Server(httpx.Response(503, text="upstream down"))

    async def go() -> ModelUnavailable:
        async with server.client() as client:
            with pytest.raises(ModelUnavailable) as info:
                await client.chat(MESSAGES)
            return info.value

    err = run(go())
    assert len(server.chats()) == 3
    assert str(err) == USER_MESSAGE
    assert "503" in err.reason and "upstream down" in err.reason and "3/3" in err.reason


def test_client_error_is_not_retried() -> None:
    msg = "This model's maximum context length is 2048 tokens."
    server = Server(httpx.Response(400, json={"object": "error", "message": msg, "code": 400}))

    async def go() -> None:
        async with server.client() as client:
            with pytest.raises(ModelRequestError) as info:
                await client.chat(MESSAGES)
            assert info.value.status == 400 and info.value.message == msg
            assert client.status()[0].circuit == "closed" and client.status()[0].failures == 0

    run(go())
    assert len(server.chats()) == 1


def test_retry_goes_to_another_replica_and_affinity_holds() -> None:
    seen: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == home_host and len(seen) == 1:
            return httpx.Response(502, text="bad gateway")
        return httpx.Response(200, json=completion())

    home_host = httpx.URL(replica_set(A, B, C).home("conv-42").url).host
    server = Server(reply)

    async def go() -> None:
        async with server.client(config(A, B, C)) as client:
            first = await client.chat(MESSAGES, affinity_key="conv-42")
            assert httpx.URL(first.replica).host != home_host  # retried elsewhere
            for _ in range(3):
                again = await client.chat(MESSAGES, affinity_key="conv-42")
                assert httpx.URL(again.replica).host == home_host  # home again

    run(go())
    assert seen[0] == home_host and seen[1] != home_host


def test_breaker_in_client_fails_fast_then_half_opens() -> None:
    clock = FakeClock()
    server = Server(
        httpx.Response(500, text="boom"),
        httpx.Response(500, text="boom"),
        httpx.Response(200, json=completion()),
    )
    cfg = config(breaker_failures=2, max_attempts=1, breaker_reset_seconds=15.0)

    async def go() -> None:
        async with server.client(cfg, clock=clock) as client:
            for _ in range(2):
                with pytest.raises(ModelUnavailable):
                    await client.chat(MESSAGES)
            with pytest.raises(ModelUnavailable) as info:
                await client.chat(MESSAGES)
            assert "no replica available" in info.value.reason
            assert len(server.chats()) == 2  # the open circuit kept the request local
            clock.now += 15.0
            assert (await client.chat(MESSAGES)).text == "五天[1]。"  # the trial
            assert client.status()[0].circuit == "closed"

    run(go())


def test_stalled_server_times_out_quickly_without_retry() -> None:
    """A real socket that accepts and never answers."""
    accepted: list[asyncio.StreamWriter] = []

    async def go() -> tuple[float, ModelUnavailable]:
        async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = config(f"http://127.0.0.1:{port}/v1", connect_timeout=0.2, read_timeout=0.3)
        try:
            async with LLMClient(cfg) as client:
                start = time.monotonic()
                with pytest.raises(ModelUnavailable) as info:
                    await client.chat(MESSAGES)
                elapsed = time.monotonic() - start
                with pytest.raises(ModelUnavailable):
                    async for _ in client.stream(MESSAGES):
                        pass
                assert time.monotonic() - start < 1.5
                return elapsed, info.value
        finally:
            for w in accepted:
                w.close()
            server.close()

    elapsed, err = run(go())
    assert elapsed < 0.9
    assert "timed out" in err.reason and "1/3" in err.reason  # not retried


def test_queue_timeout_when_all_slots_are_busy() -> None:
    body = Body(sse(chunk("a")), 5.0)
    server = Server(streaming(body))
    cfg = config(max_concurrency=1, queue_timeout=0.05, read_timeout=3.0)

    async def go() -> None:
        async with server.client(cfg) as client:
            stream = client.stream(MESSAGES)
            first = await anext(stream)
            assert first.content == "a"
            with pytest.raises(ModelUnavailable) as info:
                await client.chat(MESSAGES)
            assert "no free slot" in info.value.reason
            await stream.aclose()

    run(go())


# -- streaming ------------------------------------------------------------------------------


def test_stream_parses_sse_with_reasoning_and_usage() -> None:
    body = b": keep-alive\n\n" + sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]},
        chunk(reasoning="先查"),
        {"choices": [{"index": 0, "delta": {"reasoning": "资料"}}]},
        chunk("年假"),
        chunk("五天。", finish="stop"),
        USAGE,
        "[DONE]",
    )
    server = Server(httpx.Response(200, content=body))
    got: list[StreamDelta] = []

    async def go() -> None:
        async with server.client(config(api_key="k")) as client:
            await collect(client.stream(MESSAGES, temperature=0.0, extra={"top_p": 0.9}), got)

    run(go())
    assert [(d.content, d.reasoning) for d in got[:-1]] == [
        ("", "先查"),
        ("", "资料"),
        ("年假", ""),
        ("五天。", ""),
    ]
    assert got[-1] == StreamDelta(
        finish_reason="stop", prompt_tokens=30, completion_tokens=3, final=True
    )
    sent = json.loads(server.chats()[0].content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.0 and sent["top_p"] == 0.9
    assert server.chats()[0].headers["authorization"] == "Bearer k"


def test_stream_accepts_split_events_and_missing_done_after_finish() -> None:
    raw = (
        b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "hi"}}]}\n\n'
        b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}\n'
    )
    server = Server(httpx.Response(200, content=raw))
    got: list[StreamDelta] = []

    async def go() -> None:
        async with server.client() as client:
            await collect(client.stream(MESSAGES), got)

    run(go())
    assert [d.content for d in got] == ["hi", ""]
    assert got[-1].final and got[-1].finish_reason == "length" and got[-1].prompt_tokens is None


def test_stream_retries_before_the_first_byte() -> None:
    server = Server(
        httpx.Response(503, text="warming up"),
        httpx.ConnectError("refused"),
        httpx.Response(200, content=sse(chunk("ok", finish="stop"), "[DONE]")),
    )
    got: list[StreamDelta] = []

    async def go() -> None:
        async with server.client() as client:
            await collect(client.stream(MESSAGES), got)

    run(go())
    assert [d.content for d in got] == ["ok", ""] and len(server.chats()) == 3


@pytest.mark.parametrize(
    "tail",
    [httpx.ReadError("connection reset"), 3.0, b""],
    ids=["reset", "stall", "truncated"],
)
def test_mid_stream_failure_is_not_retried(tail: bytes | float | Exception) -> None:
    body = Body(sse(chunk("年假")), sse(chunk("是")), tail)
    server = Server(streaming(body))
    got: list[StreamDelta] = []

    async def go() -> ModelUnavailable:
        async with server.client(config(read_timeout=0.2)) as client:
            with pytest.raises(ModelUnavailable) as info:
                await collect(client.stream(MESSAGES), got)
            status = client.status()[0]
            assert status.in_flight == 0 and status.failures == 1
            return info.value

    start = time.monotonic()
    err = run(go())
    assert time.monotonic() - start < 1.0
    assert [d.content for d in got] == ["年假", "是"]  # the caller kept the first tokens
    assert len(server.chats()) == 1
    assert "after output began" in err.reason
    assert body.closed


@pytest.mark.parametrize("first_token_timeout", [2.0, 0.0], ids=["waits", "default"])
def test_a_busy_server_may_take_longer_for_the_first_bytes(first_token_timeout: float) -> None:
    """A queueing server is slow to start an answer; the gaps between tokens stay short."""
    body = Body(0.6, sse(chunk("年假")), sse(chunk("是")), b"data: [DONE]\n\n")
    cfg = config(read_timeout=0.2, first_token_timeout=first_token_timeout)
    got: list[StreamDelta] = []

    async def go() -> None:
        async with Server(streaming(body)).client(cfg) as client:
            await collect(client.stream(MESSAGES), got)

    if first_token_timeout:
        run(go())
        assert [d.content for d in got if d.content] == ["年假", "是"]
    else:
        with pytest.raises(ModelUnavailable):
            run(go())
        assert got == []


def test_error_event_in_stream() -> None:
    bad = sse({"error": {"message": "prompt too long", "type": "BadRequestError", "code": 400}})
    server = Server(httpx.Response(200, content=bad))

    async def go() -> None:
        async with server.client() as client:
            with pytest.raises(ModelRequestError) as info:
                await collect(client.stream(MESSAGES), [])
            assert info.value.status == 400 and "prompt too long" in info.value.message

    run(go())
    assert len(server.chats()) == 1


def test_closing_the_stream_early_releases_response_and_slot() -> None:
    body = Body(sse(chunk("一")), sse(chunk("二")), 5.0, sse(chunk("三"), "[DONE]"))
    server = Server(streaming(body), httpx.Response(200, json=completion()))
    cfg = config(max_concurrency=1, queue_timeout=0.2, read_timeout=10.0)

    async def go() -> None:
        async with server.client(cfg) as client:
            got: list[str] = []
            async with contextlib.aclosing(client.stream(MESSAGES, affinity_key="c1")) as s:
                async for d in s:
                    got.append(d.content)
                    assert client.status()[0].in_flight == 1
                    break  # the user pressed stop
            assert got == ["一"]
            assert body.closed  # the connection is dropped: vLLM aborts the request
            assert client.status()[0].in_flight == 0
            assert client.status()[0].failures == 0  # a cancel is not the server's fault
            assert (await client.chat(MESSAGES)).text  # the only slot is free again

            # Cancelling the consuming task has the same effect.
            body2 = Body(sse(chunk("x")), 5.0)
            server.replies = [streaming(body2)]
            server.requests.clear()
            task = asyncio.create_task(collect(client.stream(MESSAGES), []))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert body2.closed and client.status()[0].in_flight == 0

    start = time.monotonic()
    run(go())
    assert time.monotonic() - start < 1.0


# -- health, models, tokens ----------------------------------------------------------------


def test_health_marks_replicas_and_routes_around_the_down_one() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "a":
            raise httpx.ConnectError("refused", request=request)
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [{"id": "main"}]})
        return httpx.Response(200, json=completion())

    cfg = config(A, B, health_interval_seconds=0.01)

    async def go() -> None:
        client = LLMClient(cfg, transport=httpx.MockTransport(handler))
        async with client:
            await asyncio.sleep(0.05)  # the background checks ran
            status = {s.url: s for s in client.status()}
            assert not status[A].healthy and "refused" in (status[A].last_error or "")
            assert status[B].healthy
            for key in ("k1", "k2", "k3", None):
                assert (await client.chat(MESSAGES, affinity_key=key)).replica == B
            assert [s.healthy for s in await client.health()] == [False, True]
            assert await client.list_models() == ["main"]
        assert client._health_task is None

    run(go())


def test_count_tokens_uses_root_tokenize_or_returns_none() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.host == "b":
            return httpx.Response(404, json={"detail": "Not Found"})
        assert json.loads(request.content) == {"model": "main", "prompt": "你好 world"}
        return httpx.Response(200, json={"count": 3, "max_model_len": 2048, "tokens": [1, 2, 3]})

    async def go() -> tuple[int | None, int | None]:
        async with (
            LLMClient(config(A), transport=httpx.MockTransport(handler)) as a,
            LLMClient(config(B), transport=httpx.MockTransport(handler)) as b,
        ):
            return await a.count_tokens("你好 world"), await b.count_tokens("你好 world")

    assert run(go()) == (3, None)
    assert "/tokenize" in paths and all(not p.startswith("/v1/tokenize") for p in paths)
