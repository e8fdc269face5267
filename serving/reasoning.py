"""Reasoning models (DeepSeek-R1 distills and the like) think in `<think>…</think>` before they
answer. The thinking is never shown as the answer and never searched for citations; it is
kept apart so an API may return it separately.

`split_reasoning` handles a whole reply; `ReasoningFilter` does the same for a stream of
pieces, holding back only what could still be the start of a tag.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    answer: str
    reasoning: str


def split_reasoning(text: str) -> Split:
    """Answer and reasoning of a whole reply. A reply that opens `<think>` and never closes it
    is all reasoning (the model ran out of tokens while thinking); a stray `</think>` with no
    opening tag (some servers strip the opening one) ends the reasoning there."""
    f = ReasoningFilter()
    answer = f.feed(text) + f.flush()
    return Split(answer=answer.strip(), reasoning=f.reasoning.strip())


class ReasoningFilter:
    """Feed streamed pieces; get back the part that belongs to the answer."""

    def __init__(self) -> None:
        self.reasoning = ""
        self._inside = False
        self._pending = ""
        self._seen_answer = False

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        self._pending = ""
        out: list[str] = []
        while text:
            if self._inside:
                end = text.find(CLOSE)
                if end < 0:
                    keep = _partial_tag_suffix(text, CLOSE)
                    self.reasoning += text[: len(text) - keep]
                    self._pending = text[len(text) - keep :]
                    break
                self.reasoning += text[:end]
                text = text[end + len(CLOSE) :]
                self._inside = False
                continue
            start = text.find(OPEN)
            stray = text.find(CLOSE)
            if stray >= 0 and (start < 0 or stray < start) and not self._seen_answer:
                # `</think>` without an opening tag: what came before it was reasoning.
                self.reasoning += "".join(out) + text[:stray]
                out = []
                text = text[stray + len(CLOSE) :]
                continue
            if start < 0:
                keep = max(_partial_tag_suffix(text, OPEN), _partial_tag_suffix(text, CLOSE))
                emitted = text[: len(text) - keep]
                out.append(emitted)
                self._pending = text[len(text) - keep :]
                break
            out.append(text[:start])
            text = text[start + len(OPEN) :]
            self._inside = True
        answer = "".join(out)
        if answer.strip():
            self._seen_answer = True
        return answer

    def flush(self) -> str:
        """End of stream: release what was held back."""
        rest, self._pending = self._pending, ""
        if self._inside:
            self.reasoning += rest
            return ""
        return rest


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
