"""Insecure direct object references: every route that takes an id, called with the id of a
resource that belongs to another caller or another library.

Each case asserts the exact status; that the answer is the one an id that does not exist gets
(same status, same body but for the id — no existence oracle); and that the resource is exactly
as it was afterwards (nothing was revoked, deleted, re-queued, renamed or answered).

The world is the one of test_permission_matrix (documents queued, not ingested: no case here
needs their text), plus a second librarian who manages library B, a scoped grant in each
library, and an API key of each librarian.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.integration.api_helpers import PASSWORD, V1, auth
from tests.integration.test_permission_matrix import (
    LIB_NAMES,
    MISSING,
    UNANSWERABLE,
    Expect,
    U,
    World,
    app_routes,
    leaks,
    world_fixture,
)

pytestmark = pytest.mark.integration

LIB_B_USER = "lib-bravo"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    for w in world_fixture(request.param, redis_url, tmp_path_factory, ingest=False):
        body = {
            "username": LIB_B_USER,
            "password": PASSWORD,
            "role": "librarian",
            "must_change_password": False,
        }
        w.user_ids["lib_b"] = int(w.ok("POST", f"{V1}/users", json=body, status=201)["id"])
        login = w.client.post(
            f"{V1}/auth/login", json={"username": LIB_B_USER, "password": PASSWORD}
        )
        w.headers["lib_b"] = auth(login.json()["access_token"])
        grant = {"user_id": w.user_ids["lib_b"], "permission": "manage"}
        w.ok("POST", f"{V1}/libraries/{w.libs['B']}/grants", json=grant, status=201)
        body = {"name": "lib-b key", "scopes": ["search"], "library_ids": [w.libs["B"]]}
        w.keys["lib_b"] = int(w.ok("POST", f"{V1}/api-keys", "lib_b", json=body, status=201)["id"])
        w.reads["lib_b"] = frozenset("B")
        for lib, folder in (("A", "hr"), ("B", "board")):
            path = f"{V1}/libraries/{w.libs[lib]}/scoped-grants"
            body = {"folder": folder, "user_id": w.nobody}
            w.extra[f"scoped_{lib}"] = int(w.ok("POST", path, json=body, status=201)["id"])
        w.conversations["lib_b"] = w.fresh_conversation("lib_b")
        yield w


def grant_of(lib: str) -> Callable[[World], int]:
    def target(w: World) -> int:
        grants = w.ok("GET", f"{V1}/libraries/{w.libs[lib]}/grants")
        return int(next(g["id"] for g in grants if g["group_id"] == w.groups[lib]))

    return target


def scoped_of(lib: str) -> Callable[[World], int]:
    return lambda w: w.extra[f"scoped_{lib}"]


def doc_of(key: str) -> Callable[[World], int]:
    return lambda w: w.docs[key]


def conversation_of(who: str) -> Callable[[World], int]:
    return lambda w: w.conversations[who]


def key_of(name: str) -> Callable[[World], int]:
    return lambda w: w.keys[name]


def user_of(who: str) -> Callable[[World], int]:
    return lambda w: w.user_ids[who]


def group_of(lib: str) -> Callable[[World], int]:
    return lambda w: w.groups[lib]


def lib_of(lib: str) -> Callable[[World], int]:
    return lambda w: w.libs[lib]


# What a resource looks like to the admin (or its owner): unchanged by a refused request.
def grants_state(lib: str) -> Callable[[World], Any]:
    return lambda w: w.ok("GET", f"{V1}/libraries/{w.libs[lib]}/grants")


def scoped_state(lib: str) -> Callable[[World], Any]:
    return lambda w: w.ok("GET", f"{V1}/libraries/{w.libs[lib]}/scoped-grants")


def doc_state(key: str) -> Callable[[World], Any]:
    def state(w: World) -> Any:
        doc = w.ok("GET", f"{V1}/documents/{w.docs[key]}")
        return doc["status"], doc["version"], doc["updated_at"]

    return state


def conversation_state(owner: str) -> Callable[[World], Any]:
    def state(w: World) -> Any:
        conv = w.ok("GET", f"{V1}/conversations/{w.conversations[owner]}", owner)
        return conv["updated_at"], len(conv["messages"]), conv["title"]

    return state


def key_state(name: str) -> Callable[[World], Any]:
    return lambda w: w.ok("GET", f"{V1}/api-keys/{w.keys[name]}")["revoked_at"]


def user_state(who: str) -> Callable[[World], Any]:
    def state(w: World) -> Any:
        u = w.ok("GET", f"{V1}/users/{w.user_ids[who]}")
        still_signed_in = w.call("GET", f"{V1}/auth/me", who).status_code
        return u["role"], u["is_active"], u["display_name"], still_signed_in

    return state


def group_state(lib: str) -> Callable[[World], Any]:
    def state(w: World) -> Any:
        g = w.ok("GET", f"{V1}/groups/{w.groups[lib]}")
        return g["name"], g["parent_id"], sorted(g["member_ids"])

    return state


def library_state(lib: str) -> Callable[[World], Any]:
    def state(w: World) -> Any:
        docs = w.ok("GET", f"{V1}/libraries/{w.libs[lib]}/documents")
        grants = [g["id"] for g in grants_state(lib)(w)]
        out = w.ok("GET", f"{V1}/libraries/{w.libs[lib]}")
        settings = out["name"], out["description"], out["allow_download"]
        return docs["total"], grants, [g["id"] for g in scoped_state(lib)(w)], settings

    return state


def key_count(who: str) -> Callable[[World], Any]:
    return lambda w: len(w.ok("GET", f"{V1}/api-keys", who))


@dataclass(frozen=True)
class Case:
    name: str
    who: str
    method: str
    template: str  # `{id}`: the foreign id; `{A}`/`{B}`: the libraries; `{dept_A}`, `{staff_b}`
    target: Callable[[World], int]
    expect: Expect
    state: Callable[[World], Any]
    body: Callable[[World, int], Any] | None = None
    files: bool = False

    def url(self, w: World, ident: int) -> str:
        return self.template.format(
            id=ident,
            A=w.libs["A"],
            B=w.libs["B"],
            dept_A=w.groups["A"],
            staff_b=w.user_ids["staff_b"],
            page=1,
        )


CASES: list[Case] = []

# Grants: another library's grant id under a library's path, and grants of a library one may not
# manage.
for who, path_lib, grant_lib, expect in (
    ("admin", "A", "B", 404),
    ("librarian", "A", "B", 404),
    ("lib_b", "B", "A", 404),
    ("librarian", "B", "B", 404),  # B is not readable to A's librarian at all
    ("lib_b", "A", "A", 404),
    ("staff_a", "A", "A", 403),  # reads A, may not manage it
    ("staff_b", "A", "A", 404),
    ("key_a", "A", "A", U),
):
    CASES.append(
        Case(
            f"grant of {grant_lib} under {path_lib}",
            who,
            "DELETE",
            f"{V1}/libraries/{{{path_lib}}}/grants/{{id}}",
            grant_of(grant_lib),
            expect,
            grants_state(grant_lib),
        )
    )
    CASES.append(
        Case(
            f"scoped grant of {grant_lib} under {path_lib}",
            who,
            "DELETE",
            f"{V1}/libraries/{{{path_lib}}}/scoped-grants/{{id}}",
            scoped_of(grant_lib),
            expect,
            scoped_state(grant_lib),
        )
    )

# A scoped grant naming another library's document.
for who, path_lib, doc_key in (("admin", "A", "B"), ("librarian", "A", "B"), ("lib_b", "B", "A")):
    CASES.append(
        Case(
            f"scoped grant on {path_lib} for a document of the other library",
            who,
            "POST",
            f"{V1}/libraries/{{{path_lib}}}/scoped-grants",
            doc_of(doc_key),
            404,
            scoped_state(path_lib),
            body=lambda w, ident: {"document_id": ident, "user_id": w.nobody},
        )
    )

# Libraries one may not read.
for who, lib in (
    ("staff_a", "B"),
    ("librarian", "B"),
    ("lib_b", "A"),
    ("staff_b", "A"),
    ("key_a", "B"),
    ("act_as_a", "B"),
    ("act_as_b", "A"),
):
    for method, template, body in (
        ("GET", f"{V1}/libraries/{{id}}", None),
        ("GET", f"{V1}/libraries/{{id}}/documents", None),
        ("POST", f"{V1}/search", lambda w, ident: {"query": "x", "library_ids": [ident]}),
        ("POST", f"{V1}/chat", lambda w, ident: {"question": UNANSWERABLE, "library_ids": [ident]}),
    ):
        CASES.append(
            Case(
                f"library {lib}",
                who,
                method,
                template,
                lib_of(lib),
                404,
                library_state(lib),
                body,
            )
        )
    user_session = who not in ("key_a", "act_as_a", "act_as_b")
    for method, template, body in (
        ("GET", f"{V1}/libraries/{{id}}/grants", None),
        (
            "POST",
            f"{V1}/libraries/{{id}}/grants",
            lambda w, _: {"user_id": w.nobody, "permission": "read"},
        ),
        ("GET", f"{V1}/libraries/{{id}}/scoped-grants", None),
        (
            "POST",
            f"{V1}/libraries/{{id}}/scoped-grants",
            lambda w, _: {"folder": "x", "user_id": w.nobody},
        ),
        (
            "PATCH",
            f"{V1}/libraries/{{id}}",
            lambda w, _: {"name": "taken over", "allow_download": False},
        ),
    ):
        CASES.append(
            Case(
                f"library {lib}",
                who,
                method,
                template,
                lib_of(lib),
                404 if user_session else U,
                library_state(lib),
                body,
            )
        )
    CASES.append(
        Case(
            f"upload into library {lib}",
            who,
            "POST",
            f"{V1}/libraries/{{id}}/documents",
            lib_of(lib),
            404 if who in ("staff_a", "librarian", "lib_b", "staff_b") else (403, "missing_scope"),
            library_state(lib),
            files=True,
        )
    )

# Documents of a library one may not read.
for who, key in (
    ("staff_a", "B"),
    ("librarian", "B"),
    ("lib_b", "A"),
    ("staff_b", "A"),
    ("staff_b", "R"),
    ("key_a", "B"),
    ("act_as_a", "B"),
    ("act_as_b", "A"),
):
    is_key = who in ("key_a", "act_as_a", "act_as_b")
    for method, template, expect in (
        ("GET", f"{V1}/documents/{{id}}", 404),
        ("GET", f"{V1}/documents/{{id}}/chunks", 404),
        ("GET", f"{V1}/documents/{{id}}/file", 404),
        ("GET", f"{V1}/documents/{{id}}/pages/{{page}}", 404),
        ("DELETE", f"{V1}/documents/{{id}}", (403, "missing_scope") if is_key else 404),
        ("POST", f"{V1}/documents/{{id}}/reingest", (403, "missing_scope") if is_key else 404),
    ):
        CASES.append(
            Case(f"document {key}", who, method, template, doc_of(key), expect, doc_state(key))
        )

# Conversations of someone else (also: a key never sees what its user asked elsewhere).
CONVERSATION_PAIRS = (
    ("staff_a", "staff_b"),
    ("staff_b", "staff_a"),
    ("admin", "staff_a"),  # admins do not read others' conversations either
    ("librarian", "staff_a"),
    ("key_a", "staff_a"),
    ("key_a", "admin"),  # the key's owner, asked in the web UI
    ("act_as_a", "staff_a"),  # the acted-for user, asked in the web UI
    ("act_as_a", "act_as_b"),  # the same key, acting for someone else
    ("act_as_b", "act_as_a"),
    ("staff_a", "act_as_b"),
    ("lib_b", "librarian"),
)
for who, owner in CONVERSATION_PAIRS:
    for method, template, body in (
        ("GET", f"{V1}/conversations/{{id}}", None),
        ("PATCH", f"{V1}/conversations/{{id}}", lambda w, _: {"title": "taken over"}),
        ("DELETE", f"{V1}/conversations/{{id}}", None),
        (
            "POST",
            f"{V1}/chat",
            lambda w, ident: {"question": UNANSWERABLE, "conversation_id": ident},
        ),
        (
            "POST",
            f"{V1}/chat",
            lambda w, ident: {
                "question": UNANSWERABLE,
                "conversation_id": ident,
                "library_ids": [],
                "stream": True,
            },
        ),
    ):
        CASES.append(
            Case(
                f"conversation of {owner}",
                who,
                method,
                template,
                conversation_of(owner),
                404,
                conversation_state(owner),
                body,
            )
        )


# Feedback on someone else's answer: through their conversation, or an answer of theirs named
# under one's own conversation. The owner has rated it; their verdict stays as it was.
def _answer(w: World, owner: str) -> tuple[int, int]:
    conv = w.conversations[owner]
    messages = w.ok("GET", f"{V1}/conversations/{conv}", owner)["messages"]
    return conv, int(next(m["id"] for m in reversed(messages) if m["role"] == "assistant"))


def _rated(w: World, owner: str) -> tuple[int, int]:
    conv, msg = _answer(w, owner)
    path = f"{V1}/conversations/{conv}/messages/{msg}/feedback"
    w.ok("PUT", path, owner, json={"rating": -1, "comment": f"{owner} says no"})
    return conv, msg


def rated_conversation_of(owner: str) -> Callable[[World], int]:
    return lambda w: _rated(w, owner)[0]


def rated_answer_of(owner: str) -> Callable[[World], int]:
    return lambda w: _rated(w, owner)[1]


def feedback_state(owner: str) -> Callable[[World], Any]:
    def state(w: World) -> Any:
        conv = w.ok("GET", f"{V1}/conversations/{w.conversations[owner]}", owner)
        return conv["updated_at"], [(m["id"], m["feedback"]) for m in conv["messages"]]

    return state


@dataclass(frozen=True)
class MessageCase(Case):
    """A case whose path also names the owner's answer (`{msg}`) or the caller's own
    conversation (`{own}`)."""

    owner: str = ""

    def url(self, w: World, ident: int) -> str:
        own = w.conversations[self.who]
        msg = _answer(w, self.owner)[1] if "{msg}" in self.template else 0
        return self.template.format(id=ident, own=own, msg=msg)


def take_over(w: World, ident: int) -> Any:
    return {"rating": 1, "comment": "taken over"}


FEEDBACK = f"{V1}/conversations/{{conv}}/messages/{{message}}/feedback"
for who, owner in CONVERSATION_PAIRS:
    for method in ("PUT", "DELETE"):
        body = take_over if method == "PUT" else None
        CASES.append(
            MessageCase(
                f"feedback in the conversation of {owner}",
                who,
                method,
                FEEDBACK.format(conv="{id}", message="{msg}"),
                rated_conversation_of(owner),
                404,
                feedback_state(owner),
                body,
                owner=owner,
            )
        )
        CASES.append(
            MessageCase(
                f"feedback on an answer of {owner}",
                who,
                method,
                FEEDBACK.format(conv="{own}", message="{id}"),
                rated_answer_of(owner),
                404,
                feedback_state(owner),
                body,
                owner=owner,
            )
        )

# Deleting a library: administrators only (403, the same for any id); never through a key.
for who, lib, expect in (
    ("librarian", "A", 403),  # manages it: still not theirs to delete
    ("librarian", "B", 403),
    ("lib_b", "B", 403),
    ("staff_a", "A", 403),
    ("staff_b", "A", 403),
    ("key_a", "A", U),
    ("act_as_a", "A", U),
):
    CASES.append(
        Case(
            f"library {lib}",
            who,
            "DELETE",
            f"{V1}/libraries/{{id}}",
            lib_of(lib),
            expect,
            library_state(lib),
        )
    )

# API keys of someone else: librarians see only their own.
for who, name in (("librarian", "key_a"), ("librarian", "lib_b"), ("lib_b", "lib")):
    for method in ("GET", "DELETE"):
        CASES.append(
            Case(
                f"API key {name}",
                who,
                method,
                f"{V1}/api-keys/{{id}}",
                key_of(name),
                404,
                key_state(name),
            )
        )
for who in ("staff_a", "staff_b"):
    for method in ("GET", "DELETE"):
        CASES.append(
            Case(
                "API key key_a",
                who,
                method,
                f"{V1}/api-keys/{{id}}",
                key_of("key_a"),
                403,
                key_state("key_a"),
            )
        )
# A librarian creating a key for a library they do not manage (or cannot even read).
for who, libs in (("librarian", "B"), ("librarian", "AB"), ("lib_b", "A")):
    CASES.append(
        Case(
            f"API key for libraries {libs}",
            who,
            "POST",
            f"{V1}/api-keys",
            lib_of(libs[-1]),
            404,
            key_count(who),
            body=lambda w, ident, libs=libs: {
                "name": "x",
                "library_ids": [*(w.libs[x] for x in libs[:-1]), ident],
            },
        )
    )

# Accounts: only admins change them (403, the same for any id).
for who in ("librarian", "staff_a", "lib_b"):
    for method, template, body in (
        ("PATCH", f"{V1}/users/{{id}}", lambda w, _: {"role": "staff", "is_active": False}),
        ("POST", f"{V1}/users/{{id}}/password", lambda w, _: {"password": "x" * 20}),
        ("POST", f"{V1}/users/{{id}}/unlock", None),
        ("POST", f"{V1}/users/{{id}}/logout", None),
    ):
        CASES.append(
            Case(
                "the admin's account",
                who,
                method,
                template,
                user_of("admin"),
                403,
                user_state("admin"),
                body,
            )
        )
CASES.append(
    Case(
        "account of staff B",
        "staff_a",
        "GET",
        f"{V1}/users/{{id}}",
        user_of("staff_b"),
        403,
        user_state("staff_b"),
    )
)
CASES.append(
    Case(
        "account of staff B",
        "key_a",
        "GET",
        f"{V1}/users/{{id}}",
        user_of("staff_b"),
        U,
        user_state("staff_b"),
    )
)

# Departments: only admins change them, librarians may look (staff may not even look); a member
# of another department is no member here.
for who, expect in (("staff_a", 403), ("staff_b", 403), ("key_a", U), ("act_as_a", U)):
    CASES.append(
        Case("Dept B", who, "GET", f"{V1}/groups/{{id}}", group_of("B"), expect, group_state("B"))
    )
for who in ("librarian", "staff_a", "lib_b"):
    for method, template, body in (
        ("PATCH", f"{V1}/groups/{{id}}", lambda w, _: {"name": "taken over"}),
        ("DELETE", f"{V1}/groups/{{id}}", None),
        ("POST", f"{V1}/groups/{{id}}/members", lambda w, _: {"user_id": w.nobody}),
        ("DELETE", f"{V1}/groups/{{id}}/members/{{staff_b}}", None),
    ):
        CASES.append(
            Case("Dept B", who, method, template, group_of("B"), 403, group_state("B"), body)
        )
CASES.append(
    Case(
        "staff B as a member of Dept A",
        "admin",
        "DELETE",
        f"{V1}/groups/{{dept_A}}/members/{{id}}",
        user_of("staff_b"),
        404,
        group_state("B"),
    )
)

# The OpenAI-compatible facade: a library of someone else is no model.
for who, lib in (("key_a", "B"), ("act_as_a", "B"), ("act_as_b", "A")):
    CASES.append(
        Case(
            f"model {lib}",
            who,
            "POST",
            "/v1/chat/completions",
            lib_of(lib),
            404,
            library_state(lib),
            body=lambda w, ident: {
                "model": next(LIB_NAMES[k] for k, v in w.libs.items() if v == ident)
                if ident != MISSING
                else "no-such-library",
                "messages": [{"role": "user", "content": UNANSWERABLE}],
            },
        )
    )


def _as_if(missing_text: str, ident: int, request_text: str) -> str:
    """The answer for the missing id, with the foreign id (or library name) put back in its
    place: what the answer for the foreign one must be, to the byte."""
    text = missing_text.replace(str(MISSING), str(ident))
    for name in LIB_NAMES.values():
        if name in request_text:
            text = text.replace("no-such-library", name)
    return text


def _send(w: World, case: Case, ident: int) -> tuple[Any, str]:
    body = case.body(w, ident) if case.body else None
    files = [("files", (f"idor-{w.n()}.txt", f"note {w.n()}".encode()))] if case.files else None
    r = w.client.request(
        case.method, case.url(w, ident), headers=w.headers[case.who], json=body, files=files
    )
    return r, repr(body)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.name} as {c.who}" for c in CASES])
def test_foreign_id_is_refused_like_a_missing_one(world: World, case: Case) -> None:
    w = world
    ident = case.target(w)
    before = case.state(w)
    foreign, request_text = _send(w, case, ident)
    assert case.state(w) == before, f"{case.method} {case.name} as {case.who} changed it"
    status, code = case.expect if isinstance(case.expect, tuple) else (case.expect, None)
    code = code or {403: "forbidden", 404: "not_found"}[status]
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (status, code), foreign.text
    missing, _ = _send(w, case, MISSING)
    assert missing.status_code == status, missing.text
    assert foreign.text == _as_if(missing.text, ident, request_text)
    assert not leaks(w, case.who, foreign, request_text)


def test_conversations_belong_to_the_user_and_keys_see_only_their_own(world: World) -> None:
    """A conversation held through an API key belongs to the user the key acts for (who sees it
    in the web UI, like the admin sees what the admin's key asked); a key sees only the
    conversations held through it."""
    w = world
    visible = {
        "admin": {"admin", "key_a"},
        "librarian": {"librarian"},
        "lib_b": {"lib_b"},
        "staff_a": {"staff_a", "act_as_a"},
        "staff_b": {"staff_b", "act_as_b"},
        "key_a": {"key_a"},
        "act_as_a": {"act_as_a"},
        "act_as_b": {"act_as_b"},
    }
    every = set(w.conversations.values())
    for who, own in visible.items():
        listed = {c["id"] for c in w.ok("GET", f"{V1}/conversations", who)}
        assert listed & every == {w.conversations[o] for o in own}, who
        for owner in own:
            r = w.call("GET", f"{V1}/conversations/{w.conversations[owner]}", who)
            assert r.status_code == 200, (who, owner, r.text)


def test_every_route_that_takes_an_id_has_cases(world: World) -> None:
    """A new route with an id in its path needs IDOR cases here."""
    routes = {
        (m, path)
        for m, path in app_routes(world.client.app)  # type: ignore[arg-type]
        if "{" in path and not path.startswith("/static/")  # the UI's files: no ids
    }
    covered: set[tuple[str, str]] = set()
    for case in CASES:
        generic = re.sub(r"\{(A|B)\}", "{library_id}", case.template)
        for method, path in routes:
            pattern = re.sub(r"\{[^}]+\}", "X", path)
            if method == case.method and re.sub(r"\{[^}]+\}", "X", generic) == pattern:
                covered.add((method, path))
    assert routes - covered == set(), sorted(routes - covered)
