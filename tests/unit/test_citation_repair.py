"""Markers added to sentences that state a passage without citing it; the span a claim rests
on (pure)."""

from __future__ import annotations

from core.types import Passage
from serving.citations import AUTO_CITE_THRESHOLD, add_missing_citations, cited_span


def _p(n: int, text: str) -> Passage:
    return Passage(
        chunk_id=n,
        document_id=100 + n,
        library_id=1,
        text=text,
        title=f"doc{n}",
        heading_path=[],
        page_start=None,
        page_end=None,
        score=1.0,
    )


PASSAGES = [
    _p(1, "Replace the shaft seal of the XR-7731-B pump every six months."),
    _p(2, "员工入职满一年后享有五天带薪年假，满十年后享有十天。"),
    _p(3, "The canteen opens at 11:30 and closes at 13:30."),
]


# --- add_missing_citations -------------------------------------------------------------------


def test_uncited_sentence_gets_the_marker_of_the_passage_it_states() -> None:
    answer = "员工入职满一年后享有五天带薪年假。"
    text, added = add_missing_citations(answer, PASSAGES)
    assert text == "员工入职满一年后享有五天带薪年假。[2]"
    assert added == ["员工入职满一年后享有五天带薪年假。"]


def test_english_sentences_and_spacing_are_kept() -> None:
    answer = "The canteen opens at 11:30. Replace the shaft seal every six months.\nThanks."
    text, added = add_missing_citations(answer, PASSAGES)
    assert text == (
        "The canteen opens at 11:30.[3] Replace the shaft seal every six months.[1]\nThanks."
    )
    assert added == ["The canteen opens at 11:30.", "Replace the shaft seal every six months."]


def test_cited_short_and_unmatched_sentences_are_left_alone() -> None:
    answer = (
        "Replace the shaft seal every six months [3]. "  # already cited (even if wrongly)
        "OK. "  # too short to be a claim
        "Staff get a bonus at the end of every quarter."  # in no passage
    )
    text, added = add_missing_citations(answer, PASSAGES)
    assert text == answer
    assert added == []


def test_threshold_decides() -> None:
    # "The canteen closes at 13:30 on Fridays": 4 of 5 content tokens are in passage 3.
    answer = "The canteen closes at 13:30 on Fridays."
    assert add_missing_citations(answer, PASSAGES)[0] == answer + "[3]"
    assert add_missing_citations(answer, PASSAGES, threshold=0.9) == (answer, [])
    assert AUTO_CITE_THRESHOLD == 0.7


def test_best_passage_wins_and_only_missing_markers_are_added() -> None:
    answer = "入职满一年后享有五天带薪年假[2]。食堂十一点半开门。 The canteen opens at 11:30."
    text, added = add_missing_citations(answer, PASSAGES)
    assert (
        text == "入职满一年后享有五天带薪年假[2]。食堂十一点半开门。 The canteen opens at 11:30.[3]"
    )
    assert added == ["The canteen opens at 11:30."]


def test_no_passages_no_change() -> None:
    assert add_missing_citations("The canteen opens at 11:30.", []) == (
        "The canteen opens at 11:30.",
        [],
    )
    assert add_missing_citations("", PASSAGES) == ("", [])


# --- cited_span ------------------------------------------------------------------------------

MANUAL = (
    "  Replace the shaft seal every six months. The canteen opens at 11:30.\n"
    "员工入职满一年后享有五天带薪年假。停车场在地下二层。"
)


def _span(claim: str, text: str = MANUAL) -> str:
    start, end = cited_span(claim, text)
    assert 0 <= start <= end <= len(text)
    return text[start:end]


def test_cited_span_is_the_best_matching_sentence() -> None:
    assert _span("When does the canteen open? At 11:30 [1].") == "The canteen opens at 11:30."
    assert _span("年假有五天[1]。") == "员工入职满一年后享有五天带薪年假。"
    assert _span("停车场在哪里？") == "停车场在地下二层。"


def test_cited_span_skips_leading_whitespace() -> None:
    assert _span("How often is the shaft seal replaced?") == (
        "Replace the shaft seal every six months."
    )


def test_cited_span_is_the_whole_passage_when_nothing_matches() -> None:
    assert cited_span("Quarterly bonuses.", MANUAL) == (2, len(MANUAL))
    assert cited_span("anything", "") == (0, 0)
