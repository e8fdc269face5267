"""JSON log lines, request-id validation and the request-id middleware's pass-through."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest

from api.request_context import RequestContextMiddleware, route_template
from core.logging_setup import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    current_request_id,
    new_request_id,
    request_context,
    request_id_from,
    valid_request_id,
)


def _record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("zhiku.test")
    return logger.makeRecord(
        "zhiku.test", logging.WARNING, __file__, 1, msg, args, None, extra=extra
    )


def test_a_record_is_one_line_of_json_with_the_fields_and_extras() -> None:
    with request_context("req-1"):
        line = JsonFormatter().format(
            _record("ingest %s of %s\nsecond line", "文档", 3, document_id=7, tags={1, 2})
        )
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "WARNING" and out["logger"] == "zhiku.test"
    assert out["msg"] == "ingest 文档 of 3\nsecond line"
    assert out["request_id"] == "req-1"
    assert out["document_id"] == 7
    assert out["tags"] == "{1, 2}"  # what JSON cannot hold is written as text
    assert out["ts"].endswith("Z") and "T" in out["ts"]
    assert "文档" in line  # not escaped


def test_outside_a_request_the_id_is_null_and_an_explicit_one_wins() -> None:
    assert json.loads(JsonFormatter().format(_record("x")))["request_id"] is None
    with request_context("outer"):
        out = json.loads(JsonFormatter().format(_record("x", request_id="given")))
    assert out["request_id"] == "given"


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        logger = logging.getLogger("zhiku.test")
        import sys

        record = logger.makeRecord(
            "zhiku.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    out = json.loads(JsonFormatter().format(record))
    assert "ValueError: broken" in out["exc"] and out["msg"] == "failed"


def test_text_format_shows_the_request_id() -> None:
    with request_context("abc-123"):
        line = TextFormatter().format(_record("hello", document_id=4))
    assert "[abc-123] hello" in line and "document_id=4" in line


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("abc-123", True),
        ("A.b_c-9", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("has space", False),
        ("a/b", False),
        ("id\n", False),
        ("ünïcode", False),
        ("<script>", False),
        (None, False),
    ],
)
def test_request_id_validation(value: str | None, ok: bool) -> None:
    assert valid_request_id(value) is ok
    kept = request_id_from(value)
    if ok:
        assert kept == value
    else:
        assert kept != value and valid_request_id(kept) and len(kept) == 32


def test_new_ids_differ_and_the_context_is_restored() -> None:
    assert new_request_id() != new_request_id()
    assert current_request_id() is None
    with request_context("a"):
        with request_context("b"):
            assert current_request_id() == "b"
        assert current_request_id() == "a"
    assert current_request_id() is None


def test_configure_logging_twice_keeps_one_handler_and_silences_uvicorn_access() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    stream = io.StringIO()
    try:
        configure_logging("text", "INFO", stream=io.StringIO())
        configure_logging("json", "INFO", stream=stream)
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 1
        logging.getLogger("zhiku.some").info("hi %s", "there", extra={"n": 1})
        logging.getLogger("uvicorn.access").info("GET / 200")
        lines = stream.getvalue().splitlines()
        assert [json.loads(x)["msg"] for x in lines] == ["hi there"]
        with pytest.raises(ValueError):
            configure_logging("xml", "INFO")  # type: ignore[arg-type]
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)
        logging.getLogger("uvicorn.access").disabled = False


# --- the middleware ---------------------------------------------------------------------------


def test_middleware_passes_each_body_part_on_at_once_and_sets_the_header() -> None:
    """A streamed body (server-sent events) is not buffered: each part reaches the server
    before the app produces the next; the id is in the response and in the log context."""
    sent: list[dict[str, Any]] = []
    seen_ids: list[str | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            seen_ids.append(current_request_id())
            await send({"type": "http.response.body", "body": b"part%d" % i, "more_body": True})
            assert len(sent) == i + 2  # start + the parts so far: already passed on
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    observed = []
    middleware = RequestContextMiddleware(app, observers=[observed.append])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-request-id", b"stream-1")],
    }
    asyncio.run(middleware(scope, receive, send))
    assert dict(sent[0]["headers"])[b"x-request-id"] == b"stream-1"
    assert seen_ids == ["stream-1"] * 3
    assert [m.get("body") for m in sent[1:]] == [b"part0", b"part1", b"part2", b""]
    assert observed[0].status == 200 and observed[0].route == "<unmatched>"
    assert current_request_id() is None


def test_middleware_reads_the_error_code_and_sees_a_crash_as_500() -> None:
    async def failing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = json.dumps({"error": {"code": "model_unavailable", "message": "down"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def crashing(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    async def send(message: dict[str, Any]) -> None:
        return None

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    observed: list[Any] = []
    scope = {"type": "http", "method": "POST", "path": "/api/v1/chat", "headers": []}
    asyncio.run(RequestContextMiddleware(failing, [observed.append])(dict(scope), receive, send))
    with pytest.raises(RuntimeError):
        asyncio.run(
            RequestContextMiddleware(crashing, [observed.append])(dict(scope), receive, send)
        )
    assert [(x.status, x.error_code) for x in observed] == [(503, "model_unavailable"), (500, None)]


def test_route_template_never_falls_back_to_the_raw_path() -> None:
    assert route_template({"path": "/api/v1/documents/42"}) == "<unmatched>"


def test_model_calls_carry_the_request_id() -> None:
    """Chat and streamed requests to the model server send the current id as X-Request-Id
    (none outside a request)."""
    import httpx

    from serving.llm_client import EndpointConfig, LLMClient

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("X-Request-Id"))
        if json.loads(request.content).get("stream"):
            body = (
                'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "hi"}, '
                '"finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
            )
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        reply = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=reply)

    async def run() -> None:
        config = EndpointConfig(base_urls=("http://model/v1",), model="m")
        client = LLMClient(config, transport=httpx.MockTransport(handler))
        try:
            with request_context("rid-9"):
                await client.chat([{"role": "user", "content": "q"}])
                async for _ in client.stream([{"role": "user", "content": "q"}]):
                    pass
            await client.chat([{"role": "user", "content": "q"}])
        finally:
            await client.aclose()

    asyncio.run(run())
    assert seen == ["rid-9", "rid-9", None]
