"""The stream gate: citation markers and personal data that straddle token boundaries (pure)."""

from __future__ import annotations

import random
import re

import pytest

from serving.pii import redact_pii
from serving.stream_gate import MAX_HOLD, Release, StreamGate


def _run(pieces: list[str], passage_count: int = 3) -> tuple[StreamGate, list[Release]]:
    gate = StreamGate(passage_count)
    releases = [gate.feed(p) for p in pieces]
    releases.append(gate.flush())
    return gate, releases


def _text(releases: list[Release]) -> str:
    return "".join(r.text for r in releases)


def _split(text: str, rng: random.Random) -> list[str]:
    """`text` cut at random points (pieces of 1 to 6 characters, like streamed tokens)."""
    pieces, i = [], 0
    while i < len(text):
        step = rng.randint(1, 6)
        pieces.append(text[i : i + step])
        i += step
    return pieces


# --- citation markers ------------------------------------------------------------------------


def test_a_split_marker_is_released_once_complete_and_reported_once() -> None:
    gate = StreamGate(3)
    first = gate.feed("年假是五天")
    assert first.text == "年假是五天"  # Chinese text is not held back
    opened = gate.feed("[")
    assert opened.text == "" and opened.new_markers == []
    closed = gate.feed("1]")
    assert closed.text == "[1]" and closed.new_markers == [1]
    again = gate.feed("。另外[1]")
    assert again.text == "。另外[1]"
    assert again.new_markers == []  # already reported
    rest = gate.flush()
    assert gate.markers_seen == [1]
    assert gate.released == "年假是五天[1]。另外[1]" == _text([first, opened, closed, again, rest])


def test_markers_to_no_passage_are_removed() -> None:
    gate, releases = _run(["见[", "7", "]。又见【", "1", "】和[0]。"])
    assert gate.released == "见。又见[1]和。"
    assert [n for r in releases for n in r.new_markers] == [1]
    assert gate.removed_markers == [7, 0]


def test_grouped_marker_keeps_only_valid_numbers() -> None:
    gate, releases = _run(["见[2, ", "9]。"])
    assert gate.released == "见[2]。"
    assert gate.removed_markers == [9]
    assert [n for r in releases for n in r.new_markers] == [2]


def test_full_width_and_multi_number_markers_are_normalised() -> None:
    gate, releases = _run(["资料［１", "，３］说明", "[3、2、3]。"])
    assert gate.released == "资料[1][3]说明[3][2]。"
    assert [n for r in releases for n in r.new_markers] == [1, 3, 2]


def test_marker_held_until_it_closes() -> None:
    gate = StreamGate(12)
    assert gate.feed("答案[1").text == "答案"
    assert gate.feed("1").text == ""
    release = gate.feed("]。")
    assert release.text == "[11]。" and release.new_markers == [11]


# --- personal data ---------------------------------------------------------------------------

# (text, kind, what no released piece may contain: any part of the identifier)
DIGITS = r"[0-9０-９]"
PII = [
    ("请拨打13800138000联系。", "mobile", DIGITS),
    ("电话 138 0013 8000，谢谢。", "mobile", DIGITS),
    ("电话+86 138-0013-8000。", "mobile", DIGITS),
    ("电话１３８－００１３－８０００。", "mobile", DIGITS),
    ("电话１３８　００１３　８０００。", "mobile", DIGITS),
    ("Mail zhang.san@corp.example.com today.", "email", r"zh|an|@|co|ex"),
    ("邮箱 ｚｈａｎｇ．ｓａｎ＠ｃｏｒｐ．ｃｏｍ。", "email", r"[ａ-ｚ＠．]"),
    ("身份证11010519491231002X。", "cn_id", DIGITS + "|X"),
    ("卡号 4111 1111 1111 1111，谢谢。", "bank_card", DIGITS),
    ("Card 6011000990139424 please.", "bank_card", DIGITS),
]


