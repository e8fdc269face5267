"""Turn `unstructured` elements into `core.types.ParsedElement` values."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from core.types import ParsedElement

_WS = re.compile(r"\s+")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
# tesseract puts a space between every pair of Chinese characters; Chinese has no spaces.
_CJK_GAP = re.compile(f"(?<=[{_HAN}])[ \t]+(?=[{_HAN}])")

# unstructured metadata fields worth handing on (all small).
_KEEP_METADATA = (
    "page_name",
    "category_depth",
    "parent_id",
    "subject",
    "sent_from",
    "sent_to",
    "link_urls",
    "header_footer_type",
)
_SKIP_CATEGORIES = frozenset({"PageBreak"})


def join_cjk(text: str) -> str:
    """Remove the spaces OCR puts between Chinese characters."""
    return _CJK_GAP.sub("", text)


def table_rows(html: str) -> list[list[str]]:
    """Rows of cell texts of the outer table in `html` (nested tables flatten into cells)."""
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:  # lxml raises a few different things on junk input
        return []
    tables = [root] if root.tag == "table" else root.xpath("//table")
    if not tables:
        return []
    table = tables[0]
    for br in table.iter("br"):
        br.tail = " " + (br.tail or "")
    rows: list[list[str]] = []
    for tr in table.xpath("./tr|./thead/tr|./tbody/tr|./tfoot/tr"):
        cells = [_WS.sub(" ", cell.text_content()).strip() for cell in tr.xpath("./th|./td")]
        if any(cells):
            rows.append(cells)
    return _drop_empty_columns(rows)


def _drop_empty_columns(rows: list[list[str]]) -> list[list[str]]:
    """Spreadsheet ranges carry columns that are empty in every row; drop them, and the empty
    cells trailing a row."""
    width = max((len(r) for r in rows), default=0)
    keep = [i for i in range(width) if any(i < len(r) and r[i] for r in rows)]
    out = []
    for row in rows:
        cells = [row[i] if i < len(row) else "" for i in keep]
        while cells and not cells[-1]:
            cells.pop()
        out.append(cells)
    return out


def table_text(html: str) -> str:
    """A table as text: one line per row (header row first), cells joined by " | "."""
    return "\n".join(" | ".join(row) for row in table_rows(html))


def _metadata(md: Any, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _KEEP_METADATA:
        value = getattr(md, key, None)
        if value not in (None, [], ""):
            out[key] = value
    out.update(extra)
    return out


def convert(
    elements: Iterable[Any],
    *,
    ocr: bool = False,
    page_offset: int = 0,
    extra_metadata: dict[str, Any] | None = None,
) -> list[ParsedElement]:
    """Convert unstructured elements, dropping empty ones and page breaks.

    Tables get `text` from their HTML (header row kept) and keep the HTML; a one-cell "table"
    (HTML e-mail layout) becomes plain text. OCR text has its CJK spacing repaired.
    """
    extra = dict(extra_metadata or {})
    if ocr:
        extra["ocr"] = True
    out: list[ParsedElement] = []
    for el in elements:
        category = str(getattr(el, "category", "") or type(el).__name__)
        if category in _SKIP_CATEGORIES:
            continue
        md = el.metadata
        text = str(el.text or "")
        html: str | None = None
        if category == "Table":
            html = getattr(md, "text_as_html", None) or None
            if html:
                rows = table_rows(html)
                if sum(len(r) for r in rows) == 1:
                    category, html, text = "NarrativeText", None, rows[0][0]
                elif rows:
                    text = "\n".join(" | ".join(r) for r in rows)
        if ocr:
            text = join_cjk(text)
        text = text.strip()
        if not text:
            continue
        page = getattr(md, "page_number", None)
        depth = getattr(md, "category_depth", None)
        out.append(
            ParsedElement(
                category=category,
                text=text,
                page=page + page_offset if isinstance(page, int) else None,
                level=depth if category == "Title" and isinstance(depth, int) else None,
                html=html,
                metadata=_metadata(md, extra),
            )
        )
    return out


def annotate(elements: list[ParsedElement], **extra: Any) -> list[ParsedElement]:
    """Copies of `elements` with extra metadata keys."""
    return [replace(e, metadata={**e.metadata, **extra}) for e in elements]
