"""A request id for every HTTP request, and one access-log line when it ends.

The id is the caller's `X-Request-ID` when it is well formed (1–64 characters of letters,
digits, `.`, `_`, `-`), else a new one. It is set in the logging context for the request's
duration (core.logging_setup), stored as `request.state.request_id`, and returned in the
`X-Request-ID` response header. When the response is done, observers (the metrics) get the
exchange: method, route template, status, duration and, for error responses, the error code
from the `{"error": {"code"}}` body.

Plain ASGI, outermost (outside FastAPI's error handling, so a 500 is seen and carries the id
too): bodies pass through unbuffered, so server-sent events stream as before.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logging_setup import REQUEST_ID_HEADER, request_context, request_id_from

access_log = logging.getLogger("zhiku.access")
UNMATCHED = "<unmatched>"  # the route label of a path no route matches (no raw paths as labels)
ERROR_BODY_LIMIT = 8192  # bytes of a JSON error body kept to read its code
# Probes and scrapes come every few seconds: their successful lines are logged at DEBUG.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Exchange:
    request_id: str
    method: str
    route: str  # the route's path template, e.g. /api/v1/documents/{document_id}
    path: str
    status: int
    seconds: float
    error_code: str | None  # from the JSON error body of a 4xx/5xx


Observer = Callable[[Exchange], None]


def route_template(scope: Scope) -> str:
    """The matched route's path template, with the prefixes of included routers and mounts."""
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if fastapi_scope else None
    template = getattr(context, "path_format", None)
    if isinstance(template, str) and template:
        return template
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if isinstance(template, str) and template:
        return str(scope.get("root_path", "")) + template
    # A mount (the web UI's static files): its path was added to root_path.
    app_root = str(scope.get("app_root_path", ""))
    mounted = str(scope.get("root_path", ""))[len(app_root) :]
    if mounted and "endpoint" in scope:
        return mounted + "/{path}"
    return UNMATCHED


def _error_code(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, observers: Sequence[Observer] = ()) -> None:
        self.app = app
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next(
            (
                v.decode("latin-1")
                for k, v in scope.get("headers", [])
                if k.lower() == b"x-request-id"
            ),
            None,
        )
        request_id = request_id_from(sent)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500  # when the app fails before it answers
        keep_body = False
        error_body = bytearray()

        async def send_with_id(message: Message) -> None:
            nonlocal status, keep_body
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                keep_body = status >= 400 and headers.get("content-type", "").startswith(
                    "application/json"
                )
            elif message["type"] == "http.response.body" and keep_body:
                room = ERROR_BODY_LIMIT - len(error_body)
                if room > 0:
                    error_body.extend(message.get("body", b"")[:room])
            await send(message)

        with request_context(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self._finish(scope, request_id, status, started, bytes(error_body))

    def _finish(
        self, scope: Scope, request_id: str, status: int, started: float, body: bytes
    ) -> None:
        exchange = Exchange(
            request_id=request_id,
            method=str(scope.get("method", "")),
            route=route_template(scope),
            path=str(scope.get("path", "")),
            status=status,
            seconds=time.perf_counter() - started,
            error_code=_error_code(body) if body else None,
        )
        level = logging.DEBUG if exchange.route in QUIET_ROUTES and status < 400 else logging.INFO
        client = scope.get("client")
        access_log.log(
            level,
            "%s %s %d %.1f ms",
            exchange.method,
            exchange.path,
            status,
            exchange.seconds * 1000,
            extra={
                "request_id": request_id,
                "method": exchange.method,
                "route": exchange.route,
                "path": exchange.path,
                "status": status,
                "duration_ms": round(exchange.seconds * 1000, 1),
                "error_code": exchange.error_code,
                "client": client[0] if client else None,
            },
        )
        for observe in self.observers:
            try:
                observe(exchange)
            except Exception:  # an observer's fault never fails the request
                access_log.exception("request observer failed")


def install(app: FastAPI, observers: Sequence[Observer] = ()) -> None:
    """Wrap the app's whole middleware stack (call after http_security.install: this one ends
    up outermost)."""
    build = app.build_middleware_stack

    def build_with_context() -> ASGIApp:
        return RequestContextMiddleware(build(), observers)

    app.build_middleware_stack = build_with_context  # type: ignore[method-assign]
