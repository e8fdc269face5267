"""Schema-driven fuzzing (schemathesis, stateless): every operation of the OpenAPI schema is
called with generated requests — as the admin, as a staff member and as an API key — against
the real app, database (SQLite and PostgreSQL), Redis, ingestion pipeline and retriever.

Nothing may answer 5xx, except an answer that needed the language model (nothing listens at the
model URL here): 503 with the code `model_unavailable`. Responses must match the schema the app
publishes (`response_schema_conformance`).

Requests that end sign-ins or change the callers' accounts (log out, new password, disable,
demote) are followed by putting the callers back as they were, so later requests still run as
the caller they claim to be. The credentials sent are the caller's only (generated values for
the schema's security schemes — bearer, session cookie, X-Zhiku-User — are dropped).

Ids beyond the database's integer range are checked deterministically by the test at the end
(they answered 500 before the app mapped them to 422). Error bodies are documented as
`{"error": {"code", "message"}}`, so the conformance check covers them too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import checks as st_checks

from api.app import create_app
from core import db
from core.models import Role
from core.repo import users
from tests.integration.api_helpers import V1
from tests.integration.test_permission_matrix import (
    USERNAMES,
    World,
    world_fixture,
)

pytestmark = pytest.mark.integration

# Generated requests per operation, by caller: ~50 operations, a few minutes for all on 2 cores.
EXAMPLES = {"admin": 15, "staff_a": 10, "key_a": 5}
CHECKS = {
    "not_a_server_error": st_checks.not_a_server_error,
    "response_schema_conformance": st_checks.response_schema_conformance,
}
# Operations after which the callers are put back (their sign-ins, passwords, roles, state).
DISTURBING = frozenset(
    {
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/password"),
        ("PATCH", "/api/v1/users/{user_id}"),
        ("POST", "/api/v1/users/{user_id}/password"),
        ("POST", "/api/v1/users/{user_id}/logout"),
    }
)
ROLES = {"admin": Role.admin, "staff_a": Role.staff, "librarian": Role.librarian}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    # Generated sign-ins fail by the hundred: no lockouts in the way of the callers' own.
    for w in world_fixture(
        request.param,
        redis_url,
        tmp_path_factory,
        ingest=True,
        login_max_failures=1_000_000,
        login_ip_max_failures=1_000_000,
    ):
        ORIGINAL_HASHES.clear()
        restore(w)  # notes the passwords as they are
        yield w


def restore(w: World) -> None:
    """The callers as they were — active, same role and password, no forced change — and each
    signed in (again, when a request ended their sign-ins)."""
    with db.session_scope(w.settings) as session:
        for who, role in ROLES.items():
            user = users.get_by_username(session, USERNAMES[who])
            assert user is not None
            key = f"hash:{who}"
            if key not in ORIGINAL_HASHES:
                ORIGINAL_HASHES[key] = user.password_hash
            if (user.is_active, user.role, user.must_change_password) != (True, role.value, False):
                user.is_active, user.role, user.must_change_password = True, role.value, False
            user.password_hash = ORIGINAL_HASHES[key]
            session.add(user)
    for who in ROLES:
        if w.call("GET", f"{V1}/auth/me", who).status_code != 200:
            w.relogin(who)


ORIGINAL_HASHES: dict[str, str] = {}
GENERATED_AUTH_HEADERS = ("authorization", "x-zhiku-user")


@dataclass
class Report:
    calls: int = 0
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # check → op → …
    seconds: float = 0.0

    def failed(self, check: str, op: str, detail: str) -> None:
        found = self.failures.setdefault(check, {}).setdefault(op, [])
        if len(found) < 3:
            found.append(detail)


def model_unavailable(response: Any) -> bool:
    if response.status_code != 503:
        return False
    try:
        return bool(response.json()["error"]["code"] == "model_unavailable")
    except (ValueError, KeyError, TypeError):
        return False


def fuzz(w: World, who: str, examples: int) -> Report:
    # An app of its own on the world's settings: schemathesis runs it (and its lifespan) on an
    # event loop of its own, and the answer engine an app keeps belongs to one loop.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(w.settings, migrate=False))
    report = Report()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        disturbing = (operation.method.upper(), operation.path) in DISTURBING
        check_operation(w, who, operation, disturbing, report, examples)()
    report.seconds = time.monotonic() - started
    return report


def check_operation(
    w: World, who: str, operation: Any, disturbing: bool, report: Report, examples: int
) -> Any:
    """A Hypothesis test of one operation: `examples` generated requests as `who`, each one's
    response checked (and recorded, so that one failure does not hide the others)."""
    label = operation.label

    @given(case=operation.as_strategy())
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # The credentials are the caller's: none of the generated ones of the security schemes.
        for name in [h for h in case.headers if h.lower() in GENERATED_AUTH_HEADERS]:
            del case.headers[name]
        case.cookies = {}
        try:
            response = case.call(headers=w.headers[who])
        except Exception as exc:  # the app raised: a 500 for a client
            report.calls += 1
            detail = f"raised {type(exc).__name__}: {exc}"[:600]
            report.failed("not_a_server_error", label, f"{detail}\n  {case.as_curl_command()}")
            return
        finally:
            if disturbing:
                restore(w)
        report.calls += 1
        counts = report.statuses.setdefault(label, {})
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        if model_unavailable(response):  # the answer needed the model: as designed
            return
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check])
            except Exception as exc:
                detail = f"{exc}".strip()[:600]
                report.failed(name, label, f"{detail}\n  {case.as_curl_command()[:600]}")

    return run


def summary(report: Report, check: str) -> str:
    lines = []
    for op, details in sorted(report.failures.get(check, {}).items()):
        lines.append(f"{op} (statuses {report.statuses.get(op)}):")
        lines += [f"    {d}" for d in details]
    return "\n".join(lines)


@pytest.mark.parametrize("who", list(EXAMPLES))
def test_generated_requests_get_no_server_error_and_match_the_schema(
    world: World, who: str
) -> None:
    report = fuzz(world, who, EXAMPLES[who])
    print(f"\n{world.backend} as {who}: {report.calls} requests in {report.seconds:.1f} s")
    for op, counts in sorted(report.statuses.items()):
        print(f"  {op}: {dict(sorted(counts.items()))}")
    assert report.calls >= EXAMPLES[who] * len(report.statuses) * 0.9
    problems = {check: summary(report, check) for check in CHECKS if summary(report, check)}
    assert not problems, "\n".join(f"{check}:\n{text}" for check, text in problems.items())


BIG_IDS = (2**31, 2**63)  # beyond PostgreSQL's integer, beyond SQLite's INTEGER


def test_ids_out_of_the_database_range_get_a_4xx(world: World) -> None:
    w = world
    lib = w.libs["A"]
    server_errors = []
    for big in BIG_IDS:
        for method, path, kw in (
            ("GET", f"{V1}/users/{big}", {}),
            ("GET", f"{V1}/groups/{big}", {}),
            ("GET", f"{V1}/api-keys/{big}", {}),
            ("GET", f"{V1}/documents/{big}", {}),
            ("GET", f"{V1}/documents/{big}/chunks", {}),
            ("GET", f"{V1}/conversations/{big}", {}),
            ("DELETE", f"{V1}/libraries/{lib}/grants/{big}", {}),
            ("DELETE", f"{V1}/libraries/{lib}/scoped-grants/{big}", {}),
            ("GET", f"{V1}/audit", {"params": {"after_id": big}}),
            ("GET", f"{V1}/audit", {"params": {"actor_user_id": big}}),
            ("POST", f"{V1}/chat", {"json": {"question": "hi", "conversation_id": big}}),
            ("POST", f"{V1}/groups/{w.groups['A']}/members", {"json": {"user_id": big}}),
            ("POST", f"{V1}/groups", {"json": {"name": f"big-{w.n()}", "parent_id": big}}),
            ("PATCH", f"{V1}/users/{big}", {"json": {"display_name": "x"}}),
            (
                "POST",
                f"{V1}/libraries/{lib}/grants",
                {"json": {"user_id": big, "permission": "read"}},
            ),
            (
                "POST",
                f"{V1}/libraries/{lib}/scoped-grants",
                {"json": {"document_id": big, "user_id": w.nobody}},
            ),
        ):
            r = w.call(method, path, **kw)
            if r.status_code >= 500:
                server_errors.append(f"{method} {path} {kw}: {r.status_code}")
            else:
                assert r.status_code in (404, 422), (method, path, r.text)
    assert not server_errors, "\n".join(server_errors)
