"""Fast sentence and word splitting for unstructured's element classifier.

unstructured decides Title vs NarrativeText by counting sentences and words with a spaCy
pipeline: about 40 KB/s of English on these machines, slower than embedding the same text,
so parsing dominated ingestion. The counts only feed heuristics (how many sentences, how
many capitalised words), for which a rule-based splitter gives the same decisions.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (followed by space/quote/bracket and then space or end) or at the
# Chinese/Japanese full stops, which need no following space.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|(?<=[。！？；…])\s*")
_WORD = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]", re.UNICODE)


def sent_tokenize(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def word_tokenize(text: str) -> list[str]:
    return _WORD.findall(text)


def install() -> None:
    """Point unstructured's classifier at the fast splitters."""
    from unstructured.partition import text_type

    text_type.sent_tokenize = sent_tokenize
    text_type.word_tokenize = word_tokenize  # type: ignore[assignment]
