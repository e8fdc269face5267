"""HTTP hardening: security headers on every response, CORS only for configured origins.

Both are plain ASGI middleware (answers stream as server-sent events and must not be
buffered), placed outside FastAPI's error handling so that a 500 carries them too.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.settings import Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)
HSTS = "max-age=31536000"
NO_STORE_PREFIXES = ("/api/", "/v1/")  # answers and documents must not land in shared caches
CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
CORS_HEADERS = ["Authorization", "Content-Type", "X-CSRF-Token", "X-Zhiku-User", "X-Request-ID"]


class SecurityHeadersMiddleware:
    """Adds the security headers to each HTTP response's start message (a header the route
    already set is left as it is). Bodies pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        no_store = str(scope.get("path", "")).startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                if https:
                    headers.setdefault("Strict-Transport-Security", HSTS)
                if no_store:
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def install(app: FastAPI, settings: Settings) -> None:
    """Wrap the app's middleware stack: security headers outermost, then CORS (only when
    `settings.cors_origins` names origins), then FastAPI's own stack with its error handlers.

    Starlette puts its server-error middleware outside every user middleware, so middleware
    added with `add_middleware` never sees a 500; wrapping the built stack does."""
    origins = cors_origins(settings)
    build = app.build_middleware_stack

    def build_hardened() -> ASGIApp:
        inner = build()
        if origins:
            inner = CORSMiddleware(
                inner,
                allow_origins=origins,
                allow_credentials=True,
                allow_methods=CORS_METHODS,
                allow_headers=CORS_HEADERS,
                expose_headers=["Retry-After", "X-Request-ID"],
            )
        return SecurityHeadersMiddleware(inner)

    app.build_middleware_stack = build_hardened  # type: ignore[method-assign]
