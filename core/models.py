"""SQLModel tables. Changes here need an Alembic migration in core/migrations/versions."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class Permission(StrEnum):
    read = "read"
    write = "write"
    manage = "manage"


PERMISSION_RANK = {Permission.read: 1, Permission.write: 2, Permission.manage: 3}


class DocStatus(StrEnum):
    queued = "queued"
    parsing = "parsing"
    embedding = "embedding"
    indexing = "indexing"
    ready = "ready"
    failed = "failed"
    deleted = "deleted"


ACTIVE_STATUSES = (DocStatus.queued, DocStatus.parsing, DocStatus.embedding, DocStatus.indexing)


class Role(StrEnum):
    """What a user may do beyond their grants. `admin`: everything. `librarian`: manages the
    libraries granted to them with `manage` (upload, delete, grant, API keys). `staff`: reads
    and asks in the libraries granted to them or their departments (read at most)."""

    admin = "admin"
    librarian = "librarian"
    staff = "staff"


class User(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True, max_length=150)
    display_name: str = Field(default="", max_length=200)
    password_hash: str = Field(description="Empty for accounts of a directory provider")
    role: str = Field(default=Role.staff, max_length=16)
    is_active: bool = True
    must_change_password: bool = False
    auth_source: str = Field(default="local", max_length=32, description="local, ldap, oidc…")
    password_changed_at: datetime | None = None
    last_login_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin


class Group(SQLModel, table=True):
    """A department. `parent_id` nests departments."""

    __tablename__ = "group_"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    parent_id: int | None = Field(default=None, foreign_key="group_.id")
    created_at: datetime = Field(default_factory=utcnow)


class GroupMember(SQLModel, table=True):
    group_id: int = Field(foreign_key="group_.id", primary_key=True)
    user_id: int = Field(foreign_key="user.id", primary_key=True)


class Library(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=200)
    description: str = ""
    allow_download: bool = Field(
        default=True, description="Readers may download originals (managers always may)"
    )
    created_by: int | None = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class LibraryGrant(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("library_id", "user_id", "group_id"),)
    id: int | None = Field(default=None, primary_key=True)
    library_id: int = Field(foreign_key="library.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    group_id: int | None = Field(default=None, foreign_key="group_.id", index=True)
    permission: str = Field(max_length=16)
    created_by: int | None = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class ScopeGrant(SQLModel, table=True):
    """Read access to part of a library: a folder (and its subfolders) or one document.

    A scope that has any grant is restricted: inside it, only its grantees (and managers of the
    library) read, even if they hold a grant on the whole library. The innermost restricted
    scope containing a document decides.
    """

    id: int | None = Field(default=None, primary_key=True)
    library_id: int = Field(foreign_key="library.id", index=True)
    folder: str = Field(default="", max_length=2000, description="'' when document_id is set")
    document_id: int | None = Field(default=None, foreign_key="document.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    group_id: int | None = Field(default=None, foreign_key="group_.id", index=True)
    created_by: int | None = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class Document(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("library_id", "sha256"),)
    id: int | None = Field(default=None, primary_key=True)
    library_id: int = Field(foreign_key="library.id", index=True)
    sha256: str = Field(max_length=64, index=True)
    filename: str = Field(max_length=1000)
    folder: str = Field(default="", max_length=2000, description="Folder path inside an upload")
    title: str = Field(
        default="", max_length=500, description="From the first heading or line; may be empty"
    )
    media_type: str = Field(default="", max_length=200)
    kind: str = Field(default="", max_length=20)
    size: int = 0
    status: str = Field(default=DocStatus.queued, max_length=16, index=True)
    progress: float = 0.0
    reason: str | None = None
    version: int = 1
    attempts: int = 0
    claim: str | None = Field(default=None, max_length=64)
    heartbeat_at: datetime | None = None
    enqueued_at: datetime | None = None
    page_count: int | None = None
    chunk_count: int = 0
    parse_strategy: str = Field(default="", max_length=40)
    warnings: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_by: int | None = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Chunk(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    document_id: int = Field(foreign_key="document.id", index=True)
    library_id: int = Field(foreign_key="library.id", index=True)
    doc_version: int
    ordinal: int
    text: str
    token_count: int
    kind: str = Field(default="text", max_length=16)
    heading_path: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    page_start: int | None = None
    page_end: int | None = None
    spans: list[list[int]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    keywords: str = Field(default="", description="BM25 analyzer tokens, space-separated")
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    embedding_en: bytes | None = Field(
        default=None,
        sa_column=Column(LargeBinary, nullable=True),
        description="English embedder's vector; only for chunks mostly in English",
    )


class AuthToken(SQLModel, table=True):
    """A bearer token (stored as its sha256) for one signed-in user."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    kind: str = Field(default="bearer", max_length=16, description="bearer or cookie")
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None
    expires_at: datetime
    revoked_at: datetime | None = None


class ApiKey(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16, index=True)
    key_hash: str = Field(max_length=64, unique=True)
    owner_id: int = Field(foreign_key="user.id", index=True)
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    library_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only record of security-relevant events."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor_user_id: int | None = Field(default=None, index=True)
    actor_api_key_id: int | None = None
    action: str = Field(max_length=64, index=True)
    target_type: str = Field(default="", max_length=32)
    target_id: str = Field(default="", max_length=64)
    client_ip: str = Field(default="", max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Conversation(SQLModel, table=True):
    """A user's chat: its messages are visible to its owner only."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    api_key_id: int | None = Field(default=None, foreign_key="apikey.id")
    title: str = Field(default="", max_length=200)
    library_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Message(SQLModel, table=True):
    """One turn. Assistant turns keep what the answer rested on: citations, cited sources, the
    per-sentence support flags, and whether it was blocked or found nothing."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = Field(foreign_key="conversation.id", index=True)
    role: str = Field(max_length=16)  # user | assistant
    content: str = ""
    standalone_question: str = Field(default="", description="The follow-up, rewritten")
    reasoning: str = ""
    citations: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    sources: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    flags: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    not_found: bool = False
    blocked: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class Feedback(SQLModel, table=True):
    """A reader's verdict on one answer: one per user and message, replaced when they change
    their mind. The question and answer are copied so the review outlives the conversation
    (deleting it clears `message_id`)."""

    __table_args__ = (UniqueConstraint("message_id", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    rating: int = Field(description="+1 helpful, -1 not helpful")
    comment: str = Field(default="", max_length=2000)
    question: str = ""
    answer: str = ""
    library_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    document_ids: list[int] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False), description="cited"
    )
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
