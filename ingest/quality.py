"""Is this text, or noise? A cheap check for OCR output and suspicious PDF text layers.

The score is the share of non-space characters that sit in plausible words: CJK characters,
runs of letters with a vowel and a sane mix of cases, numbers, and letter+digit codes
(H2SO4, ISO-9001). Bad OCR yields isolated letters (``A l e t t e r``), symbol soup
(``«3E*»CM``) and impossible case mixes; good OCR of real text scores 0.85 and up.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_CJK = (
    "\u3040-\u30ff"  # kana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # Han
    "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"  # Hangul
)
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_PUNCT_RE = re.compile("[\u3000-\u303f\uff00-\uffef\u2018-\u201f\u2026\u00b7]")
_EDGE_PUNCT = "\"'“”‘’()[]{}<>.,;:!?-–—*/\\|«»•·…_#=+~`^@&%$€£¥§°"
_NUMBER_RE = re.compile(r"^[+\-±(]?[\d.,:/%$€£¥'x×\-–—)]*\d[\d.,:/%$€£¥'x×\-–—)]*$")
_URL_RE = re.compile(r"^(https?://|www\.)\S+$|^[\w.+-]+@[\w-]+\.[\w.-]+$", re.IGNORECASE)
_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-/_]*$")
_VOWELS = set("aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ")
_SINGLE_WORDS = set("aAIiOoyeàéèùôâç&")


@dataclass(frozen=True)
class TextQuality:
    score: float  # share of non-space characters in plausible words, 0..1
    good_chars: int
    total_chars: int

    def describe(self) -> str:
        return f"{self.score:.0%} of {self.total_chars} characters look like words"


def _case_ok(word: str) -> bool:
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return True
    if all(c.islower() for c in letters) or all(c.isupper() for c in letters):
        return True
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return True
    # a few case changes (iPhone, McDonald, PhD) are fine; more is OCR noise
    changes = sum(1 for a, b in itertools.pairwise(letters) if a.isupper() != b.isupper())
    return changes <= 3 and len(letters) >= 3


def _word_ok(word: str) -> bool:
    if _NUMBER_RE.match(word) or _URL_RE.match(word):
        return True
    has_alpha = any(c.isalpha() for c in word)
    has_digit = any(c.isdigit() for c in word)
    if has_alpha and has_digit:
        return bool(_CODE_RE.match(word)) and len(word) <= 24
    core = word.replace("'", "").replace("’", "").replace("-", "").replace(".", "")
    if not core.isalpha():
        return False
    if len(core) == 1:
        return core in _SINGLE_WORDS
    if not _case_ok(core):
        return False
    if all(ord(c) < 0x250 for c in core):  # Latin script: a word has a vowel...
        # ...unless it is an abbreviation (BBC, pp., Mr)
        return any(c.lower() in _VOWELS for c in core) or len(core) <= 4
    return True  # Cyrillic, Greek, Arabic, ...: letters are enough


def text_quality(text: str) -> TextQuality:
    good = 0
    total = 0
    for token in text.split():
        cjk = len(_CJK_RE.findall(token))
        cjk_punct = len(_CJK_PUNCT_RE.findall(token))
        if cjk:
            good += cjk + cjk_punct
            total += cjk + cjk_punct
            rest = _CJK_PUNCT_RE.sub(" ", _CJK_RE.sub(" ", token)).split()
        else:
            rest = [token]
        for piece in rest:
            word = piece.strip(_EDGE_PUNCT)
            if word and _word_ok(word):
                good += len(piece)
                total += len(piece)
            elif len(word) == 1 and word.isalpha():
                total += 2  # a letter split off its word ("A l e t t e r"): it cost a space too
            else:
                total += len(piece)
    return TextQuality(score=good / total if total else 0.0, good_chars=good, total_chars=total)


# Below this the text is treated as noise (no document of ours should be indexed from it).
JUNK_THRESHOLD = 0.5
# Below this a PDF text layer is suspect and OCR is tried to see whether it reads better.
SUSPECT_THRESHOLD = 0.8
# Fewer plausible characters than this means "nothing was read".
MIN_GOOD_CHARS = 8
