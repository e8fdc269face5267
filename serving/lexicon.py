"""Sensitive-word lexicon matched with an Aho-Corasick automaton (pure Python).

Screens questions and answers written in Chinese and English. Administrators edit the
word list; this module only matches it.

Matching rules:

* Terms and text are normalised the same way: NFKC (full-width -> half-width, ligatures
  expanded) then casefold. Normalisation runs per character cluster (a base character
  plus any combining marks that follow it), so every normalised character can be mapped
  back to the original text; hit offsets always refer to the ORIGINAL text.
* Separators that are used to dodge filters (whitespace, zero-width characters and
  ``* . - _ · • ~ | / \\ ^``) are dropped from the stream before matching, so "暴*力",
  "暴 力" and "v.i.o.l.e.n.c.e" match "暴力" and "violence". Terms are normalised the same
  way, so a term written as "bad-ass" is the key "badass".
* A term made only of ASCII letters/digits (after normalisation) matches whole words only:
  the match must not touch an ASCII letter/digit on either side unless a separator stood
  between them in the text ("ass" does not hit "class", but does hit "an ass"). Other
  terms (Chinese, mixed, or containing other punctuation) match anywhere.
* Terms are deduplicated by their normalised key; ``len()`` counts distinct keys. If the
  same key is configured under several categories, a match reports one hit per category
  (with the term spelled as first configured).

Build is O(total term length); matching is O(text length + hits).
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Lexicon", "LexiconHit"]

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad")
_SEPARATOR_PUNCT = frozenset("*.-_·•~|/\\^")


@dataclass(frozen=True)
class LexiconHit:
    """One match: the configured term, its category and its span in the original text."""

    term: str
    category: str
    start: int
    end: int


def _is_separator(ch: str) -> bool:
    return ch.isspace() or ch in _ZERO_WIDTH or ch in _SEPARATOR_PUNCT


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


@lru_cache(maxsize=65536)
def _fold(cluster: str) -> str:
    """NFKC + casefold of one character cluster (re-NFKC'd: casefold can denormalise)."""
    if cluster.isascii():
        return cluster.lower()
    folded = unicodedata.normalize("NFKC", cluster).casefold()
    return unicodedata.normalize("NFKC", folded)


@dataclass(slots=True)
class _Stream:
    """Normalised, separator-free text with a map back to the original offsets."""

    chars: list[str]
    starts: list[int]  # original start index of the cluster each char came from
    ends: list[int]  # original end index (exclusive) of that cluster
    gap_before: list[bool]  # text start or a separator directly precedes this char


def _normalise(text: str) -> _Stream:
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    gap_before: list[bool] = []
    combining = unicodedata.combining
    pending_gap = True
    n = len(text)
    i = 0
    while i < n:
        j = i + 1
        while j < n and combining(text[j]):
            j += 1
        for ch in _fold(text[i:j]):
            if _is_separator(ch):
                pending_gap = True
                continue
            chars.append(ch)
            starts.append(i)
            ends.append(j)
            gap_before.append(pending_gap)
            pending_gap = False
        i = j
    return _Stream(chars, starts, ends, gap_before)


def _term_key(term: str) -> str:
    return "".join(_normalise(term).chars)


@dataclass(frozen=True, slots=True)
class _Pattern:
    length: int  # length of the normalised key
    whole_word: bool
    labels: tuple[tuple[str, str], ...]  # (term as configured, category)


def _sort_key(hit: LexiconHit) -> tuple[int, int, str, str]:
    return (hit.start, hit.start - hit.end, hit.term, hit.category)


class Lexicon:
    """An immutable set of (term, category) entries compiled into an Aho-Corasick automaton."""

    def __init__(self, entries: Iterable[tuple[str, str]]) -> None:
        terms: dict[str, str] = {}
        categories: dict[str, list[str]] = {}
        for term, category in entries:
            term = term.strip()
            key = _term_key(term)
            if not key:
                continue
            terms.setdefault(key, term)
            cats = categories.setdefault(key, [])
            if category not in cats:
                cats.append(category)

        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._out: list[int] = [-1]  # pattern index if a term ends at this node, else -1
        self._link: list[int] = [-1]  # nearest proper-suffix node that ends a term, else -1
        self._patterns: list[_Pattern] = []
        self._max_len = 0

        for key, term in terms.items():
            node = 0
            for ch in key:
                nxt = self._goto[node].get(ch)
                if nxt is None:
                    nxt = len(self._goto)
                    self._goto[node][ch] = nxt
                    self._goto.append({})
                    self._fail.append(0)
                    self._out.append(-1)
                    self._link.append(-1)
                node = nxt
            self._out[node] = len(self._patterns)
            labels = tuple((term, cat) for cat in categories[key])
            whole_word = key.isascii() and key.isalnum()
            self._patterns.append(_Pattern(len(key), whole_word, labels))
            self._max_len = max(self._max_len, len(key))
        self._build_links()

    def _build_links(self) -> None:
        goto, fail, out, link = self._goto, self._fail, self._out, self._link
        queue: deque[int] = deque(goto[0].values())
        while queue:
            node = queue.popleft()
            for ch, child in goto[node].items():
                f = fail[node]
                while f and ch not in goto[f]:
                    f = fail[f]
                target = goto[f].get(ch, 0)
                fail[child] = target
                link[child] = target if out[target] >= 0 else link[target]
                queue.append(child)

    @classmethod
    def from_lines(cls, lines: Iterable[str], default_category: str = "custom") -> Lexicon:
        """Parse "term" or "term<TAB>category" lines; blank lines and "#" comments are skipped."""

        def entries() -> Iterable[tuple[str, str]]:
            for raw in lines:
                line = raw.lstrip("\ufeff").rstrip("\r\n")
                stripped = line.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                term, _, category = line.partition("\t")
                yield term.strip(), category.strip() or default_category

        return cls(entries())

    def __len__(self) -> int:
        return len(self._patterns)

    def find(self, text: str) -> list[LexiconHit]:
        """All hits (overlapping ones included), sorted by (start, -length)."""
        if not self._patterns:
            return []
        return sorted(set(self._scan(text, first_only=False)), key=_sort_key)

    def first(self, text: str) -> LexiconHit | None:
        """The earliest-starting hit (longest on ties), or None; stops scanning early."""
        if not self._patterns:
            return None
        hits = self._scan(text, first_only=True)
        return min(hits, key=_sort_key) if hits else None

    def _scan(self, text: str, *, first_only: bool) -> list[LexiconHit]:
        stream = _normalise(text)
        chars, starts, ends, gap_before = (
            stream.chars,
            stream.starts,
            stream.ends,
            stream.gap_before,
        )
        n = len(chars)
        goto, fail, out, link, patterns = (
            self._goto,
            self._fail,
            self._out,
            self._link,
            self._patterns,
        )
        max_len = self._max_len
        hits: list[LexiconHit] = []
        best_start = -1
        state = 0
        for i, ch in enumerate(chars):
            if first_only and hits:
                # Every later hit starts at normalised index >= i - max_len + 1.
                earliest = i - max_len + 1
                if earliest > 0 and starts[earliest] > best_start:
                    break
            while state and ch not in goto[state]:
                state = fail[state]
            state = goto[state].get(ch, 0)
            node = state if out[state] >= 0 else link[state]
            while node >= 0:
                pattern = patterns[out[node]]
                s = i - pattern.length + 1
                e = i + 1
                if not pattern.whole_word or (
                    (gap_before[s] or not _is_word_char(chars[s - 1]))
                    and (e == n or gap_before[e] or not _is_word_char(chars[e]))
                ):
                    ostart, oend = starts[s], ends[i]
                    for term, category in pattern.labels:
                        hits.append(LexiconHit(term, category, ostart, oend))
                    if first_only and (best_start < 0 or ostart < best_start):
                        best_start = ostart
                node = link[node]
        return hits
