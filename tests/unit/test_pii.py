"""PII redaction: checksummed IDs and cards, mobiles, e-mails, boundaries, full-width digits."""

from __future__ import annotations

import itertools
import time
import unicodedata

import pytest

from serving.pii import PiiMatch, find_pii, redact_pii

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def cn_id(base17: str) -> str:
    """Complete a 17-digit base with its ISO 7064 MOD 11-2 check character."""
    total = sum(int(d) * w for d, w in zip(base17, _WEIGHTS, strict=True))
    return base17 + "10X98765432"[total % 11]


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit to ``prefix``."""
    for check in "0123456789":
        digits = prefix + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if i % 2 else 1)
            total += d - 9 if d > 9 else d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def wrong_check(valid: str) -> str:
    """Same number with a different (hence invalid) last character."""
    return valid[:-1] + ("1" if valid[-1] != "1" else "2")


def to_fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def kinds(text: str) -> list[str]:
    return [m.kind for m in find_pii(text)]


def spans(text: str) -> list[str]:
    return [text[m.start : m.end] for m in find_pii(text)]


# --- Chinese resident ID ----------------------------------------------------------------------

VALID_ID = cn_id("11010519491231002")  # -> ...002X
ID_WITH_X = next(
    cn_id(f"44030119900307{n:03d}")
    for n in range(1000)
    if cn_id(f"44030119900307{n:03d}")[-1] == "X"
)


def test_helper_check_chars() -> None:
    assert VALID_ID == "11010519491231002X"
    assert ID_WITH_X.endswith("X")


@pytest.mark.parametrize("base", ["11010519491231002", "31011519800101123", "51010720001229456"])
def test_valid_id_is_redacted(base: str) -> None:
    number = cn_id(base)
    text = f"身份证号：{number}。"
    assert find_pii(text) == [PiiMatch("cn_id", 5, 23)]
    assert redact_pii(text)[0] == "身份证号：[REDACTED:cn_id]。"


def test_x_check_char_upper_and_lower() -> None:
    assert kinds(f"ID {ID_WITH_X}") == ["cn_id"]
    assert kinds(f"ID {ID_WITH_X.lower()}") == ["cn_id"]


@pytest.mark.parametrize("number", [wrong_check(VALID_ID), wrong_check(cn_id("31011519800101123"))])
def test_invalid_id_checksum_left_alone(number: str) -> None:
    assert find_pii(f"编号 {number} 结束") == []


def test_id_with_impossible_birth_date_left_alone() -> None:
    # Correct checksum, but 1949-02-30 is not a date; 1850 is out of range.
    assert find_pii(cn_id("11010519490230002")) == []
    assert find_pii(cn_id("11010518500101002")) == []


def test_id_inside_longer_run_left_alone() -> None:
    assert find_pii("9" + VALID_ID) == []
    assert find_pii(VALID_ID + "7") == []
    assert find_pii("A" + VALID_ID) == []


# --- mobile -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+86 13800138000",
        "+8613800138000",
        "0086 138-0013-8000",
        "86 13800138000",
        "19912345678",
    ],
)
def test_mobile_formats_redacted(number: str) -> None:
    text = f"call {number} now"
    assert find_pii(text) == [PiiMatch("mobile", 5, 5 + len(number))]
    assert redact_pii(text)[0] == "call [REDACTED:mobile] now"


@pytest.mark.parametrize(
    "text",
    [
        "order 1380013800012",  # 13 digits
        "ref 1380013800",  # 10 digits
        "num 12800138000",  # second digit 2
        "SKU X13800138000",  # glued to letters
        "138 0013-8000",  # mixed grouping
        "138 0013 8000 1234",  # grouping continues
    ],
)
def test_not_mobile(text: str) -> None:
    assert find_pii(text) == []


def test_mobile_in_chinese_sentence() -> None:
    text = "请拨打13800138000联系张伟"
    assert find_pii(text) == [PiiMatch("mobile", 3, 14)]
    assert redact_pii(text)[0] == "请拨打[REDACTED:mobile]联系张伟"


def test_mobile_followed_by_unrelated_number_column() -> None:
    assert kinds("张伟 13800138000 2023") == ["mobile"]


# --- bank card --------------------------------------------------------------------------------

CARD_19 = luhn_complete("622202123456789012")


def test_luhn_helper() -> None:
    assert len(CARD_19) == 19
    assert luhn_complete("411111111111111") == "4111111111111111"


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        CARD_19,
        " ".join([CARD_19[0:4], CARD_19[4:8], CARD_19[8:12], CARD_19[12:16], CARD_19[16:]]),
        luhn_complete("622848001234567"),  # 16 digits
        luhn_complete("62284800123456789"),  # 18 digits, not a valid ID
    ],
)
def test_luhn_valid_card_redacted(card: str) -> None:
    text = f"卡号{card}，请核对"
    assert find_pii(text) == [PiiMatch("bank_card", 2, 2 + len(card))]
    assert redact_pii(text)[0] == "卡号[REDACTED:bank_card]，请核对"


@pytest.mark.parametrize(
    "text",
    [
        "amount 4111111111111112",  # Luhn-invalid 16 digits
        "4111 1111 1111 1112",
        "ref " + wrong_check(CARD_19),
        "run " + luhn_complete("4111111111111111111"),  # 20 digits
        "4111 1111 1111 1111 2222 3",  # grouping continues past 19 digits
        "tx 411111111111",  # too short
    ],
)
def test_not_card(text: str) -> None:
    assert find_pii(text) == []


def test_valid_id_that_is_also_luhn_valid_is_cn_id() -> None:
    both = next(
        n
        for n in (cn_id(f"11010519491231{i:03d}") for i in range(1000))
        if n[-1] != "X" and luhn_complete(n[:-1]) == n
    )
    assert kinds(both) == ["cn_id"]


# --- e-mail -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    ["zhang.wei@example.com", "ops+alerts@mail.corp.example.cn", "a_b-c@sub-domain.io"],
)
def test_email_redacted(email: str) -> None:
    text = f"联系邮箱{email}。"
    assert find_pii(text) == [PiiMatch("email", 4, 4 + len(email))]
    assert redact_pii(text)[0] == "联系邮箱[REDACTED:email]。"


def test_email_at_sentence_end() -> None:
    assert spans("Write to bob@example.org.") == ["bob@example.org"]


@pytest.mark.parametrize("text", ["user@localhost", "a@b", "@example.com", "x@.com"])
def test_not_email(text: str) -> None:
    assert find_pii(text) == []


def test_digit_email_is_one_email_not_mobile() -> None:
    assert kinds("QQ邮箱 13800138000@qq.com") == ["email"]


# --- full-width -------------------------------------------------------------------------------


def test_fullwidth_folding_matches_nfkc() -> None:
    # serving.pii folds exactly these characters, 1:1, to what NFKC gives.
    for cp in range(0xFF01, 0xFF5F):
        assert unicodedata.normalize("NFKC", chr(cp)) == chr(cp - 0xFEE0)
    assert unicodedata.normalize("NFKC", "\u3000") == " "


def test_fullwidth_digits() -> None:
    mobile = to_fullwidth("13800138000")
    text = f"电话：{mobile}"
    assert find_pii(text) == [PiiMatch("mobile", 3, 14)]
    assert redact_pii(text)[0] == "电话：[REDACTED:mobile]"

    ident = to_fullwidth(VALID_ID)
    assert kinds(f"证件{ident}") == ["cn_id"]
    assert spans(f"证件{ident}") == [ident]

    card = to_fullwidth("4111－1111－1111－1111")
    assert spans(f"卡{card}") == [card]

    email = to_fullwidth("zhang@example.com")
    assert kinds(email) == ["email"]


def test_fullwidth_long_run_not_matched() -> None:
    assert find_pii(to_fullwidth("1380013800012")) == []


# --- several matches --------------------------------------------------------------------------


def test_multiple_matches_offsets_and_redaction() -> None:
    ident = VALID_ID
    text = (
        f"张伟，身份证{ident}，手机138-0013-8000，"
        f"邮箱zhang.wei@example.com，卡号4111 1111 1111 1111，订单号1380013800012。"
    )
    matches = find_pii(text)
    assert [m.kind for m in matches] == ["cn_id", "mobile", "email", "bank_card"]
    assert [text[m.start : m.end] for m in matches] == [
        ident,
        "138-0013-8000",
        "zhang.wei@example.com",
        "4111 1111 1111 1111",
    ]
    assert all(a.end <= b.start for a, b in itertools.pairwise(matches))

    redacted, returned = redact_pii(text)
    assert returned == matches
    assert redacted == (
        "张伟，身份证[REDACTED:cn_id]，手机[REDACTED:mobile]，"
        "邮箱[REDACTED:email]，卡号[REDACTED:bank_card]，订单号1380013800012。"
    )


def test_no_pii_roundtrip() -> None:
    text = "合同金额 1,234,567.89 元，订单 20240101123456。"
    assert redact_pii(text) == (text, [])
    assert redact_pii("") == ("", [])


def test_pathological_input_is_fast() -> None:
    texts = [
        "1" * 50_000,
        "a" * 50_000 + "@",
        ("a." * 25_000) + "@",
        "x@" + "a-" * 25_000,
        "1 " * 25_000,
        "a@" + "b." * 25_000 + "1",
    ]
    t0 = time.perf_counter()
    for text in texts:
        find_pii(text)
    assert time.perf_counter() - t0 < 2.0
