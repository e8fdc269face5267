"""The answer pipeline with a fake model and retriever: events, screening, citations,
reasoning, personal data, loops, follow-ups and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from core.types import Passage
from serving.answering import (
    MODEL_UNAVAILABLE,
    NOT_FOUND,
    Answerer,
    AnswerOptions,
    AnswerResult,
    CitationEvent,
    Done,
    Event,
    Failure,
    Token,
    collect,
)
from serving.citations import split_sentences
from serving.evidence import relevant_passages
from serving.lexicon import Lexicon
from serving.llm_client import ModelUnavailable, StreamDelta
from serving.prompts import STOP, Turn, rewrite_messages
from serving.safety import BLOCKED_ANSWER, BLOCKED_QUESTION, SafetyScreen


def _p(n: int, text: str, dense: float = 0.8) -> Passage:
    return Passage(
        chunk_id=n,
        document_id=100 + n,
        library_id=1,
        text=text,
        title=f"doc{n}",
        heading_path=[],
        page_start=None,
        page_end=None,
        score=1.0 / n,
        scores={"dense": dense},
    )


ZH = [
    _p(1, "员工入职满一年后享有五天带薪年假。"),
    _p(2, "食堂中午十一点半开门。"),
    _p(3, "停车场在地下二层。"),
]
EN = [
    _p(1, "Replace the shaft seal of the pump every six months."),
    _p(2, "The canteen opens at 11:30."),
]


# --- fakes -----------------------------------------------------------------------------------


class FakeStream:
    """What `LLMClient.stream` returns: an async iterator of deltas with `aclose`."""

    def __init__(self, deltas: Sequence[StreamDelta], fail_at: int | None = None) -> None:
        self.deltas = list(deltas)
        self.fail_at = fail_at
        self.consumed = 0
        self.closed = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> StreamDelta:
        if self.consumed == self.fail_at:
            raise ModelUnavailable("replica went away")
        if self.consumed >= len(self.deltas):
            raise StopAsyncIteration
        self.consumed += 1
        return self.deltas[self.consumed - 1]

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeLLM:
    pieces: Sequence[str | StreamDelta] = ()
    rewrite: str = ""
    fail_at: int | None = None
    chats: list[list[dict[str, str]]] = field(default_factory=list)
    chat_kwargs: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[list[dict[str, str]]] = field(default_factory=list)
    stream_kwargs: list[dict[str, Any]] = field(default_factory=list)
    streams: list[FakeStream] = field(default_factory=list)

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        affinity_key: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        stop: list[str] | None = None,
    ) -> SimpleNamespace:
        self.chats.append(messages)
        self.chat_kwargs.append({"max_tokens": max_tokens, "temperature": temperature})
        return SimpleNamespace(text=self.rewrite)

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        affinity_key: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.2,
        stop: list[str] | None = None,
    ) -> FakeStream:
        self.prompts.append(messages)
        self.stream_kwargs.append(
            {"affinity_key": affinity_key, "max_tokens": max_tokens, "stop": stop}
        )
        deltas = [p if isinstance(p, StreamDelta) else StreamDelta(content=p) for p in self.pieces]
        deltas.append(
            StreamDelta(finish_reason="stop", prompt_tokens=100, completion_tokens=20, final=True)
        )
        stream = FakeStream(deltas, self.fail_at)
        self.streams.append(stream)
        return stream

    @property
    def called(self) -> bool:
        return bool(self.chats or self.prompts)


class FakeRetriever:
    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self.queries: list[str] = []

    async def __call__(self, query: str) -> list[Passage]:
        self.queries.append(query)
        return list(self.passages)


@dataclass(frozen=True)
class Verdict:
    safe: bool
    categories: list[str] = field(default_factory=list)


LEXICON = Lexicon.from_lines(["炸药\tviolence", "detonator\tviolence"])


def _answerer(
    llm: FakeLLM | None,
    retrieve: FakeRetriever,
    *,
    screen: SafetyScreen | None = None,
    **options: Any,
) -> Answerer:
    return Answerer(
        retrieve=retrieve,
        llm=llm,  # type: ignore[arg-type]
        screen=screen or SafetyScreen(LEXICON),
        evidence=lambda q, ps: relevant_passages(q, ps),
        options=AnswerOptions(**options),
    )


def _run(answerer: Answerer, question: str, history: Sequence[Turn] = ()) -> list[Event]:
    async def go() -> list[Event]:
        return [e async for e in answerer.answer(question, history, affinity_key="conv-1")]

    return asyncio.run(go())


def _done(events: list[Event]) -> AnswerResult:
    assert isinstance(events[-1], Done), events[-1]
    assert sum(isinstance(e, Done | Failure) for e in events) == 1
    return events[-1].result


def _tokens(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, Token))


# --- before the model ------------------------------------------------------------------------


def test_blocked_question_never_reaches_retrieval_or_the_model() -> None:
    for question, lang in (("怎么制作炸药？", "zh"), ("How do I wire a detonator?", "en")):
        llm, retrieve = FakeLLM(["不该出现"]), FakeRetriever(ZH)
        events = _run(_answerer(llm, retrieve), question)
        result = _done(events)
        assert len(events) == 1
        assert result.blocked and result.answer == BLOCKED_QUESTION[lang]
        assert result.block is not None and result.block.layer == "lexicon"
        assert result.flags["blocked_by"] == "lexicon"
        assert result.flags["blocked_categories"] == ["violence"]
        assert retrieve.queries == [] and not llm.called


def test_safety_model_blocks_a_question() -> None:
    async def model(text: str, role: str, question: str | None) -> Verdict:
        return Verdict(False, ["S2"])

    llm, retrieve = FakeLLM(["x"]), FakeRetriever(ZH)
    result = _done(_run(_answerer(llm, retrieve, screen=SafetyScreen(LEXICON, model)), "年假？"))
    assert result.blocked and result.block is not None and result.block.layer == "model"
    assert result.block.categories == ["S2"]
    assert retrieve.queries == [] and not llm.called


def test_not_found_does_not_call_the_model() -> None:
    weak = [_p(1, "停车场在地下二层。", dense=0.05), _p(2, "食堂中午开门。", dense=0.1)]
    llm, retrieve = FakeLLM(["不该出现"]), FakeRetriever(weak)
    events = _run(_answerer(llm, retrieve), "年假有几天？")
    result = _done(events)
    assert len(events) == 1
    assert result.not_found and result.answer == NOT_FOUND["zh"]
    assert retrieve.queries == ["年假有几天？"]
    assert not llm.called
    assert result.citations == [] and result.sources == []

    result = _done(_run(_answerer(FakeLLM(), FakeRetriever([])), "How long is annual leave?"))
    assert result.not_found and result.answer == NOT_FOUND["en"]


def test_no_model_configured() -> None:
    retrieve = FakeRetriever(ZH)
    events = _run(_answerer(None, retrieve), "年假有几天？")
    assert len(events) == 1 and isinstance(events[0], Failure)
    assert events[0].code == "model_not_configured"
    assert events[0].message == MODEL_UNAVAILABLE["zh"]
    assert "zhiku models serve" in events[0].detail
    assert retrieve.queries == []


# --- a normal answer -------------------------------------------------------------------------

ANSWER_PIECES = [
    "员工入职满一年",
    "后享有五天带薪年假",
    "[",
    "1]。食堂",
    "中午十一点半开门[2",
    ", 7]。",
]


def test_streamed_answer_with_citations() -> None:
    llm, retrieve = FakeLLM(ANSWER_PIECES), FakeRetriever(ZH)
    events = _run(_answerer(llm, retrieve, max_answer_tokens=300), "年假有几天？食堂几点开门？")
    result = _done(events)

    expected = "员工入职满一年后享有五天带薪年假[1]。食堂中午十一点半开门[2]。"
    assert _tokens(events) == expected
    assert result.answer == expected
    assert not result.blocked and not result.not_found
    # Each marker is announced once, after the token that completes it, with its passage.
    cites = [(e.marker, e.passage) for e in events if isinstance(e, CitationEvent)]
    assert cites == [(1, ZH[0]), (2, ZH[1])]
    first_cite = next(i for i, e in enumerate(events) if isinstance(e, CitationEvent))
    assert "[1]" in _tokens(events[:first_cite])
    # Only cited passages are sources; every passage was in the prompt.
    assert [c.marker for c in result.citations] == [1, 2]
    assert result.sources == [ZH[0], ZH[1]]
    assert result.passages == ZH
    assert result.removed_markers == [7]
    assert result.finish_reason == "stop"
    assert (result.prompt_tokens, result.completion_tokens) == (100, 20)
    assert result.sentences and all(s.flag is None for s in result.sentences)
    assert {"retrieval_ms", "generation_ms", "total_ms", "ttft_ms"} <= set(result.timings)

    # The model saw the passages and the question, and was asked to stop at the data tags.
    prompt = llm.prompts[0]
    assert prompt[0]["role"] == "system"
    assert "员工入职满一年后享有五天带薪年假" in prompt[-1]["content"]
    assert prompt[-1]["content"].endswith("年假有几天？食堂几点开门？")
    assert llm.stream_kwargs[0] == {"affinity_key": "conv-1", "max_tokens": 300, "stop": STOP}
    assert llm.chats == []  # no history, no rewrite
    assert llm.streams[0].closed


def test_uncited_sentence_gets_a_marker_in_the_final_answer_only() -> None:
    pieces = ["员工入职满一年后享有五天带薪年假[1]。", "停车场在地下二层。"]
    events = _run(_answerer(FakeLLM(pieces), FakeRetriever(ZH)), "年假和停车场？")
    result = _done(events)
    assert _tokens(events) == "员工入职满一年后享有五天带薪年假[1]。停车场在地下二层。"
    assert result.answer == "员工入职满一年后享有五天带薪年假[1]。停车场在地下二层。[3]"
    assert result.auto_cited == ["停车场在地下二层。"]
    assert result.flags["auto_cited_sentences"] == ["停车场在地下二层。"]
    # The streamed text is the answer without the added marker.
    assert result.answer.replace("[3]", "") == _tokens(events)
    assert [e.marker for e in events if isinstance(e, CitationEvent)] == [1]
    assert result.sources == [ZH[0], ZH[2]]


def test_model_saying_not_found_marks_the_result() -> None:
    pieces = ["I could not find ", "this in the knowledge base."]
    result = _done(_run(_answerer(FakeLLM(pieces), FakeRetriever(EN)), "Who is the CEO?"))
    assert result.not_found and result.answer == "I could not find this in the knowledge base."


# --- reasoning -------------------------------------------------------------------------------


def test_think_block_is_kept_out_of_tokens_and_answer() -> None:
    pieces = ["<thi", "nk>用户问年假，", "资料1说五天。</th", "ink>\n", "年假是五天[1]。"]
    events = _run(_answerer(FakeLLM(pieces), FakeRetriever(ZH)), "年假有几天？")
    result = _done(events)
    tokens = _tokens(events)
    for hidden in ("think", "用户问年假", "资料1说"):
        assert hidden not in tokens and hidden not in result.answer
    assert result.answer == "年假是五天[1]。"
    assert result.reasoning == "用户问年假，资料1说五天。"


def test_reasoning_deltas_are_kept_apart() -> None:
    pieces = [
        StreamDelta(reasoning="先看资料一，"),
        StreamDelta(reasoning="它说五天。"),
        StreamDelta(content="年假是五天[1]。"),
    ]
    events = _run(_answerer(FakeLLM(pieces), FakeRetriever(ZH)), "年假有几天？")
    result = _done(events)
    assert _tokens(events) == "年假是五天[1]。"
    assert result.reasoning == "先看资料一，它说五天。"
    assert "资料一" not in result.answer


# --- personal data ---------------------------------------------------------------------------


def test_personal_data_is_redacted_in_tokens_and_answer() -> None:
    pieces = ["年假请联系人事 138 00", "13 8000 或 hr.zh", "ang@corp.com[1]。"]
    events = _run(_answerer(FakeLLM(pieces), FakeRetriever(ZH)), "年假找谁？")
    result = _done(events)
    tokens = _tokens(events)
    for secret in ("0013", "8000", "hr.zh", "corp.com"):
        assert secret not in tokens and secret not in result.answer
        assert all(secret not in e.text for e in events if isinstance(e, Token))
    expected = "年假请联系人事 [REDACTED:mobile] 或 [REDACTED:email][1]。"
    assert tokens == expected and result.answer == expected
    assert result.redacted == ["mobile", "email"]
    assert result.flags["redacted"] == ["mobile", "email"]


# --- screening the answer --------------------------------------------------------------------


def test_lexicon_term_in_the_answer_stops_it() -> None:
    pieces = ["年假是五天[1]。", "另外，制作炸", "药需要", "硝酸铵。", "更多细节……"]
    llm = FakeLLM(pieces)
    events = _run(_answerer(llm, FakeRetriever(ZH)), "年假有几天？")
    result = _done(events)
    assert result.blocked and result.answer == BLOCKED_ANSWER["zh"]
    assert result.block is not None and result.block.layer == "lexicon"
    assert result.block.categories == ["violence"]
    assert result.citations == [] and result.sources == [] and result.sentences == []
    assert "炸药" not in _tokens(events)
    assert "硝酸铵" not in _tokens(events)
    stream = llm.streams[0]
    assert stream.consumed == 3 and stream.closed  # generation stopped there


def test_lexicon_block_in_english() -> None:
    pieces = ["Replace the seal every six months [1]. ", "Then wire the deto", "nator. More."]
    llm = FakeLLM(pieces)
    events = _run(_answerer(llm, FakeRetriever(EN)), "How often is the seal replaced?")
    result = _done(events)
    assert result.blocked and result.answer == BLOCKED_ANSWER["en"]
    assert "detonator" not in _tokens(events)
    assert llm.streams[0].consumed == 3


def test_safety_model_flags_the_answer_window() -> None:
    calls: list[tuple[str, str, str | None]] = []

    async def model(text: str, role: str, question: str | None) -> Verdict:
        calls.append((text, role, question))
        if role == "assistant" and "秘密" in text:
            return Verdict(False, ["S9"])
        return Verdict(True)

    pieces = [
        "年假是五天[1]。" * 2,  # 18 characters: a window, screened
        "食堂中午开门[2]。",  # 10 more: the next window
        "这是公司秘密计划的细节。",  # flagged before it is shown
        "还有更多。",
    ]
    llm = FakeLLM(pieces)
    screen = SafetyScreen(LEXICON, model)
    events = _run(_answerer(llm, FakeRetriever(ZH), screen=screen, window_chars=10), "年假有几天？")
    result = _done(events)
    assert result.blocked and result.answer == BLOCKED_ANSWER["zh"]
    assert result.block is not None and result.block.layer == "model"
    assert result.flags["blocked_by"] == "model"
    assert result.flags["blocked_categories"] == ["S9"]
    assert _tokens(events) == "年假是五天[1]。年假是五天[1]。食堂中午开门[2]。"
    assert llm.streams[0].consumed == 3 and llm.streams[0].closed
    assert calls[0] == ("年假有几天？", "user", None)
    assert [(role, q) for _, role, q in calls[1:]] == [("assistant", "年假有几天？")] * 3
    assert calls[1][0] == "年假是五天[1]。" * 2
    # Each window is the new text with up to `window_chars` of what came before it.
    assert calls[2][0] == "。年假是五天[1]。食堂中午开门[2]。"
    assert calls[3][0].endswith("这是公司秘密计划的细节。") and len(calls[3][0]) == 10 + 12


def test_safety_model_checks_the_end_of_a_short_answer() -> None:
    async def model(text: str, role: str, question: str | None) -> Verdict:
        return Verdict(not (role == "assistant" and "五天" in text), ["S1"])

    screen = SafetyScreen(LEXICON, model)
    llm = FakeLLM(["年假是五天[1]。"])
    result = _done(_run(_answerer(llm, FakeRetriever(ZH), screen=screen), "年假有几天？"))
    # Shorter than one window: screened when the stream ends, and the final result says so.
    assert result.blocked and result.block is not None and result.block.layer == "model"
    assert result.answer == BLOCKED_ANSWER["zh"] and result.citations == []


# --- failures and loops ----------------------------------------------------------------------


def test_model_unavailable_mid_stream_is_a_failure() -> None:
    llm = FakeLLM(["年假是", "五天[1]。", "食堂"], fail_at=2)
    events = _run(_answerer(llm, FakeRetriever(ZH)), "年假有几天？")
    assert isinstance(events[-1], Failure)
    assert not any(isinstance(e, Done) for e in events)
    failure = events[-1]
    assert failure.code == "model_unavailable"
    assert failure.message == MODEL_UNAVAILABLE["zh"]
    assert failure.detail == "replica went away"
    assert _tokens(events) == "年假是五天[1]。"
    assert llm.streams[0].closed


def test_collect_returns_the_result_or_the_failure() -> None:
    async def go(llm: FakeLLM) -> AnswerResult | Failure:
        return await collect(_answerer(llm, FakeRetriever(ZH)).answer("年假有几天？"))

    ok = asyncio.run(go(FakeLLM(["年假是五天[1]。"])))
    assert isinstance(ok, AnswerResult) and ok.answer == "年假是五天[1]。"
    failed = asyncio.run(go(FakeLLM(["年假"], fail_at=0)))
    assert isinstance(failed, Failure) and failed.code == "model_unavailable"


def test_repetition_loop_is_stopped() -> None:
    loop = ["员工入职满一年后享有五天带薪年假[1]。", "食堂中午十一点半开门[2]。"] * 20
    llm = FakeLLM(loop)
    events = _run(_answerer(llm, FakeRetriever(ZH)), "年假有几天？")
    result = _done(events)
    assert result.finish_reason == "repetition"
    assert result.flags["truncated"] is True
    assert llm.streams[0].consumed < 10 and llm.streams[0].closed
    assert result.answer == "员工入职满一年后享有五天带薪年假[1]。食堂中午十一点半开门[2]。"
    sentences = [result.answer[a:b] for a, b in split_sentences(result.answer)]
    assert len(sentences) == len(set(sentences))


# --- follow-up questions ---------------------------------------------------------------------

HISTORY = [Turn("user", "年假有几天？"), Turn("assistant", "年假是五天[1]。")]


def test_follow_up_is_rewritten_for_retrieval() -> None:
    llm = FakeLLM(["病假是十天。"], rewrite="<think>问的是病假</think>病假有几天？")
    retrieve = FakeRetriever(ZH)
    result = _done(_run(_answerer(llm, retrieve), "那病假呢？", HISTORY))
    assert llm.chats == [rewrite_messages("那病假呢？", HISTORY, "zh")]
    assert llm.chat_kwargs == [{"max_tokens": 96, "temperature": 0.0}]
    assert retrieve.queries == ["病假有几天？"]
    assert result.standalone_question == "病假有几天？"
    assert result.question == "那病假呢？"
    assert "rewrite_ms" in result.timings
    # The answer prompt carries the history and the question as asked.
    prompt = llm.prompts[0]
    assert [m["content"] for m in prompt[1:-1]] == [t.content for t in HISTORY]
    assert prompt[-1]["content"].endswith("那病假呢？")


def test_rewrite_in_the_wrong_language_falls_back() -> None:
    llm = FakeLLM(["病假是十天。"], rewrite="How many days of sick leave are there?")
    retrieve = FakeRetriever(ZH)
    result = _done(_run(_answerer(llm, retrieve), "那病假呢？", HISTORY))
    assert len(llm.chats) == 1
    assert retrieve.queries == ["年假有几天？ 那病假呢？"]
    assert result.standalone_question == "年假有几天？ 那病假呢？"


def test_standalone_question_is_not_rewritten() -> None:
    llm = FakeLLM(["病假是十天。"], rewrite="不该用到")
    retrieve = FakeRetriever(ZH)
    _done(_run(_answerer(llm, retrieve), "公司员工的病假一共有几天时间？", HISTORY))
    assert llm.chats == []
    assert retrieve.queries == ["公司员工的病假一共有几天时间？"]


# --- the model says nothing ------------------------------------------------------------------


def test_empty_reply_quotes_the_best_passage_instead() -> None:
    cases = (
        (
            ZH,
            "员工年假有几天？",
            "模型没有生成回答。最相关的原文是：「员工入职满一年后享有五天带薪年假」[1]",
        ),
        (
            EN,
            "How often is the pump shaft seal replaced?",
            "The model gave no answer. The most relevant passage says: "
            "\u201cReplace the shaft seal of the pump every six months\u201d [1]",
        ),
    )
    for passages, question, expected in cases:
        for pieces in ([], ["  \n"], ["<think>nothing to add</think>"]):
            events = _run(_answerer(FakeLLM(pieces), FakeRetriever(passages)), question)
            result = _done(events)
            assert result.answer == expected, (pieces, result.answer)
            assert _tokens(events).strip() == expected  # streamed as stored
            assert [(e.marker, e.passage) for e in events if isinstance(e, CitationEvent)] == [
                (1, passages[0])
            ]
            assert result.fallback == "extractive" and result.flags["fallback"] == "extractive"
            assert [c.marker for c in result.citations] == [1]
            assert result.sources == [passages[0]]
            assert not result.blocked and not result.not_found
            # The quote is checked against its passage; the lead-in is not a claim.
            assert len(result.sentences) == 1 and result.sentences[0].cited == [1]
            assert result.sentences[0].flag is None
            assert result.flags["uncited_sentences"] == []


def test_quoted_passage_loses_its_own_markers_and_is_cut_short() -> None:
    long = _p(1, "年假规定[3]：" + "员工入职满一年后享有五天带薪年假，" * 40 + "以此为准。")
    result = _done(_run(_answerer(FakeLLM([]), FakeRetriever([long])), "员工年假有几天？"))
    assert result.fallback == "extractive"
    assert "[3]" not in result.answer and result.answer.endswith("…」[1]")
    assert len(result.answer) < 460
    assert [c.marker for c in result.citations] == [1]


def test_a_real_answer_is_not_replaced() -> None:
    result = _done(_run(_answerer(FakeLLM(ANSWER_PIECES), FakeRetriever(ZH)), "年假有几天？"))
    assert result.fallback is None and result.flags["fallback"] is None
