"""Is anything retrieved relevant enough to answer from?

Fused ranks say which passage is best, not whether it is any good. A passage counts as
evidence when one of these absolute signals clears its threshold:
- dense cosine similarity of the multilingual embedder (`dense`),
- dense cosine of the English embedder (`dense_en`), for English passages,
- the share of the question's content words (Chinese character bigrams, English words) that
  occur in the passage — what BM25 rewards, but on a 0–1 scale.

When no passage clears any, the answer is "not found in the knowledge base" and the main
model is not called. Thresholds were set on the development sets
(`scripts/calibrate_evidence.py`, ADR 0006): nearly every question's positive passage passes,
and passages about something else mostly do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.language import text_language
from core.types import Passage
from serving.citations import content_tokens


@dataclass(frozen=True)
class EvidenceThresholds:
    dense: float = 0.30
    dense_en: float = 0.60
    coverage: float = 0.30  # Chinese: character bigrams are specific
    coverage_en: float = 0.5  # English: common words match anything
    min_question_tokens: int = 2  # below this, coverage alone says little


def coverage(question: str, passage_text: str) -> float:
    """Share of the question's content tokens found in the passage."""
    wanted = content_tokens(question)
    if not wanted:
        return 0.0
    return len(wanted & content_tokens(passage_text)) / len(wanted)


def is_evidence(question: str, passage: Passage, th: EvidenceThresholds) -> bool:
    s = passage.scores
    if s.get("dense", -1.0) >= th.dense or s.get("dense_en", -1.0) >= th.dense_en:
        return True
    if len(content_tokens(question)) < th.min_question_tokens:
        return False
    needed = th.coverage if text_language(question) == "zh" else th.coverage_en
    return coverage(question, passage.text) >= needed


def relevant_passages(
    question: str, passages: Sequence[Passage], th: EvidenceThresholds | None = None
) -> list[Passage]:
    """The passages worth showing the model, in their ranked order: all of them when at least
    one is evidence (lower-ranked context still helps), none otherwise."""
    th = th or EvidenceThresholds()
    if any(is_evidence(question, p, th) for p in passages):
        return list(passages)
    return []
