"""Request and response bodies for identity and access: sign-in, users, departments, grants,
API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from sqlmodel import Session

from core.models import ApiKey, User
from core.repo import users

RoleName = Literal["admin", "librarian", "staff"]
PermissionName = Literal["read", "write", "manage"]
ScopeName = Literal["search", "chat", "ingest", "act_as", "metrics"]


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    must_change_password: bool = False


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: RoleName
    is_admin: bool
    is_active: bool
    must_change_password: bool
    auth_source: str
    departments: list[str]
    created_at: datetime
    last_login_at: datetime | None


def user_out(session: Session, user: User) -> UserOut:
    assert user.id is not None
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        is_admin=user.is_admin,
        is_active=user.is_active,
        must_change_password=user.must_change_password,
        auth_source=user.auth_source,
        departments=users.group_names_of(session, user.id),
        created_at=user.created_at,
        last_login_at=user.last_login_at,
    )


class SessionOut(BaseModel):
    csrf_token: str = Field(description="Send as X-CSRF-Token on requests that change things")
    expires_in: int
    user: UserOut


class PasswordChangeIn(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(max_length=1024)
    display_name: str = Field("", max_length=200)
    role: RoleName = "staff"
    must_change_password: bool = Field(
        True, description="The user must choose a new password at first sign-in"
    )


class UserPatch(BaseModel):
    display_name: str | None = Field(None, max_length=200)
    role: RoleName | None = None
    is_active: bool | None = Field(None, description="false disables the account at once")


class PasswordResetIn(BaseModel):
    password: str = Field(max_length=1024, description="A temporary password")
    must_change_password: bool = True


class GroupIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    parent_id: int | None = None


class GroupPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    parent_id: int | None = None


class GroupOut(BaseModel):
    id: int
    name: str
    parent_id: int | None
    member_ids: list[int]
    created_at: datetime


class MemberIn(BaseModel):
    user_id: int


class _Grantee(BaseModel):
    user_id: int | None = None
    group_id: int | None = None

    @model_validator(mode="after")
    def _one_grantee(self) -> _Grantee:
        if (self.user_id is None) == (self.group_id is None):
            raise ValueError("give exactly one of user_id or group_id")
        return self


class GrantIn(_Grantee):
    permission: PermissionName


class GrantOut(BaseModel):
    id: int
    library_id: int
    user_id: int | None
    group_id: int | None
    permission: str
    created_at: datetime


class ScopeGrantIn(_Grantee):
    folder: str = Field("", max_length=2000, description="A folder of the library (and below)")
    document_id: int | None = Field(None, description="Or one document")

    @model_validator(mode="after")
    def _one_scope(self) -> ScopeGrantIn:
        if (self.document_id is None) == (not self.folder.strip("/ ")):
            raise ValueError("give exactly one of folder or document_id")
        return self


class ScopeGrantOut(BaseModel):
    id: int
    library_id: int
    folder: str
    document_id: int | None
    user_id: int | None
    group_id: int | None
    created_at: datetime


class ApiKeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="What the key is for")
    scopes: list[ScopeName] = Field(default_factory=lambda: ["search", "chat"])  # type: ignore[arg-type]
    library_ids: list[int] = Field(
        default_factory=list, description="Libraries the key may use; empty = all yours"
    )
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    owner_id: int
    scopes: list[str]
    library_ids: list[int]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


def api_key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut.model_validate(key, from_attributes=True)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="Shown once; store it now")
