"""Deterministic PII redaction for model answers (Chinese and English text).

What is detected
----------------
* ``cn_id`` -- mainland Chinese resident identity numbers: 18 characters, 17 digits plus a
  check character (digit or ``X``/``x``).  Accepted only when the ISO 7064 MOD 11-2 check
  character is correct *and* positions 7-14 hold a real date (``YYYYMMDD``, year 1900-2099).
* ``mobile`` -- mainland mobile numbers: 11 digits starting ``1[3-9]``, optionally prefixed by
  ``+86`` / ``0086`` / ``86`` and optionally grouped 3-4-4 by spaces or hyphens
  (``138 0013 8000``, ``138-0013-8000``, ``+86 13800138000``).
* ``bank_card`` -- 16 to 19 digits, optionally grouped in fours by spaces or hyphens, that pass
  the Luhn check.  A number that is a valid ``cn_id`` is reported as ``cn_id`` only.
* ``email`` -- e-mail addresses (a pragmatic, RFC-lite pattern: ASCII local part, dotted
  domain, alphabetic top-level domain).

Why checksums
-------------
Answers drawn from enterprise documents are full of long digit strings that are not personal
data: order numbers, invoice numbers, amounts, serial numbers, timestamps.  A bare "18 digits"
or "16-19 digits" pattern would redact many of them.  Requiring the MOD 11-2 check character
(plus a plausible birth date) for ID numbers and the Luhn check digit for card numbers rejects
about 10/11 and 9/10 of random digit strings respectively, so far fewer false positives.

Matching rules
--------------
* No match is taken from inside a longer run of ASCII letters/digits: a 20-digit run is not a
  card and the 13-digit ``1380013800012`` is not a mobile.  Han characters and punctuation are
  *not* letters for this rule, so ``请拨打13800138000联系张伟`` still matches.  A grouped match
  (one containing spaces/hyphens) is also rejected when the grouping visibly continues, e.g.
  another `` 1234`` group right after it.
* Full-width forms (``１３８００１３８０００``, ``＠``, ``－``) are recognised.  Matching runs on a
  copy of the text in which only the full-width ASCII block (U+FF01-U+FF5E) and the
  ideographic space (U+3000) are folded to ASCII -- exactly what NFKC does to those
  characters, one character to one character -- so offsets in the folded copy are offsets in
  the original text and are reported as such.
* Overlapping candidates are resolved by priority ``email`` > ``cn_id`` > ``mobile`` >
  ``bank_card`` (so ``13800138000@qq.com`` is one e-mail, and a card never swallows a mobile).
* All patterns are precompiled with bounded quantifiers; there is no nested unbounded
  repetition, so matching is linear-ish in the text length.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

__all__ = ["PiiMatch", "find_pii", "redact_pii"]


@dataclass(frozen=True)
class PiiMatch:
    """One detected PII span; ``start``/``end`` are offsets into the caller's text."""

    kind: str  # "cn_id" | "mobile" | "bank_card" | "email"
    start: int
    end: int


# --- normalisation --------------------------------------------------------------------------

# Full-width ASCII variants U+FF01..U+FF5E map to U+0021..U+007E under NFKC; U+3000 maps to a
# space.  Each is a 1:1 character mapping, so string length (and every offset) is preserved.
_FULLWIDTH_TO_ASCII: dict[int, int] = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH_TO_ASCII[0x3000] = 0x20


def _fold(text: str) -> str:
    return text.translate(_FULLWIDTH_TO_ASCII)


# --- patterns -------------------------------------------------------------------------------

_LEFT = r"(?<![0-9A-Za-z])"
_RIGHT = r"(?![0-9A-Za-z])"

_CN_ID_RE = re.compile(_LEFT + r"[1-9][0-9]{16}[0-9Xx]" + _RIGHT)

_MOBILE_RE = re.compile(
    _LEFT
    + r"(?:(?:\+|00)?86[ -]?)?"
    + r"1[3-9][0-9](?P<sep>[ -]?)[0-9]{4}(?P=sep)[0-9]{4}"
    + _RIGHT
)

_CARD_RE = re.compile(
    _LEFT
    + r"[0-9]{4}(?P<sep>[ -]?)[0-9]{4}(?P=sep)[0-9]{4}(?P=sep)[0-9]{4}(?:(?P=sep)[0-9]{1,3})?"
    + _RIGHT
)

_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])"
    r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])"
)

_GROUP_BEFORE_RE = re.compile(r"[0-9][ -]\Z")
_GROUP_AFTER_RE = re.compile(r"[ -][0-9]")

_PRIORITY: dict[str, int] = {"email": 0, "cn_id": 1, "mobile": 2, "bank_card": 3}

# --- checksums ------------------------------------------------------------------------------

_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_ID_CHECK_CHARS = "10X98765432"


def _is_valid_cn_id(candidate: str) -> bool:
    """18-char ID: MOD 11-2 check character and a real birth date in 1900-2099."""
    if len(candidate) != 18 or not candidate[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(candidate[:17], _CN_ID_WEIGHTS, strict=True))
    if _CN_ID_CHECK_CHARS[total % 11] != candidate[17].upper():
        return False
    year, month, day = int(candidate[6:10]), int(candidate[10:12]), int(candidate[12:14])
    if not 1900 <= year <= 2099:
        return False
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _grouping_continues(folded: str, start: int, end: int) -> bool:
    """For a match written with separators, does the same grouping run on past its ends?"""
    return bool(
        _GROUP_BEFORE_RE.search(folded, 0, start) or _GROUP_AFTER_RE.match(folded, end, end + 2)
    )


# --- public API -----------------------------------------------------------------------------


def _candidates(folded: str) -> list[PiiMatch]:
    found: list[PiiMatch] = []
    for m in _EMAIL_RE.finditer(folded):
        found.append(PiiMatch("email", m.start(), m.end()))
    for m in _CN_ID_RE.finditer(folded):
        if _is_valid_cn_id(m.group()):
            found.append(PiiMatch("cn_id", m.start(), m.end()))
    for m in _MOBILE_RE.finditer(folded):
        if m.group("sep") and _grouping_continues(folded, m.start(), m.end()):
            continue
        found.append(PiiMatch("mobile", m.start(), m.end()))
    for m in _CARD_RE.finditer(folded):
        digits = re.sub(r"[ -]", "", m.group())
        if not _luhn_ok(digits) or _is_valid_cn_id(digits):
            continue
        if m.group("sep") and _grouping_continues(folded, m.start(), m.end()):
            continue
        found.append(PiiMatch("bank_card", m.start(), m.end()))
    return found


def find_pii(text: str) -> list[PiiMatch]:
    """All PII spans in ``text``, sorted by start and non-overlapping."""
    folded = _fold(text)
    chosen: list[PiiMatch] = []
    ranked = sorted(_candidates(folded), key=lambda c: (_PRIORITY[c.kind], c.start))
    for cand in ranked:
        if all(cand.end <= kept.start or cand.start >= kept.end for kept in chosen):
            chosen.append(cand)
    chosen.sort(key=lambda c: c.start)
    return chosen


def redact_pii(text: str) -> tuple[str, list[PiiMatch]]:
    """Replace each PII span by ``[REDACTED:<kind>]``.

    Returns the redacted text and the matches, whose offsets refer to the *original* text.
    """
    matches = find_pii(text)
    parts: list[str] = []
    pos = 0
    for m in matches:
        parts.append(text[pos : m.start])
        parts.append(f"[REDACTED:{m.kind}]")
        pos = m.end
    parts.append(text[pos:])
    return "".join(parts), matches
