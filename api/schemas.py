"""Request and response bodies of /api/v1."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class LibraryIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=5000)


class LibraryPatch(BaseModel):
    """What to change (at least one field); what is left out stays as it is."""

    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=5000)
    allow_download: bool | None = Field(
        None, description="Readers may download originals (managers always may)"
    )

    @model_validator(mode="after")
    def _something(self) -> LibraryPatch:
        if self.name is None and self.description is None and self.allow_download is None:
            raise ValueError("give at least one of name, description, allow_download")
        return self


class LibraryOut(BaseModel):
    id: int
    name: str
    description: str
    allow_download: bool = Field(description="Readers may download originals (managers always may)")
    created_at: datetime
    permission: str
    documents: dict[str, int] = Field(default_factory=dict, description="count by status")


class DocumentOut(BaseModel):
    id: int
    library_id: int
    filename: str
    title: str = Field("", description="From the document's first heading or line, once parsed")
    folder: str
    sha256: str
    media_type: str
    kind: str
    size: int
    status: str
    progress: float
    reason: str | None
    warnings: list[str] = Field(
        default_factory=list, description="what parsing noticed without failing"
    )
    version: int
    page_count: int | None
    chunk_count: int
    created_at: datetime
    updated_at: datetime


class DocumentList(BaseModel):
    items: list[DocumentOut]
    total: int
    offset: int
    limit: int


class UploadItem(BaseModel):
    file: str = Field(description="path of the file inside the upload (folder/name)")
    document_id: int | None = None
    status: Literal["queued", "duplicate", "rejected"]
    reason: str | None = None


class UploadReport(BaseModel):
    queued: int
    duplicates: int
    rejected: int
    items: list[UploadItem]


class ChunkOut(BaseModel):
    id: int
    ordinal: int
    text: str
    token_count: int
    kind: str
    heading_path: list[str]
    page_start: int | None
    page_end: int | None


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="Question or keywords")
    library_ids: list[int] | None = Field(
        None, description="Libraries to search (default: every library you may read)"
    )
    top_k: int | None = Field(None, ge=1, le=50, description="Passages to return (default 5)")
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    rerank: bool | None = Field(
        None, description="Cross-encoder rerank; default: when a reranker is installed"
    )


class PassageOut(BaseModel):
    chunk_id: int = Field(description="Best-ranked chunk of the passage")
    chunk_ids: list[int] = Field(description="Adjacent chunks merged into this passage")
    document_id: int
    title: str = Field(description="The document's title, or its file name when it has none")
    filename: str
    library_id: int
    library_name: str
    text: str
    text_html: str = Field(description="`text` escaped for HTML (no Markdown)")
    heading_path: list[str]
    page_start: int | None
    page_end: int | None
    score: float = Field(description="Fused score (or reranker score when reranked)")
    scores: dict[str, float] = Field(description="Raw score of each ranker: dense, bm25, rerank")
    duplicate_chunk_ids: list[int] = Field(
        description="Near-duplicate chunks collapsed into this passage"
    )


class SearchOut(BaseModel):
    query: str
    language: Literal["zh", "en"]
    mode: str
    reranked: bool
    library_ids: list[int] = Field(description="The libraries that were searched")
    took_ms: float
    results: list[PassageOut]


class ChatIn(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    conversation_id: int | None = None
    library_ids: list[int] | None = Field(
        None, description="Libraries to ask (default: the conversation's, else all you may read)"
    )
    stream: bool = False


class CitationOut(BaseModel):
    marker: int = Field(description="n of the [n] marker, numbering the prompt's passages")
    start: int = Field(description="Char span of the marker in the answer")
    end: int
    sentence: str = Field(description="The answer sentence that carries the marker")
    document_id: int
    chunk_id: int
    title: str
    filename: str
    library_id: int
    library_name: str
    page_start: int | None
    page_end: int | None
    snippet: str = Field(description="The passage sentence the claim rests on")
    snippet_start: int = Field(description="Char span of the snippet inside the source's text")
    snippet_end: int
    snippet_html: str = Field(
        description="Safe HTML: the snippet in <mark> with some of the source's text around it",
    )


class SourceOut(BaseModel):
    marker: int
    document_id: int
    chunk_ids: list[int]
    title: str
    filename: str
    library_id: int
    library_name: str
    page_start: int | None
    page_end: int | None
    heading_path: list[str]
    text: str


class ChatOut(BaseModel):
    conversation_id: int | None
    message_id: int | None
    question: str
    standalone_question: str
    answer: str
    answer_html: str = Field(
        description="Safe HTML of the answer's Markdown; [n] markers link to #source-n"
    )
    citations: list[CitationOut]
    sources: list[SourceOut] = Field(description="Only passages the answer actually cites")
    not_found: bool
    blocked: bool
    flags: dict[str, object] = Field(
        description="uncited_sentences, unsupported_sentences, removed_markers, redacted, "
        'blocked_by, blocked_categories, truncated, fallback ("extractive" when the model '
        "gave no answer and the best passage is quoted instead)"
    )
    reasoning: str = Field("", description="A reasoning model's thinking, kept apart")
    timings: dict[str, float]


class ConversationOut(BaseModel):
    id: int
    title: str
    library_ids: list[int]
    created_at: datetime
    updated_at: datetime


class MessageFeedbackOut(BaseModel):
    rating: Literal[1, -1] = Field(description="+1 helpful, -1 not helpful")
    comment: str


class MessageOut(BaseModel):
    id: int
    role: str
    content: str
    answer_html: str = Field(
        description="Safe HTML of an assistant message's Markdown (empty for the user's)"
    )
    standalone_question: str
    citations: list[dict[str, object]]
    sources: list[dict[str, object]]
    flags: dict[str, object]
    not_found: bool
    blocked: bool
    created_at: datetime
    feedback: MessageFeedbackOut | None = Field(
        None, description="Your own feedback on this answer (PUT …/messages/{id}/feedback)"
    )


class ConversationDetailOut(ConversationOut):
    messages: list[MessageOut]
