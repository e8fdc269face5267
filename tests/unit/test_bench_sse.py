"""The benches' reader of the chat api's server-sent events."""

from __future__ import annotations

import asyncio

import httpx

from cli.bench_chat import sse_events

STREAM = (
    'event: token\ndata: {"text": "年假"}\n\n'
    ": a comment line\n\n"
    'event: citation\ndata: {"marker": 1}\n\n'
    'event: token\ndata: {"text": "五天[1]"}\n\n'
    'event: done\ndata: {"answer": "年假五天[1]", "flags": {"fallback": null}}\n\n'
)


def test_events_come_out_in_order_with_their_data() -> None:
    async def read() -> list[tuple[str, dict[str, object]]]:
        transport = httpx.MockTransport(lambda _: httpx.Response(200, text=STREAM))
        async with (
            httpx.AsyncClient(transport=transport) as client,
            client.stream("POST", "http://zhiku.test/api/v1/chat") as response,
        ):
            return [pair async for pair in sse_events(response)]

    assert asyncio.run(read()) == [
        ("token", {"text": "年假"}),
        ("citation", {"marker": 1}),
        ("token", {"text": "五天[1]"}),
        ("done", {"answer": "年假五天[1]", "flags": {"fallback": None}}),
    ]
