"""Document titles (pure)."""

from __future__ import annotations

from core.types import ParsedElement
from ingest.title import document_title


def _el(category: str, text: str) -> ParsedElement:
    return ParsedElement(category=category, text=text)


def test_first_heading_is_the_title() -> None:
    elements = [
        _el("NarrativeText", "Confidential"),
        _el("Title", "Travel  and expenses policy"),
        _el("NarrativeText", "Staff may claim lodging."),
    ]
    assert document_title(elements) == "Travel and expenses policy"


def test_first_short_line_when_there_is_no_heading() -> None:
    text = "A Global Champion for Health—WHO's Next?\nhttps://example.org/x\nAbstract: ..."
    assert (
        document_title([_el("NarrativeText", text)]) == "A Global Champion for Health—WHO's Next?"
    )


def test_no_title_for_a_single_line_urls_or_long_lines() -> None:
    assert document_title([_el("NarrativeText", "Only one short snippet of text.")]) == ""
    assert document_title([_el("Title", "https://example.org/page"), _el("Text", "x")]) == ""
    assert document_title([_el("NarrativeText", "word " * 100), _el("Text", "more")]) == ""
    assert document_title([]) == ""
