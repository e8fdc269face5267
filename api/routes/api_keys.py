"""API keys for office systems. Admins manage every key; librarians create keys for the
libraries they manage and see and revoke their own. A key is shown once, at creation."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from api.access_schemas import ApiKeyCreated, ApiKeyIn, ApiKeyOut, api_key_out
from api.deps import ManagerPrincipal, SessionDep, client_ip
from core import access
from core.access import Principal
from core.errors import NotFound, ZhikuError
from core.models import ApiKey, utcnow
from core.repo import api_keys, audit

router = APIRouter(prefix="/api-keys", tags=["api keys"])


def _visible_key(session: Session, p: Principal, key_id: int) -> ApiKey:
    key = api_keys.get(session, key_id)
    if key is None or (not p.is_admin and key.owner_id != p.user.id):
        raise NotFound(f"API key {key_id} not found")
    return key


@router.post("", response_model=ApiKeyCreated, status_code=201)
def create_key(
    body: ApiKeyIn, request: Request, session: SessionDep, p: ManagerPrincipal
) -> ApiKeyCreated:
    """Create a key that acts for you, limited to its scopes and libraries. Librarians must
    name libraries they manage. The key is in the response once; only its hash is kept."""
    scopes = sorted(set(body.scopes))
    if "metrics" in scopes and not p.is_admin:
        raise ZhikuError(
            "only administrators may create keys with the 'metrics' scope",
            code="forbidden",
            status=403,
        )
    if not p.is_admin:
        managed = access.managed_library_ids(session, p)
        if not body.library_ids:
            raise ZhikuError(
                "name the libraries the key is for (library_ids): librarians create keys "
                "for libraries they manage",
                code="libraries_required",
                status=422,
            )
        for library_id in body.library_ids:
            if library_id not in managed:
                access.require_library(session, p, library_id)  # 404 if not even readable
                raise ZhikuError(
                    f"you do not manage library {library_id}", code="forbidden", status=403
                )
    else:
        for library_id in body.library_ids:
            access.require_library(session, p, library_id)
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    key, plaintext = api_keys.create(
        session, p.user, body.name, scopes, sorted(set(body.library_ids)), expires
    )
    audit.record(
        session,
        "api_key.create",
        actor_user_id=p.user.id,
        target_type="api_key",
        target_id=key.id or "",
        client_ip=client_ip(request),
        name=key.name,
        scopes=scopes,
        library_ids=key.library_ids,
        expires_at=expires.isoformat() if expires else None,
    )
    session.commit()
    return ApiKeyCreated(**api_key_out(key).model_dump(), key=plaintext)


@router.get("", response_model=list[ApiKeyOut])
def list_keys(session: SessionDep, p: ManagerPrincipal) -> list[ApiKeyOut]:
    """Every key (admins) or your own (librarians), without the secrets."""
    owner = None if p.is_admin else p.user.id
    return [api_key_out(k) for k in api_keys.list_keys(session, owner)]


@router.get("/{key_id}", response_model=ApiKeyOut)
def get_key(key_id: int, session: SessionDep, p: ManagerPrincipal) -> ApiKeyOut:
    return api_key_out(_visible_key(session, p, key_id))


@router.delete("/{key_id}", status_code=204)
def revoke_key(key_id: int, request: Request, session: SessionDep, p: ManagerPrincipal) -> Response:
    """Revoke a key; requests with it fail from the next one on."""
    key = _visible_key(session, p, key_id)
    if api_keys.revoke(session, key):
        audit.record(
            session,
            "api_key.revoke",
            actor_user_id=p.user.id,
            target_type="api_key",
            target_id=key_id,
            client_ip=client_ip(request),
            name=key.name,
        )
    session.commit()
    return Response(status_code=204)