@pytest.mark.parametrize(("text", "kind", "secret"), PII)
def test_personal_data_split_anywhere_is_never_released(text: str, kind: str, secret: str) -> None:
    for cut in range(1, len(text)):
        for cut2 in range(cut + 1, len(text) + 1, 3):
            gate, releases = _run([text[:cut], text[cut:cut2], text[cut2:]])
            for r in releases:
                assert not re.search(secret, r.text.replace(f"[REDACTED:{kind}]", "")), (
                    cut,
                    cut2,
                    r.text,
                )
            assert f"[REDACTED:{kind}]" in gate.released
            assert [m.kind for m in gate.pii] == [kind]


@pytest.mark.parametrize(("text", "kind", "secret"), PII)
def test_personal_data_fed_character_by_character(text: str, kind: str, secret: str) -> None:
    gate, releases = _run(list(text))
    assert not any(re.search(secret, r.text.replace(f"[REDACTED:{kind}]", "")) for r in releases)
    assert gate.released == redact_pii(text)[0]
    assert [k for r in releases for k in (m.kind for m in r.pii)] == [kind]


def test_long_digit_strings_that_are_no_personal_data_pass() -> None:
    text = "订单号 20240506123456789012 已发货，金额 1234.56 元。"
    gate, _ = _run(_split(text, random.Random(1)))
    assert gate.released == text and gate.pii == []


# --- hold-back -------------------------------------------------------------------------------


def test_chinese_streams_as_it_comes() -> None:
    gate = StreamGate(3)
    for piece in ("员工入职", "满一年后", "享有五天", "带薪年假。"):
        assert gate.feed(piece).text == piece
    assert gate.pending == ""


def test_english_holds_back_at_most_the_last_word() -> None:
    gate = StreamGate(3)
    out = gate.feed("The seal lasts six months")
    assert out.text == "The seal lasts six"
    assert gate.pending == " months"
    assert gate.feed(". Replace").text == " months."


def test_runs_longer_than_max_hold_are_released() -> None:
    gate = StreamGate(3)
    run = "x" * (MAX_HOLD + 5)
    assert gate.feed("参见 " + run).text == "参见 " + run
    assert gate.pending == ""


def test_text_is_released_plus_pending() -> None:
    gate = StreamGate(3)
    gate.feed("电话 138 00")
    assert gate.released == "电话"
    assert gate.text == "电话 138 00"


# --- whatever the split ----------------------------------------------------------------------

STREAMS = [
    "年假是五天[1]。请拨打13800138000联系张伟[2, 9]，邮箱 zhang.san@corp.example.com。",
    "Replace the seal every six months [1]. Card 4111 1111 1111 1111 is on file [3].",
    "身份证号11010519491231002X，手机 138-0013-8000【2】。订单号 20240506123456789012［１］。",
    "电话+86 138 0013 8000，全角１３８－００１３－８０００，"
    "邮件 ｚｈａｎｇ＠ｃｏｒｐ．ｃｏｍ [4][2]。",
    "Mixed: 请联系 li.si+hr@example.org or call 0086 139 1234 5678 [1, 2, 3]. Done.",
]


@pytest.mark.parametrize("text", STREAMS)
def test_released_text_does_not_depend_on_the_split(text: str) -> None:
    whole, whole_releases = _run([text])
    assert whole.released == _text(whole_releases)
    assert "REDACTED" in whole.released
    for seed in range(200):
        gate, releases = _run(_split(text, random.Random(seed)))
        assert _text(releases) == gate.released  # releases + flush add up
        assert gate.released == whole.released, seed
        assert gate.markers_seen == whole.markers_seen
        assert sorted(n for r in releases for n in r.new_markers) == sorted(whole.markers_seen)
        assert [m.kind for m in gate.pii] == [m.kind for m in whole.pii]


def test_expected_output_of_a_mixed_stream() -> None:
    gate, _ = _run(_split(STREAMS[0], random.Random(7)))
    assert gate.released == (
        "年假是五天[1]。请拨打[REDACTED:mobile]联系张伟[2]，邮箱 [REDACTED:email]。"
    )
    assert gate.markers_seen == [1, 2]
    assert gate.removed_markers == [9]
