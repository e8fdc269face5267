"""Who someone is: identity providers that check a username and password.

`local` checks the argon2 hash stored with the account. A directory (LDAP, OIDC password grant,
a company SSO bridge) plugs in as another provider: a class with a `name` and
`authenticate(username, password) -> ExternalIdentity | None`, published under the Python
entry-point group `zhiku.identity_providers` and listed in `ZHIKU_AUTH_PROVIDERS`
(e.g. `ldap,local`). Providers are tried in that order; the first that recognises the user
decides. An external identity is provisioned as a local account with that `auth_source` (no
password stored) and its department names are synced to groups. See docs/auth.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol

from sqlmodel import Session

from core.errors import ZhikuError
from core.models import User
from core.repo import groups, users
from core.security import verify_password
from core.settings import Settings

ENTRY_POINT_GROUP = "zhiku.identity_providers"


@dataclass(frozen=True)
class ExternalIdentity:
    username: str
    display_name: str = ""
    departments: Sequence[str] = field(default_factory=tuple)


class IdentityProvider(Protocol):
    name: str

    def authenticate(self, username: str, password: str) -> ExternalIdentity | None:
        """The identity when the password is right; None when it is wrong or the user unknown.
        Raise ZhikuError(status=503) when the directory cannot be reached."""
        ...


def _load(name: str) -> IdentityProvider:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            provider: IdentityProvider = ep.load()()
            return provider
    raise ZhikuError(
        f"identity provider {name!r} is not installed; fix ZHIKU_AUTH_PROVIDERS",
        code="bad_configuration",
        status=500,
    )


def sign_in(session: Session, settings: Settings, username: str, password: str) -> User | None:
    """The account `username` signs into with `password`, or None. Timing does not reveal
    whether a local account exists (a dummy hash is checked)."""
    names = [n.strip() for n in settings.auth_providers.split(",") if n.strip()] or ["local"]
    account = users.get_by_username(session, username)
    for name in names:
        if name == "local":
            local = account if account is not None and account.auth_source == "local" else None
            ok = verify_password(local.password_hash if local else None, password)
            if local is not None and ok:
                return local
            continue
        if account is not None and account.auth_source not in (name,):
            continue
        found = _load(name).authenticate(username, password)
        if found is not None:
            return _provision(session, name, found, account)
    return None


def _provision(
    session: Session, source: str, identity: ExternalIdentity, account: User | None
) -> User:
    if account is None:
        account = users.create_user(
            session,
            identity.username,
            None,
            display_name=identity.display_name,
            auth_source=source,
        )
    elif identity.display_name and account.display_name != identity.display_name:
        account.display_name = identity.display_name[:200]
        session.add(account)
    assert account.id is not None
    groups.sync_memberships(session, account.id, identity.departments)
    return account
