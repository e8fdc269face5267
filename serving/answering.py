"""One question in, a cited answer out, as a stream of events.

    screen question → rewrite follow-up → retrieve → evidence threshold → prompt (budgeted)
    → stream from the main model → gate (markers, personal data) → screen in windows
    → citations checked → done

Everything it talks to is injected — the retriever (already limited to the libraries the asker
may read), the model client, the safety screen and the similarity used to check citations —
so it neither knows nor cares which server or index is behind them. Persisting the turn is the
caller's job (the api), using the `Done` event's result.

Events: `Token` (text the user may see now), `CitationEvent` (a marker appeared; its passage),
`Done` (the final, authoritative result) and `Failure` (a clear message; the model is down or
refused the request). A blocked question or answer and "not found" end with `Done`: they are
answers, not errors.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.language import text_language
from core.types import Passage
from serving.citations import (
    Citation,
    SentenceCheck,
    add_missing_citations,
    cited_span,
    resolve,
    split_sentences,
    strip_markers,
)
from serving.llm_client import LLMClient, ModelRequestError, ModelUnavailable
from serving.prompts import (
    STOP,
    Turn,
    build_prompt,
    heuristic_token_count,
    rewrite_messages,
)
from serving.reasoning import ReasoningFilter, split_reasoning
from serving.safety import BLOCKED_ANSWER, BLOCKED_QUESTION, SafetyScreen, ScreenResult
from serving.stream_gate import StreamGate

NOT_FOUND = {
    "zh": "知识库中没有找到与这个问题相关的信息。",
    "en": "I could not find this in the knowledge base.",
}
NO_MODEL = (
    "No language model is configured: start one with `zhiku models serve` "
    "or set ZHIKU_MAIN_BASE_URLS and ZHIKU_MAIN_MODEL."
)
NO_MODEL_ANSWER = {
    "zh": "模型没有生成回答。最相关的原文是：「{excerpt}」[1]",
    "en": "The model gave no answer. The most relevant passage says: “{excerpt}” [1]",
}
_EXCERPT_CHARS = 400
MODEL_UNAVAILABLE = {
    "zh": "语言模型暂时不可用，请稍后重试。",
    "en": "The language model is unavailable right now; please try again in a moment.",
}
_MODEL_SAYS_NOT_FOUND = re.compile(
    r"没有找到|未找到|无法找到|没有相关|could not find|couldn't find|cannot find|not found in",
    re.IGNORECASE,
)
_FOLLOW_UP = re.compile(
    r"^(那|那么|还有|另外|它|他|她|这|那个|这个|其|此|and\b|what about|how about|also\b|then\b)"
    r"|(它|他们|她们|它们|这个|那个|这些|那些|上述|前者|后者|\bit\b|\bthey\b|\bthem\b|\bthat\b"
    r"|\bthis\b|\bthose\b|\bthese\b|\bits\b|\btheir\b)",
    re.IGNORECASE,
)

Retrieve = Callable[[str], Awaitable[list[Passage]]]
EvidenceFilter = Callable[[str, list[Passage]], list[Passage]]
Similarity = Callable[[str, str], float]


@dataclass
class AnswerResult:
    question: str
    lang: str
    standalone_question: str = ""
    answer: str = ""
    citations: list[Citation] = field(default_factory=list)
    sources: list[Passage] = field(default_factory=list)
    sentences: list[SentenceCheck] = field(default_factory=list)
    removed_markers: list[int] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    not_found: bool = False
    blocked: bool = False
    block: ScreenResult | None = None
    reasoning: str = ""
    redacted: list[str] = field(default_factory=list)  # kinds of personal data removed
    auto_cited: list[str] = field(default_factory=list)  # sentences whose marker we added
    # "extractive": the model said nothing, so the answer quotes the best passage instead
    fallback: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def flags(self) -> dict[str, Any]:
        return {
            "uncited_sentences": [s.text for s in self.sentences if s.flag == "uncited"],
            "unsupported_sentences": [s.text for s in self.sentences if s.flag == "unsupported"],
            "removed_markers": self.removed_markers,
            "auto_cited_sentences": self.auto_cited,
            "redacted": self.redacted,
            "blocked_by": self.block.layer if self.block and not self.block.safe else None,
            "blocked_categories": self.block.categories if self.block else [],
            "truncated": self.finish_reason in ("length", "repetition"),
            "fallback": self.fallback,
        }


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class CitationEvent:
    marker: int
    passage: Passage


@dataclass(frozen=True)
class Done:
    result: AnswerResult


@dataclass(frozen=True)
class Failure:
    message: str
    code: str  # "model_unavailable" | "model_error"
    detail: str = ""


Event = Token | CitationEvent | Done | Failure


@dataclass
class AnswerOptions:
    max_answer_tokens: int = 512
    temperature: float = 0.0
    context_window: int = 4096
    history_turns: int = 6
    window_chars: int = 160
    count_tokens: Callable[[str], int] = heuristic_token_count


def looks_like_follow_up(question: str, history: Sequence[Turn]) -> bool:
    """Worth rewriting: there is history and the question leans on it (pronouns, "and …",
    "那…呢"), or it is too short to stand alone."""
    if not any(t.role == "user" for t in history):
        return False
    q = question.strip()
    short = len(q) <= 8 if text_language(q) == "zh" else len(q.split()) <= 3
    return short or bool(_FOLLOW_UP.search(q)) or q.endswith(("呢", "呢？", "呢?"))


def _sentence_key(sentence: str) -> str:
    return re.sub(r"\[\d+\]|\W+", "", sentence).lower()


def repeats(text: str) -> bool:
    """True when the last complete sentence of `text` already occurred: a small model caught
    in a loop. Generation is stopped there."""
    spans = split_sentences(text)
    if len(spans) < 3:  # the last span may be unfinished
        return False
    *earlier, last, _unfinished = spans
    key = _sentence_key(text[last[0] : last[1]])
    return len(key) >= 8 and any(_sentence_key(text[a:b]) == key for a, b in earlier)


def drop_repeated_sentences(text: str) -> str:
    seen: set[str] = set()
    out: list[str] = []
    pos = 0
    for start, end in split_sentences(text):
        out.append(text[pos:start])
        pos = end
        key = _sentence_key(text[start:end])
        if len(key) >= 8 and key in seen:
            continue
        seen.add(key)
        out.append(text[start:end])
    out.append(text[pos:])
    return "".join(out).strip()


def usable_rewrite(rewrite: str, question: str) -> str | None:
    """The model's rewrite if it is plausibly a question about the same thing, else None."""
    text = split_reasoning(rewrite).answer.strip().strip('"“”').splitlines()
    line = text[0].strip() if text else ""
    for prefix in ("Standalone question:", "Rewritten question:", "改写后的问题：", "问题："):
        if line.startswith(prefix):
            line = line[len(prefix) :].strip()
    if not line or len(line) > 3 * len(question) + 120:
        return None
    if text_language(line) != text_language(question):
        return None
    return line


