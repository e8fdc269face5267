"""Wiring for answers: the retriever, the model clients, the safety screen and the evidence
threshold, put together for `serving.answering.Answerer`. Used by the chat routes, the
OpenAI-compatible facade and `zhiku ask`.

One engine per event loop: its HTTP clients belong to the loop they were made on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import anyio
import numpy as np
from sqlmodel import Session

from core import db
from core.settings import Settings
from core.types import DocFilter, Passage
from retrieval.service import Retriever
from serving.answering import Answerer, AnswerOptions
from serving.endpoints import ModelEndpoint, endpoint
from serving.evidence import relevant_passages
from serving.guard import Verdict, guard_check
from serving.lexicon import Lexicon
from serving.llm_client import LLMClient
from serving.prompts import heuristic_token_count, tokenizer_counter
from serving.safety import ModelCheck, SafetyScreen

if TYPE_CHECKING:
    from api.metrics import Metrics

DEFAULT_LEXICON = Path(__file__).resolve().parents[1] / "serving" / "data" / "lexicon_default.txt"
_lock = threading.Lock()


def load_lexicon(settings: Settings) -> Lexicon:
    """The admin-editable list in the data dir, created from the bundled default on first use."""
    path = settings.lexicon_path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEFAULT_LEXICON.read_text(encoding="utf-8"), encoding="utf-8")
    return Lexicon.from_lines(path.read_text(encoding="utf-8").splitlines())


class ChatEngine:
    def __init__(self, settings: Settings, retriever: Retriever) -> None:
        self.settings = settings
        self.retriever = retriever
        self.main: ModelEndpoint = endpoint(settings, "main")
        self.llm = LLMClient(self.main.config) if self.main.config is not None else None
        self.count = (
            tokenizer_counter(self.main.tokenizer_dir) if self.main.tokenizer_dir else None
        ) or heuristic_token_count
        self._lexicon_mtime = -1.0
        self.screen = SafetyScreen(None, self._model_check())
        self.refresh_lexicon()
        self.loop = asyncio.get_running_loop()
        self.metrics: Metrics | None = None  # the app's, when answering for a request

    def _model_check(self) -> ModelCheck | None:
        backend = self.settings.safety_backend
        if backend == "off":
            return None
        if backend == "guard":
            config = endpoint(self.settings, "safety").config
            if config is None:
                raise RuntimeError(
                    "ZHIKU_SAFETY_BACKEND=guard needs ZHIKU_SAFETY_BASE_URLS and ZHIKU_SAFETY_MODEL"
                )
            guard = LLMClient(config)
            self.guard_llm: LLMClient | None = guard

            async def chat(messages: list[dict[str, str]], **kw: object) -> str:
                return (await guard.chat(messages, max_tokens=32, temperature=0.0)).text

            async def check_guard(text: str, role: str, question: str | None) -> Verdict:
                who: Literal["user", "assistant"] = "assistant" if role == "assistant" else "user"
                return await guard_check(chat, text, who, question=question)

            return check_guard
        from serving.safety_classifier import SafetyClassifier

        embedder = self.retriever.embedder
        classifier = SafetyClassifier.load(embed=lambda texts: np.asarray(embedder.embed(texts)))

        answer_threshold = self.settings.safety_answer_threshold

        async def check_classifier(text: str, role: str, question: str | None) -> Verdict:
            verdict = await anyio.to_thread.run_sync(classifier.check, text)
            # Trained on questions, the classifier also flags some ordinary document text;
            # answers (which restate documents) must score much higher to be stopped.
            if role == "assistant" and not verdict.safe and (verdict.score or 0) < answer_threshold:
                return Verdict(safe=True, categories=[], score=verdict.score, source=verdict.source)
            return verdict

        return check_classifier

    def refresh_lexicon(self) -> None:
        """Pick up an edited lexicon file (checked before each answer; cheap)."""
        path = self.settings.lexicon_path
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = -1.0
        if mtime != self._lexicon_mtime or self.screen.lexicon is None:
            self.screen.lexicon = load_lexicon(self.settings)
            self._lexicon_mtime = path.stat().st_mtime

    def similarity(self, a: str, b: str) -> float:
        vectors = np.asarray(self.retriever.embedder.embed([a, b]))
        return float(vectors[0] @ vectors[1])

    def answerer(
        self, library_ids: Sequence[int], filters: Mapping[int, DocFilter] | None = None
    ) -> Answerer:
        """An answerer over exactly `library_ids`, narrowed by `filters` (permission-checked
        by the caller)."""
        settings = self.settings
        ids = list(library_ids)
        narrowed = dict(filters or {})

        def search(query: str) -> list[Passage]:
            with Session(db.get_engine(settings), expire_on_commit=False) as session:
                return self.retriever.search(
                    session,
                    query,
                    ids,
                    top_k=settings.answer_passages,
                    rerank=False,
                    filters=narrowed,
                ).passages

        async def retrieve(query: str) -> list[Passage]:
            if not ids:
                return []
            return await anyio.to_thread.run_sync(search, query)

        self.refresh_lexicon()
        return Answerer(
            retrieve=retrieve,
            llm=self.llm,
            screen=self.screen,
            evidence=relevant_passages,
            similarity=self.similarity,
            options=AnswerOptions(
                max_answer_tokens=settings.answer_max_tokens,
                temperature=settings.answer_temperature,
                context_window=self.main.context_window,
                history_turns=settings.history_turns,
                window_chars=settings.safety_window_chars,
                count_tokens=self.count,
            ),
        )

    async def start(self) -> None:
        if self.llm is not None:
            await self.llm.start()

    async def aclose(self) -> None:
        if self.llm is not None:
            await self.llm.aclose()
        guard = getattr(self, "guard_llm", None)
        if guard is not None:
            await guard.aclose()
