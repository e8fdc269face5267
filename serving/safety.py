"""The safety screen in front of and behind the main model.

Two layers, in order:
1. the sensitive-word lexicon (deterministic, always on, admin-editable);
2. a safety model, when one is configured: the bundled classifier in-process or a guard model
   (Llama Guard / Qwen3Guard protocol) behind an OpenAI-compatible server. Its check is an
   injected coroutine, so this module does not care which.

A question that fails is answered with a refusal in the asker's language and never reaches
retrieval or the main model; an answer that fails while streaming is stopped there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from serving.lexicon import Lexicon


class VerdictLike(Protocol):
    @property
    def safe(self) -> bool: ...

    @property
    def categories(self) -> list[str]: ...


ModelCheck = Callable[[str, str, "str | None"], Awaitable[VerdictLike]]

BLOCKED_QUESTION = {
    "zh": "抱歉，这个问题不在我可以回答的范围内。",
    "en": "Sorry, I can't help with that request.",
}
BLOCKED_ANSWER = {
    "zh": "（回答因包含不适当的内容而被中止。）",
    "en": "(The answer was stopped because it contained content that cannot be shown.)",
}


@dataclass(frozen=True)
class ScreenResult:
    safe: bool
    layer: str = ""  # "lexicon" | "model" when unsafe
    categories: list[str] = field(default_factory=list)


SAFE = ScreenResult(True)


class SafetyScreen:
    def __init__(self, lexicon: Lexicon | None = None, model: ModelCheck | None = None) -> None:
        self.lexicon = lexicon
        self.model = model

    def lexicon_check(self, text: str) -> ScreenResult:
        if self.lexicon is not None:
            hit = self.lexicon.first(text)
            if hit is not None:
                return ScreenResult(False, "lexicon", [hit.category])
        return SAFE

    async def screen(
        self, text: str, role: str = "user", question: str | None = None
    ) -> ScreenResult:
        found = self.lexicon_check(text)
        if not found.safe or self.model is None or not text.strip():
            return found
        verdict = await self.model(text, role, question)
        if verdict.safe:
            return SAFE
        return ScreenResult(False, "model", list(verdict.categories))