class Answerer:
    def __init__(
        self,
        *,
        retrieve: Retrieve,
        llm: LLMClient | None,
        screen: SafetyScreen,
        evidence: EvidenceFilter,
        similarity: Similarity | None = None,
        options: AnswerOptions | None = None,
    ) -> None:
        self.retrieve = retrieve
        self.llm = llm
        self.screen = screen
        self.evidence = evidence
        self.similarity = similarity
        self.options = options or AnswerOptions()

    async def answer(
        self,
        question: str,
        history: Sequence[Turn] = (),
        *,
        affinity_key: str | None = None,
    ) -> AsyncIterator[Event]:
        started = time.perf_counter()
        question = question.strip()
        lang = text_language(question)
        result = AnswerResult(question=question, lang=lang, standalone_question=question)
        history = list(history)[-2 * self.options.history_turns :]

        verdict = await self.screen.screen(question, "user")
        if not verdict.safe:
            result.blocked, result.block, result.answer = True, verdict, BLOCKED_QUESTION[lang]
            result.timings["total_ms"] = _ms(started)
            yield Done(result)
            return

        llm = self.llm
        if llm is None:
            yield Failure(MODEL_UNAVAILABLE[lang], "model_not_configured", NO_MODEL)
            return
        if looks_like_follow_up(question, history):
            try:
                reply = await llm.chat(
                    rewrite_messages(question, history, lang),
                    affinity_key=affinity_key,
                    max_tokens=96,
                    temperature=0.0,
                )
            except ModelUnavailable as exc:
                yield Failure(MODEL_UNAVAILABLE[lang], "model_unavailable", exc.reason)
                return
            except ModelRequestError as exc:
                yield Failure(MODEL_UNAVAILABLE[lang], "model_error", str(exc))
                return
            rewritten = usable_rewrite(reply.text, question)
            last_user = next((t.content for t in reversed(history) if t.role == "user"), "")
            result.standalone_question = rewritten or f"{last_user} {question}".strip()
            result.timings["rewrite_ms"] = _ms(started)

        t = time.perf_counter()
        found = await self.retrieve(result.standalone_question)
        result.timings["retrieval_ms"] = _ms(t)
        relevant = self.evidence(result.standalone_question, found)
        if not relevant:
            result.not_found, result.answer = True, NOT_FOUND[lang]
            result.timings["total_ms"] = _ms(started)
            yield Done(result)
            return

        opts = self.options
        prompt = build_prompt(
            question,
            relevant,
            lang=lang,
            history=history,
            count=opts.count_tokens,
            context_window=opts.context_window,
            max_answer_tokens=opts.max_answer_tokens,
        )
        result.passages = prompt.passages
        gate = StreamGate(len(prompt.passages))
        thoughts = ReasoningFilter()
        reasoning_parts: list[str] = []
        screened_upto = 0
        stream = llm.stream(
            prompt.messages,
            affinity_key=affinity_key,
            max_tokens=opts.max_answer_tokens,
            temperature=opts.temperature,
            stop=STOP,
        )
        t = time.perf_counter()
        try:
            async for delta in stream:
                if delta.reasoning:
                    reasoning_parts.append(delta.reasoning)
                if delta.finish_reason:
                    result.finish_reason = delta.finish_reason
                if delta.prompt_tokens is not None:
                    result.prompt_tokens = delta.prompt_tokens
                    result.completion_tokens = delta.completion_tokens
                visible = thoughts.feed(delta.content) if delta.content else ""
                if not visible:
                    continue
                release = gate.feed(visible)
                if repeats(gate.released):
                    result.finish_reason = "repetition"
                    break
                blocked = self.screen.lexicon_check(gate.text)
                if blocked.safe and len(gate.text) - screened_upto >= opts.window_chars:
                    blocked = await self._screen_window(gate.text, screened_upto, question)
                    screened_upto = len(gate.text)
                if not blocked.safe:
                    self._block_answer(result, blocked)
                    break
                async for event in self._emit(release.text, release.new_markers, prompt.passages):
                    if "ttft_ms" not in result.timings:
                        result.timings["ttft_ms"] = _ms(started)
                    yield event
        except ModelUnavailable as exc:
            yield Failure(MODEL_UNAVAILABLE[lang], "model_unavailable", exc.reason)
            return
        except ModelRequestError as exc:
            yield Failure(MODEL_UNAVAILABLE[lang], "model_error", str(exc))
            return
        finally:
            await stream.aclose()  # stops generation on the server when we stop early
        result.timings["generation_ms"] = _ms(t)
        if result.completion_tokens is not None:  # the server's usage (absent if cut short)
            result.timings["completion_tokens"] = result.completion_tokens
        if result.prompt_tokens is not None:
            result.timings["prompt_tokens"] = result.prompt_tokens
        result.reasoning = ("".join(reasoning_parts) + thoughts.reasoning).strip()

        if not result.blocked:
            tail = gate.feed(thoughts.flush())
            final = gate.flush()
            verdict = self.screen.lexicon_check(gate.text)
            if verdict.safe:
                verdict = await self._screen_window(gate.text, screened_upto, question)
            if not verdict.safe:
                self._block_answer(result, verdict)
            elif not gate.released.strip():
                # Small models sometimes stop at once with nothing to say. An empty reply is
                # no answer: quote what the best passage says, cited, and say so.
                self._quote_best_passage(result, prompt.passages)
                async for event in self._emit(result.answer, [1], prompt.passages):
                    yield event
            else:
                for release in (tail, final):
                    async for event in self._emit(
                        release.text, release.new_markers, prompt.passages
                    ):
                        yield event
                # Citation checks embed sentences: keep that CPU work off the event loop.
                await asyncio.to_thread(self._finish, result, gate.released, prompt.passages)
                result.removed_markers = gate.removed_markers + result.removed_markers
                result.redacted = [m.kind for m in gate.pii]
        result.timings["total_ms"] = _ms(started)
        yield Done(result)

    async def _emit(
        self, text: str, markers: list[int], passages: list[Passage]
    ) -> AsyncIterator[Event]:
        if text:
            yield Token(text)
        for n in markers:
            yield CitationEvent(n, passages[n - 1])

    async def _screen_window(self, text: str, start: int, question: str) -> ScreenResult:
        """Screen the text added since `start`, with some context before it."""
        window = text[max(0, start - self.options.window_chars) :]
        return await self.screen.screen(window, "assistant", question)

    def _block_answer(self, result: AnswerResult, verdict: ScreenResult) -> None:
        result.blocked, result.block = True, verdict
        result.answer = BLOCKED_ANSWER[result.lang]
        result.citations, result.sources, result.sentences = [], [], []

    def _quote_best_passage(self, result: AnswerResult, passages: list[Passage]) -> None:
        best = passages[0]
        start, end = cited_span(result.standalone_question, best.text)
        excerpt = " ".join(strip_markers(best.text[start:end]).split())
        if len(excerpt) > _EXCERPT_CHARS:
            excerpt = excerpt[: _EXCERPT_CHARS - 1].rstrip() + "…"
        # End punctuation inside the quote would end the sentence before its marker.
        excerpt = excerpt.rstrip("。！？；.!?;")
        cited = resolve(NO_MODEL_ANSWER[result.lang].format(excerpt=excerpt), passages[:1])
        result.answer, result.citations, result.sources = cited.text, cited.citations, cited.sources
        # Only the quote is a claim; the sentence saying the model was silent cites nothing.
        result.sentences = [s for s in cited.sentences if s.cited]
        result.fallback = "extractive"

    def _finish(self, result: AnswerResult, text: str, passages: list[Passage]) -> None:
        text = text.strip()
        if result.finish_reason == "repetition":  # the last span is the loop's unfinished start
            spans = split_sentences(text)
            text = text[: spans[-2][1]] if len(spans) > 1 else text
        text = drop_repeated_sentences(text)
        text, result.auto_cited = add_missing_citations(text, passages)
        cited = resolve(text, passages, similarity=self.similarity)
        result.answer = cited.text
        result.citations = cited.citations
        result.sources = cited.sources
        result.sentences = cited.sentences
        result.removed_markers = cited.removed_markers
        if not cited.citations and _MODEL_SAYS_NOT_FOUND.search(cited.text):
            result.not_found = True


async def collect(events: AsyncIterator[Event]) -> AnswerResult | Failure:
    """Run an answer to the end: its result, or the failure that ended it."""
    async for event in events:
        if isinstance(event, Done | Failure):
            return event.result if isinstance(event, Done) else event
    raise RuntimeError("the answer stream ended without a result")


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)
