"""Citations in an answer: `[n]` markers mapped to the numbered passages of the prompt,
markers that point at no passage removed, and every sentence checked against what it cites.

Pure functions over `Passage` values. The lexical support score is the share of a sentence's
content tokens (Chinese character bigrams, English words) found in the passages it cites; the
caller may add an embedding similarity (`similarity`), and the two are averaged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from core.stopwords import ENGLISH_STOP_WORDS
from core.types import Passage

SUPPORT_THRESHOLD = 0.5
_MARKER = re.compile(r"[\[［【]\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[\]］】]")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|(?<=[.])(?=\s|[\[［【]\d)|\n+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
_MIN_CLAIM_TOKENS = 3


@dataclass(frozen=True)
class Citation:
    marker: int  # n as written in the answer, 1-based index into the prompt's passages
    passage: Passage
    start: int  # span of the marker in the cleaned answer
    end: int


@dataclass(frozen=True)
class SentenceCheck:
    text: str
    start: int
    end: int
    cited: list[int]
    support: float | None  # None when the sentence cites nothing
    flag: str | None  # None, "uncited" or "unsupported"


@dataclass(frozen=True)
class CitedAnswer:
    text: str
    citations: list[Citation]
    sources: list[Passage]  # each cited passage once, in order of first citation
    sentences: list[SentenceCheck] = field(default_factory=list)
    removed_markers: list[int] = field(default_factory=list)


def _numbers(group: str) -> list[int]:
    return [int(n) for n in re.split(r"\s*[,，、]\s*", group.strip())]


def resolve(
    answer: str,
    passages: Sequence[Passage],
    *,
    similarity: Callable[[str, str], float] | None = None,
    threshold: float = SUPPORT_THRESHOLD,
) -> CitedAnswer:
    """Clean the answer's markers (each valid number becomes its own `[n]`; invalid ones are
    dropped), map them to passages and check every sentence."""
    out: list[str] = []
    citations: list[Citation] = []
    removed: list[int] = []
    pos = 0
    length = 0
    for m in _MARKER.finditer(answer):
        before = answer[pos : m.start()]
        out.append(before)
        length += len(before)
        valid = []
        for n in _numbers(m.group(1)):
            if 1 <= n <= len(passages):
                if n not in valid:
                    valid.append(n)
            else:
                removed.append(n)
        for n in valid:
            mark = f"[{n}]"
            citations.append(Citation(n, passages[n - 1], length, length + len(mark)))
            out.append(mark)
            length += len(mark)
        pos = m.end()
    out.append(answer[pos:])
    text = "".join(out)
    if removed and not citations:
        text = re.sub(r"[ \t]+([。.,，！？!?])", r"\1", text)
    sources: list[Passage] = []
    seen: set[int] = set()
    for c in citations:
        if c.marker not in seen:
            seen.add(c.marker)
            sources.append(c.passage)
    checks = check_sentences(text, citations, similarity=similarity, threshold=threshold)
    return CitedAnswer(text, citations, sources, checks, removed)


def strip_markers(text: str) -> str:
    """The text without anything that reads as a citation marker."""
    return _MARKER.sub("", text)


def content_tokens(text: str) -> set[str]:
    """Chinese character bigrams (single characters for one-character runs) and English words
    without stop words, after NFKC and lower-casing."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _MARKER.sub(" ", text)
    tokens: set[str] = set()
    for run in _HAN.findall(text):
        tokens |= {run[i : i + 2] for i in range(len(run) - 1)} if len(run) > 1 else {run}
    tokens |= {w for w in _WORD.findall(_HAN.sub(" ", text)) if w not in ENGLISH_STOP_WORDS}
    return tokens


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans; markers right after a sentence's end belong to that sentence."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        tail = _MARKER.match(text, end)
        while tail is not None:  # "五天。[1][2]" — the markers close the sentence before
            end = tail.end()
            tail = _MARKER.match(text, end)
        if end > start and text[start:end].strip():
            spans.append((start, end))
            start = end
        elif end > start:
            start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def check_sentences(
    text: str,
    citations: Sequence[Citation],
    *,
    similarity: Callable[[str, str], float] | None = None,
    threshold: float = SUPPORT_THRESHOLD,
) -> list[SentenceCheck]:
    checks: list[SentenceCheck] = []
    for start, end in split_sentences(text):
        sentence = text[start:end]
        cited = [c for c in citations if start <= c.start < end]
        claim = content_tokens(sentence)
        if not cited:
            flag = "uncited" if len(claim) >= _MIN_CLAIM_TOKENS else None
            checks.append(SentenceCheck(sentence.strip(), start, end, [], None, flag))
            continue
        best = 0.0
        for c in cited:
            lexical = len(claim & content_tokens(c.passage.text)) / len(claim) if claim else 1.0
            score = lexical
            if similarity is not None:
                score = (lexical + similarity(_MARKER.sub("", sentence), c.passage.text)) / 2
            best = max(best, score)
        numbers = sorted({c.marker for c in cited})
        flag = None if best >= threshold else "unsupported"
        checks.append(SentenceCheck(sentence.strip(), start, end, numbers, round(best, 3), flag))
    return checks


def cited_span(claim: str, passage_text: str) -> tuple[int, int]:
    """The span of `passage_text` that a citing sentence rests on: the passage sentence sharing
    the most content tokens with `claim` (the whole passage when none shares any)."""
    wanted = content_tokens(claim)
    best, best_score = (0, len(passage_text)), 0.0
    for start, end in split_sentences(passage_text):
        tokens = content_tokens(passage_text[start:end])
        if not tokens:
            continue
        score = len(wanted & tokens) / (len(wanted) or 1)
        if score > best_score:
            best, best_score = (start, end), score
    start, end = best
    while start < end and passage_text[start].isspace():
        start += 1
    return start, end


AUTO_CITE_THRESHOLD = 0.7


def add_missing_citations(
    answer: str, passages: Sequence[Passage], threshold: float = AUTO_CITE_THRESHOLD
) -> tuple[str, list[str]]:
    """Small models often state what a passage says without its marker. Give such a sentence
    the marker of the passage that contains most of its content words, when that share is at
    least `threshold`; sentences that match no passage stay uncited. Returns the new text and
    the sentences that received a marker, so the response can say which markers were added."""
    if not passages:
        return answer, []
    passage_tokens = [content_tokens(p.text) for p in passages]
    out: list[str] = []
    added: list[str] = []
    pos = 0
    for start, end in split_sentences(answer):
        sentence = answer[start:end]
        out.append(answer[pos:start])
        pos = end
        claim = content_tokens(sentence)
        if _MARKER.search(sentence) or len(claim) < _MIN_CLAIM_TOKENS:
            out.append(sentence)
            continue
        shares = [len(claim & tokens) / len(claim) for tokens in passage_tokens]
        best = max(range(len(shares)), key=shares.__getitem__)
        if shares[best] < threshold:
            out.append(sentence)
            continue
        body = sentence.rstrip()
        out.append(f"{body}[{best + 1}]{sentence[len(body) :]}")
        added.append(body.strip())
    out.append(answer[pos:])
    return "".join(out), added
