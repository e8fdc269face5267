"""Sensitive-word lexicon (Aho-Corasick, pure)."""

from __future__ import annotations

import random
import time

from serving.lexicon import Lexicon, LexiconHit


def _spans(lex: Lexicon, text: str) -> list[tuple[str, str]]:
    return [(h.term, text[h.start : h.end]) for h in lex.find(text)]


def test_chinese_and_english_terms() -> None:
    lex = Lexicon([("暴力", "violence"), ("violence", "violence"), ("法轮", "politics")])
    text = "他说暴力不好, violence is bad"
    hits = lex.find(text)
    assert [(h.term, h.category) for h in hits] == [
        ("暴力", "violence"),
        ("violence", "violence"),
    ]
    assert [text[h.start : h.end] for h in hits] == ["暴力", "violence"]
    assert hits[0] == LexiconHit("暴力", "violence", 2, 4)


def test_overlapping_terms_are_all_reported() -> None:
    cn = Lexicon([(t, "custom") for t in ("他", "她们", "她们的", "们的")])
    assert _spans(cn, "看她们的书") == [("她们的", "她们的"), ("她们", "她们"), ("们的", "们的")]
    # Classic he/she/hers. ASCII terms are whole-word, so "ushers" alone yields nothing,
    # but spelled out with separators every letter is its own boundary.
    classic = Lexicon([(t, "custom") for t in ("he", "she", "his", "hers")])
    assert classic.find("ushers") == []
    hits = classic.find("s h e r s")
    assert [(h.term, h.start, h.end) for h in hits] == [
        ("she", 0, 5),
        ("hers", 2, 9),
        ("he", 2, 5),
    ]
    # Without word boundaries (non-ASCII keys) the overlaps inside one word are all found.
    accented = Lexicon([(t, "custom") for t in ("hé", "shé", "hérs")])
    hits = accented.find("ushérs")
    assert [(h.term, h.start, h.end) for h in hits] == [
        ("shé", 1, 4),
        ("hérs", 2, 6),
        ("hé", 2, 4),
    ]


def test_fullwidth_input_offsets_refer_to_original_text() -> None:
    lex = Lexicon([("violence", "violence")])
    text = "请勿ＶＩＯＬＥＮＣＥ。"
    hits = lex.find(text)
    assert len(hits) == 1
    assert text[hits[0].start : hits[0].end] == "ＶＩＯＬＥＮＣＥ"
    assert (hits[0].start, hits[0].end) == (2, 10)


def test_length_changing_normalisation_keeps_offsets() -> None:
    lex = Lexicon([("fish", "custom"), ("株", "custom")])
    text = "a ﬁsh and ㈱"
    hits = lex.find(text)
    assert [text[h.start : h.end] for h in hits] == ["ﬁsh", "㈱"]


def test_fullwidth_and_uppercase_terms_are_normalised() -> None:
    lex = Lexicon([("ＶＩＯＬＥＮＣＥ", "violence")])
    hits = lex.find("no Violence here")
    assert [(h.term, h.start, h.end) for h in hits] == [("ＶＩＯＬＥＮＣＥ", 3, 11)]


def test_separator_dodges_still_match() -> None:
    lex = Lexicon([("暴力", "violence"), ("violence", "violence")])
    for text in ("暴 力", "暴*力", "暴\u200b力", "暴\ufeff力", "暴　力", "暴＊力"):
        hits = lex.find(text)
        assert [(h.term, h.start, h.end) for h in hits] == [("暴力", 0, len(text))], text
    for text in ("v.i.o.l.e.n.c.e", "v i o l e n c e", "vio-lence", "vio_lence", "vio\u200blence"):
        hits = lex.find(text)
        assert [(h.term, h.start, h.end) for h in hits] == [("violence", 0, len(text))], text
    text = "this is v.i.o.l.e.n.c.e!"
    (hit,) = lex.find(text)
    assert text[hit.start : hit.end] == "v.i.o.l.e.n.c.e"


def test_ascii_terms_match_whole_words_only() -> None:
    lex = Lexicon([("ass", "insult")])
    for text in ("class", "assess", "passage", "glass5", "ass1"):
        assert lex.find(text) == [], text
    for text in ("ass", "you ass!", "an ass.", "蠢ass", "ASS", "bad-ass"):
        assert [h.term for h in lex.find(text)] == ["ass"], text


def test_from_lines_parses_comments_blanks_and_categories() -> None:
    lines = [
        "\ufeff# sensitive words\n",
        "\n",
        "暴力\tviolence\n",
        "   \n",
        "  # indented comment\n",
        "法轮功\tpolitics\r\n",
        "badword\n",
        "other\t\n",
    ]
    lex = Lexicon.from_lines(lines)
    assert len(lex) == 4
    hits = lex.find("badword 暴力 法轮功 other")
    assert [(h.term, h.category) for h in hits] == [
        ("badword", "custom"),
        ("暴力", "violence"),
        ("法轮功", "politics"),
        ("other", "custom"),
    ]
    assert Lexicon.from_lines(["x y"], default_category="misc").find("x y")[0].category == "misc"


def test_duplicates_and_empty_terms() -> None:
    lex = Lexicon(
        [("暴力", "violence"), ("暴力", "violence"), ("", "x"), ("  ", "x"), ("***", "x")]
    )
    assert len(lex) == 1
    assert len(lex.find("暴力")) == 1
    multi = Lexicon([("暴力", "violence"), ("暴 力", "custom")])
    assert len(multi) == 1
    assert [(h.term, h.category) for h in multi.find("暴力")] == [
        ("暴力", "custom"),
        ("暴力", "violence"),
    ]


def test_first_returns_earliest_hit() -> None:
    lex = Lexicon([("行为", "a"), ("暴力行为者", "b"), ("xyz", "c")])
    assert lex.first("nothing here") is None
    hit = lex.first("xyz 有暴力行为者")
    assert hit is not None
    assert (hit.term, hit.start, hit.end) == ("xyz", 0, 3)
    # "行为" is found first while scanning, but "暴力行为者" starts earlier.
    hit = lex.first("有暴力行为者 xyz")
    assert hit is not None
    assert (hit.term, hit.start, hit.end) == ("暴力行为者", 1, 6)
    cn = Lexicon([("力", "a"), ("暴力行为", "b")])
    hit = cn.first("有暴力行为和力")
    assert hit is not None
    assert (hit.term, hit.start) == ("暴力行为", 1)
    assert hit == cn.find("有暴力行为和力")[0]


def test_empty_lexicon_returns_no_hits() -> None:
    lex = Lexicon([])
    assert len(lex) == 0
    assert lex.find("暴力 violence") == []
    assert lex.first("暴力 violence") is None
    assert Lexicon([("暴力", "v")]).find("") == []


def test_large_lexicon_is_fast() -> None:
    rng = random.Random(1234)
    alphabet = [chr(c) for c in range(0x4E00, 0x4E00 + 400)] + list("abcdefghij")
    terms = {"".join(rng.choices(alphabet, k=rng.randint(2, 6))) for _ in range(10_000)}
    text = "".join(rng.choices([*alphabet, " ", "，"], k=100_000))
    started = time.perf_counter()
    lex = Lexicon((t, "custom") for t in terms)
    hits = lex.find(text)
    elapsed = time.perf_counter() - started
    assert len(lex) == len(terms)
    assert hits
    assert all(h.term == "".join(text[h.start : h.end].split()) for h in hits[:50])
    assert elapsed < 2.0, elapsed
