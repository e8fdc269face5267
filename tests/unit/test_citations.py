"""Citation markers, sources and per-sentence support checks (pure)."""

from __future__ import annotations

from core.types import Passage
from serving.citations import content_tokens, resolve, split_sentences


def _p(n: int, text: str) -> Passage:
    return Passage(
        chunk_id=n,
        document_id=100 + n,
        library_id=1,
        text=text,
        title=f"doc{n}",
        heading_path=[],
        page_start=n,
        page_end=n,
        score=1.0,
    )


PASSAGES = [
    _p(1, "Replace the shaft seal of the XR-7731-B pump every six months."),
    _p(2, "员工入职满一年后享有五天带薪年假，满十年后享有十天。"),
    _p(3, "The canteen opens at 11:30."),
]


def test_markers_map_to_passages_and_invalid_ones_are_removed() -> None:
    answer = "Replace the seal every six months [1][7]. Annual leave is five days [2, 9]."
    out = resolve(answer, PASSAGES)
    assert out.text == "Replace the seal every six months [1]. Annual leave is five days [2]."
    assert [c.marker for c in out.citations] == [1, 2]
    assert out.removed_markers == [7, 9]
    assert [p.chunk_id for p in out.sources] == [1, 2]  # only cited passages, once each
    c = out.citations[0]
    assert out.text[c.start : c.end] == "[1]" and c.passage.document_id == 101


def test_grouped_and_full_width_markers() -> None:
    out = resolve("年假是五天【2】，食堂十一点半开门［3］。见[1，2]", PASSAGES)
    assert out.text == "年假是五天[2]，食堂十一点半开门[3]。见[1][2]"
    assert [p.chunk_id for p in out.sources] == [2, 3, 1]


def test_sentences_keep_their_trailing_markers() -> None:
    text = "年假是五天。[2] The seal lasts six months.[1] Thanks!"
    spans = [text[a:b].strip() for a, b in split_sentences(text)]
    assert spans == ["年假是五天。[2]", "The seal lasts six months.[1]", "Thanks!"]


def test_supported_unsupported_and_uncited_sentences_are_flagged() -> None:
    answer = (
        "Replace the shaft seal every six months [1]. "
        "The pump runs on diesel fuel and needs oil daily [1]. "
        "Staff get a bonus at the end of every quarter. "
        "OK."
    )
    checks = resolve(answer, PASSAGES).sentences
    assert [c.flag for c in checks] == [None, "unsupported", "uncited", None]
    assert checks[0].support is not None and checks[0].support >= 0.5
    assert checks[1].cited == [1] and checks[2].support is None


def test_chinese_support_and_an_embedding_similarity() -> None:
    answer = "入职满一年后有五天带薪年假[2]。"
    (check,) = resolve(answer, PASSAGES).sentences
    assert check.flag is None and check.support is not None and check.support > 0.7
    (low,) = resolve(answer, PASSAGES, similarity=lambda a, b: 0.0).sentences
    assert low.support is not None and low.support < check.support


def test_content_tokens() -> None:
    assert content_tokens("The Pump [1] 年假") == {"pump", "年假"}
