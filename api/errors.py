"""Map errors to JSON responses: {"error": {"code", "message"}}. Never a bare 500 trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import RateLimited, ZhikuError
from core.storage import is_disk_full

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    """Every error: a stable code and a message a person can act on."""

    error: ErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


# Documented on every route (FastAPI's own 422 body is replaced by ours).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented("Not signed in, or the token, session or API key is no longer valid"),
    403: _documented("Signed in, but not allowed (role, scope, CSRF, password change due)"),
    404: _documented("Not found — also what anything you may not read looks like"),
    422: _documented("The request is invalid; the message says what to change"),
    429: _documented("Too many requests or failed sign-ins; see Retry-After"),
}


DISK_FULL_MESSAGE = (
    "the server's data disk is full, so nothing can be saved. An administrator must free space "
    "on the disk that holds the data directory and the database; then try again"
)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def install(app: FastAPI) -> None:
    @app.exception_handler(ZhikuError)
    async def _zhiku(_: Request, exc: ZhikuError) -> JSONResponse:
        headers: dict[str, str] | None = None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(
            error_body(exc.code, exc.reason), status_code=exc.status, headers=headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body("http_error", str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid_request", "; ".join(parts)), status_code=422)

    @app.exception_handler(DataError)
    @app.exception_handler(OverflowError)
    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # an id or number beyond the database's integer range (2**31 on PostgreSQL)
        log.info("out-of-range value on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            error_body("out_of_range", "a number in the request is out of range"),
            status_code=422,
        )

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        # SQLite keeps its file in the data dir: a full disk fails every write (a sign-in's
        # touch, an audit event). Say so instead of "something went wrong".
        if not is_disk_full(exc):
            return await _unexpected(request, exc)
        log.error("the database's disk is full on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("disk_full", DISK_FULL_MESSAGE), status_code=507)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", "something went wrong on the server; it has been logged"),
            status_code=500,
        )
