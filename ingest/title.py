"""A document's title, from its first elements: what search results and citations call it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.types import ParsedElement

MAX_TITLE_CHARS = 200
_LOOKS_LIKE_URL = re.compile(r"^\s*(https?://|www\.|doi:)", re.IGNORECASE)
_HEAD_ELEMENTS = 8


def _usable(text: str) -> bool:
    text = text.strip()
    return 2 <= len(text) <= MAX_TITLE_CHARS and not _LOOKS_LIKE_URL.match(text)


def document_title(elements: Sequence[ParsedElement]) -> str:
    """The first heading among the first elements, else the first line of the document when it
    is short and more text follows; "" when there is nothing title-like (the caller falls back
    to the file name)."""
    head = [e for e in elements[:_HEAD_ELEMENTS] if e.text.strip()]
    for element in head:
        if element.category == "Title" and _usable(element.text):
            return " ".join(element.text.split())
    if not head:
        return ""
    first_line = head[0].text.strip().splitlines()[0].strip()
    rest = len(head) > 1 or len(head[0].text.strip()) > len(first_line)
    return " ".join(first_line.split()) if rest and _usable(first_line) else ""
