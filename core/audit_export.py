"""Audit events as JSON Lines or CSV text, one line at a time (for streamed exports).

CSV cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
carriage return) get a leading `'`, so a crafted username or target cannot execute anything
when an auditor opens the file in Excel or LibreOffice.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any, Literal

from core.models import AuditEvent

ExportFormat = Literal["csv", "jsonl"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "jsonl")
COLUMNS = (
    "id",
    "at",
    "action",
    "actor_user_id",
    "actor_api_key_id",
    "target_type",
    "target_id",
    "client_ip",
    "detail",
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
BOM = "\ufeff"  # lets Excel read a CSV file as UTF-8


def iso_utc(at: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, microseconds always present (sorts as text)."""
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_dict(event: AuditEvent) -> dict[str, Any]:
    """The event as plain JSON values, keys in `COLUMNS` order."""
    return {
        "id": event.id,
        "at": iso_utc(event.at),
        "action": event.action,
        "actor_user_id": event.actor_user_id,
        "actor_api_key_id": event.actor_api_key_id,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "client_ip": event.client_ip,
        "detail": event.detail,
    }


def to_jsonl_line(event: AuditEvent) -> str:
    """One JSON object and a newline."""
    return json.dumps(event_dict(event), ensure_ascii=False, default=str) + "\n"


def csv_safe(value: str) -> str:
    """The cell text, with a leading `'` if a spreadsheet would take it for a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def csv_row(event: AuditEvent) -> list[str]:
    """The event's cells in `COLUMNS` order (empty for a missing id); detail as JSON."""
    values = event_dict(event)
    cells: list[str] = []
    for name in COLUMNS:
        value = values[name]
        if value is None:
            text = ""
        elif name == "detail":
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        else:
            text = str(value)
        cells.append(csv_safe(text))
    return cells


def csv_line(cells: Sequence[str]) -> str:
    """One CSV record (RFC 4180 quoting, CRLF line end)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()


def csv_header() -> str:
    return csv_line(COLUMNS)


def iter_csv(events: Iterable[AuditEvent], *, bom: bool = False) -> Iterator[str]:
    """The header, then one record per event."""
    yield (BOM if bom else "") + csv_header()
    for event in events:
        yield csv_line(csv_row(event))


def iter_jsonl(events: Iterable[AuditEvent]) -> Iterator[str]:
    for event in events:
        yield to_jsonl_line(event)


def iter_export(
    events: Iterable[AuditEvent], fmt: ExportFormat, *, bom: bool = False
) -> Iterator[str]:
    """The export as text pieces; `bom` applies to CSV only."""
    if fmt == "csv":
        return iter_csv(events, bom=bom)
    if fmt == "jsonl":
        return iter_jsonl(events)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def export_filename(fmt: ExportFormat, day: date) -> str:
    return f"zhiku-audit-{day:%Y%m%d}.{fmt}"
