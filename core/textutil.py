"""Small text helpers shared by ingestion and retrieval."""

from __future__ import annotations


def contextual_text(title: str, text: str) -> str:
    """What to embed or rerank for a chunk: its document's title, then the chunk, unless the
    chunk already starts with the title."""
    if not title or text.lstrip().startswith(title[: min(len(title), 60)]):
        return text
    return f"{title}\n{text}"
