"""Structured logs: one JSON object per line, and the request id that ties them together.

Every line has `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `msg` and
`request_id` (null outside a request), plus the fields passed with `extra={...}` and `exc`
(the traceback) when there is one. The request id lives in a context variable: the api's
middleware sets it for each HTTP request, the worker for each task (from the task's message
headers), and the model client sends it on to the model server — so one id finds a request's
lines in every process. No project imports: every package may use this module.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")
LOG_FORMAT_ENV = "ZHIKU_LOG_FORMAT"
REQUEST_ID_HEADER = "X-Request-ID"
# Celery message header that carries the request id into a task.
TASK_HEADER = "zhiku_request_id"
REQUEST_ID_MAX = 64
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{REQUEST_ID_MAX}}}")

_current: ContextVar[str | None] = ContextVar("zhiku_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "request_id", "color_message"}
)


def valid_request_id(value: str | None) -> bool:
    """A caller's id is kept when it is 1–64 characters of letters, digits, `.`, `_`, `-`."""
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_from(value: str | None) -> str:
    """The caller's id when well formed, else a new one."""
    return value if value is not None and valid_request_id(value) else new_request_id()


def current_request_id() -> str | None:
    return _current.get()


def set_request_id(value: str | None) -> None:
    """Set the id for the rest of this context (a worker task: reset it when the task ends)."""
    _current.set(value)


@contextmanager
def request_context(value: str | None) -> Iterator[None]:
    token = _current.set(value)
    try:
        yield
    finally:
        _current.reset(token)


def _ts(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON. Values JSON cannot hold are written as their str()."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or _current.get(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """For people at a terminal: time, level, logger, [request id], message, extra fields."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(rid)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__["rid"] = getattr(record, "request_id", None) or _current.get() or "-"
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _RECORD_FIELDS and k != "rid" and not k.startswith("_")
        )
        line = super().format(record)
        del record.__dict__["rid"]
        return f"{line} {extras}" if extras else line


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, so that configuring again replaces it instead of adding a second one."""


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; use {' or '.join(LOG_FORMATS)}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure_logging(
    fmt: LogFormat = "json", level: int | str = "INFO", stream: TextIO | None = None
) -> None:
    """Send every logger's records to one handler on the root logger, in `fmt`.

    Uvicorn's loggers pass their records up to it; its access log is turned off, since the
    api writes its own access line (with the request id and the route template)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # warnings become records too: every line is in `fmt`
    for name in ("uvicorn", "uvicorn.error"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
