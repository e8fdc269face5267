"""Render JSON as readable "path: value" lines, grouped into elements.

Iterative (no recursion limit), bounded (`max_values`), and JSON Lines aware.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from core.errors import BadDocument
from core.types import ParsedElement

MAX_VALUES = 200_000
MAX_VALUE_CHARS = 4_000
LINES_PER_ELEMENT = 60
_PLAIN_KEY = re.compile(r"^[^\s.\[\]\"]+$")


def _key_path(parent: str, key: str) -> str:
    part = key if _PLAIN_KEY.match(key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        text = value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + " …"
        return text.replace("\r\n", "\n").replace("\n", " ⏎ ")
    return json.dumps(value, ensure_ascii=False)


def _lines(value: Any, root: str) -> Iterator[str]:
    """Depth-first "path: value" lines, in document order, without recursion."""
    stack: list[tuple[str, Any]] = [(root, value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if not node:
                yield f"{path or '(root)'}: {{}}"
            stack.extend(reversed([(_key_path(path, str(k)), v) for k, v in node.items()]))
        elif isinstance(node, list):
            if not node:
                yield f"{path or '(root)'}: []"
            stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(node)]))
        else:
            yield f"{path or '(value)'}: {_scalar(node)}"


def _top_level(doc: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict) and doc:
        for key, value in doc.items():
            yield _key_path("", str(key)), value
    elif isinstance(doc, list) and doc:
        for i, value in enumerate(doc):
            yield f"[{i}]", value
    else:
        yield "", doc


def load_json(text: str) -> tuple[Any, bool]:
    """The parsed document and whether it was JSON Lines. BadDocument when neither parses."""
    try:
        return json.loads(text), False
    except RecursionError as exc:
        raise BadDocument("could not be read: JSON is nested too deeply") from exc
    except ValueError as first_error:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                raise BadDocument(
                    f"could not be read: looks corrupt (invalid JSON: {first_error}; "
                    f"not JSON Lines either, line {number})"
                ) from None
            except RecursionError as exc:
                raise BadDocument("could not be read: JSON is nested too deeply") from exc
        return records, True


def json_elements(text: str) -> tuple[list[ParsedElement], list[str]]:
    """Elements for a JSON (or JSON Lines) document, and warnings.

    Consecutive top-level entries share an element up to LINES_PER_ELEMENT lines; a bigger
    entry is split. `metadata["json_path"]` is the first top-level path in the element.
    """
    doc, is_lines = load_json(text)
    elements: list[ParsedElement] = []
    warnings: list[str] = []
    chunk: list[str] = []
    chunk_path = ""
    emitted = 0
    for path, value in _top_level(doc):
        lines = []
        for line in _lines(value, path):
            if emitted >= MAX_VALUES:
                break
            lines.append(line)
            emitted += 1
        if chunk and len(chunk) + len(lines) > LINES_PER_ELEMENT:
            elements.append(_element(chunk, chunk_path, is_lines))
            chunk = []
        if not chunk:
            chunk_path = path
        chunk += lines
        while len(chunk) > LINES_PER_ELEMENT:
            elements.append(_element(chunk[:LINES_PER_ELEMENT], chunk_path, is_lines))
            chunk = chunk[LINES_PER_ELEMENT:]
        if emitted >= MAX_VALUES:
            warnings.append(f"JSON has more than {MAX_VALUES} values; the rest was skipped")
            break
    if chunk:
        elements.append(_element(chunk, chunk_path, is_lines))
    return elements, warnings


def _element(lines: list[str], path: str, is_lines: bool) -> ParsedElement:
    meta: dict[str, Any] = {"json_path": path}
    if is_lines:
        meta["json_lines"] = True
    return ParsedElement(category="NarrativeText", text="\n".join(lines), metadata=meta)
