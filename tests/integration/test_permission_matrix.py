"""The permission matrix: every route of the app × every kind of caller × permitted and
forbidden resources, through the real app (real database on SQLite and PostgreSQL, real Redis,
real ingestion pipeline and retriever).

The world: libraries A (granted to the department "Dept A") and B (granted to "Dept B"), each
with ready documents whose title, file name and text carry a marker (`SECRET-A-7731`,
`SECRET-B-9920`; A's folder `restricted/` holds two more, marked `SECRET-R-5150` and
`SECRET-Q-4404`, the second nearly a copy of A's first). The callers: an admin, a librarian
with `manage` on A, a staff member of each department, an API key for library A (search +
chat), an `act_as` key for library A acting for either staff member, nobody (no credentials)
and a revoked key.

Each case asserts the exact status (and error code) and that no response body carries a marker,
name, file name or id (library, document, chunk) of a library the caller may not read: what the
caller may not read does not exist for them (DESIGN.md, "Permission first").

The world is built once per database backend (module scope): ingestion and the retriever's
models are too slow to set up per case. Cases that change things work on fresh resources made
for them and undo what they did. `test_every_route_is_in_the_matrix` fails when the app has a
route the matrix does not cover: add a row to `ROWS` for it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Mount

from api.app import create_app
from core import db
from core.models import Role
from core.repo import users
from core.settings import Settings
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.integration.api_helpers import PASSWORD, V1, auth
from tests.pdf_maker import Page, make_pdf
from workers.batch import run_inline

pytestmark = pytest.mark.integration

MARK_A = "SECRET-A-7731"
MARK_B = "SECRET-B-9920"
MARK_R = "SECRET-R-5150"  # documents in library A's folder `restricted/`
MARK_Q = "SECRET-Q-4404"
LIB_NAMES = {"A": "Alpha handbook", "B": "Bravo minutes"}
MARKERS = {"A": (MARK_A, MARK_R, MARK_Q), "B": (MARK_B,)}
DOC_MARKS = {"A": MARK_A, "R": MARK_R, "Q": MARK_Q, "B": MARK_B}
DEAD_MODEL = "http://127.0.0.1:9/v1"  # nothing listens: a model call would fail (503)
ADMIN_NAME, ADMIN_PASSWORD = "root-admin", "correct horse battery"
MISSING = 987_654_321  # an id nothing has
# A question nothing in the world answers: "not found" comes without a model call.
UNANSWERABLE = "What is the melting point of tungsten carbide?"
QUERY = "zebra calibration procedure torque"  # matches every document of the world

DOCS = {
    "A": (
        f"alpha-{MARK_A}.md",
        f"# Alpha guide {MARK_A}\n\nThe zebra calibration procedure for the alpha line uses a "
        f"torque of 42 newton metres. Reference {MARK_A}.\n",
    ),
    "R": (
        f"restricted/payroll-{MARK_R}.md",
        f"# Payroll {MARK_R}\n\nThe zebra calibration procedure bonus is paid in March; the "
        f"torque team gets 7 percent. Reference {MARK_R}.\n",
    ),
    # Nearly a copy of A's document: near-duplicate collapsing must not bring it back.
    "Q": (
        f"restricted/alpha-copy-{MARK_Q}.md",
        f"# Alpha guide copy {MARK_Q}\n\nThe zebra calibration procedure for the alpha line uses "
        f"a torque of 42 newton metres. Reference {MARK_Q}.\n",
    ),
    "B": (
        f"bravo-{MARK_B}.md",
        f"# Bravo minutes {MARK_B}\n\nThe board discussed the zebra calibration procedure and a "
        f"torque limit of 55 newton metres. Reference {MARK_B}.\n",
    ),
}
DOC_LIBRARY = {"A": "A", "R": "A", "Q": "A", "B": "B"}

# Callers, in the column order of ROWS.
PRINCIPALS = (
    "anon",
    "revoked",
    "admin",
    "librarian",
    "staff_a",
    "staff_b",
    "key_a",
    "act_as_a",
    "act_as_b",
)
USERS = ("admin", "librarian", "staff_a", "staff_b")
USERNAMES = {
    "admin": ADMIN_NAME,
    "librarian": "lib-alpha",
    "staff_a": "staff-alpha",
    "staff_b": "staff-bravo",
}
# The libraries each caller may read (the oracle for the leak checks).
READS: dict[str, frozenset[str]] = {
    "anon": frozenset(),
    "revoked": frozenset(),
    "admin": frozenset("AB"),
    "librarian": frozenset("A"),
    "staff_a": frozenset("A"),
    "staff_b": frozenset("B"),
    "key_a": frozenset("A"),
    "act_as_a": frozenset("A"),
    "act_as_b": frozenset(),  # the key's library A ∩ staff B's library B
}


def world_settings(data_dir: Path, database_url: str, redis_url: str, **more: Any) -> Settings:
    """Like the `settings` fixture, plus: no rate limits in the way of hundreds of requests a
    minute, a main model URL where nothing listens, no safety classifier."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        rate_limit_per_minute=1_000_000,
        rate_limit_chat_per_minute=1_000_000,
        main_base_urls=DEAD_MODEL,
        main_model="zhiku-main",
        safety_backend="off",
        **more,
    )


# --- the world -------------------------------------------------------------------------------


@dataclass
class World:
    client: TestClient
    settings: Settings
    backend: str
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)  # "A", "B": the departments
    libs: dict[str, int] = field(default_factory=dict)  # "A", "B"
    docs: dict[str, int] = field(default_factory=dict)  # keys of DOCS: "A", "R", "Q", "B"
    chunks: dict[str, list[int]] = field(default_factory=dict)  # per document key
    keys: dict[str, int] = field(default_factory=dict)  # key ids: key_a, act_as, revoked, lib
    key_secrets: dict[str, str] = field(default_factory=dict)
    conversations: dict[str, int] = field(default_factory=dict)  # per caller, its own
    nobody: int = 0  # a user who is no caller: target of user routes and grants
    extra_libs: set[int] = field(default_factory=set)  # empty ones the admin made in cases
    extra: dict[str, int] = field(default_factory=dict)  # ids other modules add to the world
    reads: dict[str, frozenset[str]] = field(default_factory=lambda: dict(READS))
    # every document id ever made in a library (fresh ones too), for the leak checks
    doc_ids_in: dict[str, set[int]] = field(default_factory=lambda: {"A": set(), "B": set()})
    seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, method: str, path: str, who: str = "admin", **kw: Any) -> Any:
        return self.client.request(method, path, headers=self.headers[who], **kw)

    def ok(self, method: str, path: str, who: str = "admin", status: int = 200, **kw: Any) -> Any:
        r = self.call(method, path, who, **kw)
        assert r.status_code == status, (method, path, who, r.status_code, r.text)
        return r.json() if r.content and status != 204 else None

    def n(self) -> int:
        return next(self.seq)

    # fresh resources, made by the admin (or `who`) for one case
    def fresh_group(self) -> int:
        return int(
            self.ok("POST", f"{V1}/groups", json={"name": f"tmp-{self.n()}"}, status=201)["id"]
        )

    def fresh_grant(self, lib: str) -> int:
        body = {"group_id": self.fresh_group(), "permission": "read"}
        path = f"{V1}/libraries/{self.libs[lib]}/grants"
        return int(self.ok("POST", path, json=body, status=201)["id"])

    def fresh_scoped_grant(self, lib: str) -> int:
        body = {"folder": f"scratch/{self.n()}", "user_id": self.nobody}
        path = f"{V1}/libraries/{self.libs[lib]}/scoped-grants"
        return int(self.ok("POST", path, json=body, status=201)["id"])

    def fresh_doc(self, lib: str) -> int:
        report = self.ok(
            "POST",
            f"{V1}/libraries/{self.libs[lib]}/documents",
            files=[("files", upload_file(lib, self.n()))],
            status=202,
        )
        doc_id = int(report["items"][0]["document_id"])
        self.doc_ids_in[lib].add(doc_id)
        return doc_id

    def drop_doc(self, doc_id: int) -> None:
        r = self.call("DELETE", f"{V1}/documents/{doc_id}")
        assert r.status_code in (204, 404), r.text

    def fresh_key(self, owner: str = "admin", lib: str = "A") -> int:
        body = {"name": f"tmp-{self.n()}", "scopes": ["search"], "library_ids": [self.libs[lib]]}
        return int(self.ok("POST", f"{V1}/api-keys", owner, json=body, status=201)["id"])

    def fresh_conversation(self, who: str) -> int:
        out = self.ok("POST", f"{V1}/chat", who, json={"question": UNANSWERABLE})
        assert out["not_found"] is True, out
        return int(out["conversation_id"])

    def login(self, who: str) -> str:
        body = {"username": USERNAMES[who], "password": self.password(who)}
        r = self.client.post(f"{V1}/auth/login", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def password(self, who: str) -> str:
        return ADMIN_PASSWORD if who == "admin" else PASSWORD

    def relogin(self, who: str) -> None:
        """A fresh sign-in for `who` (after a case ended their others)."""
        self.headers[who] = auth(self.login(who))

    # what `who` may not see
    def forbidden_text(self, who: str) -> list[str]:
        out: list[str] = []
        for lib in sorted(set("AB") - self.reads[who]):
            out += [*MARKERS[lib], LIB_NAMES[lib]]
        return out

    def forbidden_ids(self, who: str) -> dict[str, set[int]]:
        hidden = sorted(set("AB") - self.reads[who])
        docs = {d for lib in hidden for d in self.doc_ids_in[lib]}
        chunk_ids = {
            c for key, lib in DOC_LIBRARY.items() if lib in hidden for c in self.chunks[key]
        }
        return {"library": {self.libs[lib] for lib in hidden}, "document": docs, "chunk": chunk_ids}


def upload_file(lib: str, n: int) -> tuple[str, bytes]:
    marker = MARKERS[lib][0]
    return f"tmp-{marker}-{n}.txt", f"Temporary note {n} about {marker}.\n".encode()


def build_world(client: TestClient, settings: Settings, backend: str, *, ingest: bool) -> World:
    """The libraries, departments, callers, documents and conversations of the module
    docstring. With `ingest`, the documents are ingested (ready, indexed); else queued."""
    w = World(client, settings, backend)
    with db.session_scope(settings) as session:
        users.create_user(session, ADMIN_NAME, ADMIN_PASSWORD, role=Role.admin)
    w.headers["admin"] = auth(w.login("admin"))
    w.user_ids["admin"] = int(w.ok("GET", f"{V1}/auth/me")["id"])
    for who in ("librarian", "staff_a", "staff_b"):
        role = "librarian" if who == "librarian" else "staff"
        body = {
            "username": USERNAMES[who],
            "password": PASSWORD,
            "role": role,
            "must_change_password": False,
        }
        w.user_ids[who] = int(w.ok("POST", f"{V1}/users", json=body, status=201)["id"])
        w.headers[who] = auth(w.login(who))
    body = {"username": "nobody", "password": PASSWORD, "must_change_password": False}
    w.nobody = int(w.ok("POST", f"{V1}/users", json=body, status=201)["id"])
    for lib, member in (("A", "staff_a"), ("B", "staff_b")):
        gid = int(w.ok("POST", f"{V1}/groups", json={"name": f"Dept {lib}"}, status=201)["id"])
        w.groups[lib] = gid
        w.ok("POST", f"{V1}/groups/{gid}/members", json={"user_id": w.user_ids[member]})
        lib_body = {"name": LIB_NAMES[lib], "description": f"library {lib}"}
        w.libs[lib] = int(w.ok("POST", f"{V1}/libraries", json=lib_body, status=201)["id"])
        grant = {"group_id": gid, "permission": "read"}
        w.ok("POST", f"{V1}/libraries/{w.libs[lib]}/grants", json=grant, status=201)
    grant = {"user_id": w.user_ids["librarian"], "permission": "manage"}
    w.ok("POST", f"{V1}/libraries/{w.libs['A']}/grants", json=grant, status=201)

    # Documents, uploaded through the API, then ingested by the real pipeline.
    for lib in ("A", "B"):
        files = [
            ("files", (name, text.encode()))
            for key, (name, text) in DOCS.items()
            if DOC_LIBRARY[key] == lib
        ]
        report = w.ok("POST", f"{V1}/libraries/{w.libs[lib]}/documents", files=files, status=202)
        assert report["queued"] == len(files), report
        for item in report["items"]:
            key = next(k for k, (name, _) in DOCS.items() if name == item["file"])
            w.docs[key] = int(item["document_id"])
            w.doc_ids_in[lib].add(w.docs[key])
        if ingest:
            jobs = [(w.docs[k], 1) for k in DOCS if DOC_LIBRARY[k] == lib]
            run_inline(settings, w.libs[lib], jobs)
    for key in DOCS:
        doc = w.ok("GET", f"{V1}/documents/{w.docs[key]}")
        assert doc["folder"] == ("restricted" if key in "RQ" else ""), doc
        assert doc["status"] == ("ready" if ingest else "queued"), doc
        chunks = w.ok("GET", f"{V1}/documents/{w.docs[key]}/chunks")
        assert bool(chunks) == ingest
        w.chunks[key] = [int(c["id"]) for c in chunks]

    # API keys.
    def key(name: str, scopes: list[str], who: str = "admin") -> tuple[int, str]:
        body = {"name": name, "scopes": scopes, "library_ids": [w.libs["A"]]}
        out = w.ok("POST", f"{V1}/api-keys", who, json=body, status=201)
        return int(out["id"]), str(out["key"])

    for name, scopes, who in (
        ("key_a", ["search", "chat"], "admin"),
        ("act_as", ["search", "chat", "act_as"], "admin"),
        ("revoked", ["search", "chat"], "admin"),
        ("lib", ["search"], "librarian"),
    ):
        w.keys[name], w.key_secrets[name] = key(name, scopes, who)
    w.ok("DELETE", f"{V1}/api-keys/{w.keys['revoked']}", status=204)
    w.headers["anon"] = {}
    w.headers["revoked"] = auth(w.key_secrets["revoked"])
    w.headers["key_a"] = auth(w.key_secrets["key_a"])
    for who, staff in (("act_as_a", "staff_a"), ("act_as_b", "staff_b")):
        w.headers[who] = {**auth(w.key_secrets["act_as"]), "X-Zhiku-User": USERNAMES[staff]}

    # Each caller's own conversation (not-found answers: no model call). Also warms up the
    # retriever and the answer engine.
    for who in PRINCIPALS[2:]:
        w.conversations[who] = w.fresh_conversation(who)
    return w


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    yield from world_fixture(request.param, redis_url, tmp_path_factory, ingest=True)


def world_fixture(
    backend: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    ingest: bool,
    **more_settings: Any,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"world-{backend}")
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'zhiku.db'}"
    else:
        pg_name, url = _create_pg_database()
    try:
        settings = world_settings(tmp / "data", url, redis_url, **more_settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db.migrate(settings)
        app = create_app(settings)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield build_world(client, settings, backend, ingest=ingest)
    finally:
        db.dispose_engines()
        if pg_name is not None:
            _drop_pg_database(pg_name)


# --- checking a response ---------------------------------------------------------------------

LIB_KEYS = frozenset({"library_id", "library_ids", "libraries"})
DOC_KEYS = frozenset({"document_id", "document_ids"})
CHUNK_KEYS = frozenset({"chunk_id", "chunk_ids", "duplicate_chunk_ids"})


def _ints(value: Any) -> set[int]:
    if isinstance(value, bool):
        return set()
    if isinstance(value, int):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int) and not isinstance(v, bool)}
    return set()


def _id_kind(node: dict[str, Any]) -> str | None:
    """What the `id` of a response object names."""
    if "permission" in node and "documents" in node:
        return "library"
    if "sha256" in node and "library_id" in node:
        return "document"
    if "ordinal" in node and "token_count" in node:
        return "chunk"
    return None


def id_leaks(data: Any, forbidden: dict[str, set[int]]) -> list[str]:
    """Forbidden library, document and chunk ids anywhere in a JSON body (by field, so that a
    user or grant id that happens to be equal is not mistaken for one)."""
    found: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(node, dict):
            return
        kind = _id_kind(node)
        for k, v in node.items():
            kinds = [
                name for name, keys in (("library", LIB_KEYS), ("document", DOC_KEYS)) if k in keys
            ]
            if k in CHUNK_KEYS:
                kinds.append("chunk")
            if k == "id" and kind is not None:
                kinds.append(kind)
            for kd in kinds:
                bad = _ints(v) & forbidden[kd]
                if bad:
                    found.append(f"{where}.{k}: {kd} id(s) {sorted(bad)}")
            walk(v, f"{where}.{k}")

    walk(data, "$")
    return found


def leaks(w: World, who: str, response: Any, request_text: str) -> list[str]:
    """What of the libraries `who` may not read is in `response`. Text the request itself
    carried (a library name asked for as an OpenAI model) is an echo, not a leak."""
    text = response.text
    found = [f"text {s!r}" for s in w.forbidden_text(who) if s in text and s not in request_text]
    if response.content and response.headers.get("content-type", "").startswith("application/json"):
        found += id_leaks(response.json(), w.forbidden_ids(who))
    return found


# --- the matrix ------------------------------------------------------------------------------

# An expected outcome: a status, or (status, error code). 401/403/404 without a code expect
# `unauthorized`/`forbidden`/`not_found`.
Expect = int | tuple[int, str]
U: Expect = (403, "user_session_required")  # an API key on a route for signed-in users
M: Expect = (403, "missing_scope")  # an API key without the route's scope
NO_DL: Expect = (403, "downloads_disabled")  # a reader, when the library allows no downloads
NO_PDF: Expect = (404, "not_a_pdf")  # a page image of a document that is no PDF
DEFAULT_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


@dataclass
class Prepared:
    params: dict[str, int | str] = field(default_factory=dict)
    json: Any = None
    files: list[Any] | None = None
    query: dict[str, Any] | None = None
    headers: dict[str, str] | None = None  # instead of the caller's usual ones
    after: list[Callable[[Any], None]] = field(default_factory=list)  # given the response


Prepare = Callable[[World, str], Prepared]


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    variant: str
    expect: tuple[Expect, ...]  # one per PRINCIPALS
    prepare: Prepare

    @property
    def route(self) -> tuple[str, str]:
        return self.method, self.path


def nothing(w: World, who: str) -> Prepared:
    return Prepared()


def web_asset(w: World, who: str) -> Prepared:
    return Prepared(params={"path": "js/main.js"})


def lib(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared({"library_id": w.libs[name] if name != "missing" else MISSING})

    return prepare


def doc(key: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared({"document_id": w.docs[key] if key != "missing" else MISSING})

    return prepare


def fresh_doc(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        doc_id = w.fresh_doc(name)
        return Prepared({"document_id": doc_id}, after=[lambda _: w.drop_doc(doc_id)])

    return prepare


def upload(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        def cleanup(r: Any) -> None:
            if r.status_code == 202:
                for item in r.json()["items"]:
                    w.doc_ids_in[name].add(int(item["document_id"]))
                    w.drop_doc(int(item["document_id"]))

        return Prepared(
            {"library_id": w.libs[name]},
            files=[("files", upload_file(name, w.n()))],
            after=[cleanup],
        )

    return prepare


def grant_to_nobody(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared(
            {"library_id": w.libs[name]}, json={"user_id": w.nobody, "permission": "read"}
        )

    return prepare


def fresh_grant(path_lib: str, grant_lib: str | None = None) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        gid = w.fresh_grant(grant_lib or path_lib)
        return Prepared({"library_id": w.libs[path_lib], "grant_id": gid})

    return prepare


def new_scoped_grant(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        def cleanup(r: Any) -> None:
            if r.status_code == 201:
                path = f"{V1}/libraries/{w.libs[name]}/scoped-grants/{r.json()['id']}"
                w.ok("DELETE", path, status=204)

        body = {"folder": f"scratch/{w.n()}", "user_id": w.nobody}
        return Prepared({"library_id": w.libs[name]}, json=body, after=[cleanup])

    return prepare


def fresh_scoped_grant(path_lib: str, grant_lib: str | None = None) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        gid = w.fresh_scoped_grant(grant_lib or path_lib)

        def cleanup(r: Any) -> None:
            lib_id = w.libs[grant_lib or path_lib]
            w.call("DELETE", f"{V1}/libraries/{lib_id}/scoped-grants/{gid}")

        return Prepared({"library_id": w.libs[path_lib], "grant_id": gid}, after=[cleanup])

    return prepare


def search(*libs: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        body: dict[str, Any] = {"query": QUERY, "top_k": 10}
        if libs:
            body["library_ids"] = [w.libs[x] if x != "missing" else MISSING for x in libs]
        return Prepared(json=body)

    return prepare


def chat(*libs: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        body: dict[str, Any] = {"question": UNANSWERABLE}
        if libs:
            body["library_ids"] = [w.libs[x] if x != "missing" else MISSING for x in libs]
        return Prepared(json=body)

    return prepare


def completion(model: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        name = LIB_NAMES.get(model, model)
        return Prepared(
            json={"model": name, "messages": [{"role": "user", "content": UNANSWERABLE}]}
        )

    return prepare


def own_conversation(w: World, who: str) -> Prepared:
    return Prepared({"conversation_id": w.conversations.get(who, w.conversations["staff_a"])})


def others_conversation(w: World, who: str) -> Prepared:
    other = "staff_a" if who == "staff_b" else "staff_b"
    return Prepared({"conversation_id": w.conversations[other]})


def fresh_own_conversation(w: World, who: str) -> Prepared:
    owner = who if who in w.conversations else "staff_a"
    return Prepared({"conversation_id": w.fresh_conversation(owner)})


def fresh_others_conversation(w: World, who: str) -> Prepared:
    other = "staff_a" if who == "staff_b" else "staff_b"
    return Prepared({"conversation_id": w.fresh_conversation(other)})


def login_body(w: World, who: str) -> Prepared:
    return Prepared(json={"username": "nobody", "password": PASSWORD})


def fresh_sign_in(w: World, who: str) -> Prepared:
    """The caller's own request, with a sign-in of its own when the caller is a user (the
    route ends it)."""
    if who in USERS:
        return Prepared(headers=auth(w.login(who)))
    return Prepared()


def change_password(w: World, who: str) -> Prepared:
    body = {"current_password": w.password("admin"), "new_password": w.password("admin")}
    if who in USERS:
        body = {"current_password": w.password(who), "new_password": w.password(who)}
        # Changing the password ends the caller's other sign-ins: sign in again afterwards.
        return Prepared(json=body, headers=auth(w.login(who)), after=[lambda _: w.relogin(who)])
    return Prepared(json=body)


def new_user(w: World, who: str) -> Prepared:
    body = {"username": f"tmp-user-{w.n()}", "password": PASSWORD, "role": "staff"}
    return Prepared(json=body)


def user(key: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        uid = {"missing": MISSING, "nobody": w.nobody}.get(key) or w.user_ids[key]
        return Prepared({"user_id": uid})

    return prepare


def patch_nobody(w: World, who: str) -> Prepared:
    return Prepared({"user_id": w.nobody}, json={"display_name": f"Nobody {w.n()}"})


def reset_nobody(w: World, who: str) -> Prepared:
    body = {"password": PASSWORD, "must_change_password": False}
    return Prepared({"user_id": w.nobody}, json=body)


def new_group(w: World, who: str) -> Prepared:
    return Prepared(json={"name": f"tmp-group-{w.n()}"})


def group(key: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared({"group_id": w.groups[key] if key != "missing" else MISSING})

    return prepare


def fresh_group(body: Callable[[World], Any] | None = None) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared({"group_id": w.fresh_group()}, json=body(w) if body else None)

    return prepare


def fresh_member(w: World, who: str) -> Prepared:
    gid = w.fresh_group()
    w.ok("POST", f"{V1}/groups/{gid}/members", json={"user_id": w.nobody})
    return Prepared({"group_id": gid, "user_id": w.nobody})


def new_key(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        ids = [w.libs[name]] if name != "none" else []
        body = {"name": f"tmp-key-{w.n()}", "scopes": ["search"], "library_ids": ids}

        def cleanup(r: Any) -> None:
            if r.status_code == 201:
                w.ok("DELETE", f"{V1}/api-keys/{r.json()['id']}", status=204)

        return Prepared(json=body, after=[cleanup])

    return prepare


def key(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared({"key_id": w.keys[name] if name != "missing" else MISSING})

    return prepare


def fresh_key(owner: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared({"key_id": w.fresh_key(owner)})

    return prepare


def new_library(w: World, who: str) -> Prepared:
    def remember(r: Any) -> None:
        if r.status_code == 201:
            w.extra_libs.add(int(r.json()["id"]))

    return Prepared(json={"name": f"tmp-library-{w.n()}"}, after=[remember])


def same_lexicon(w: World, who: str) -> Prepared:
    return Prepared(json={"text": w.ok("GET", f"{V1}/admin/lexicon")["text"]})


def audit_query(w: World, who: str) -> Prepared:
    return Prepared(query={"limit": 5})


def answer_of(w: World, owner: str) -> tuple[int, int]:
    """`owner`'s conversation and its (last) answer, as the owner sees them."""
    conv = w.conversations[owner]
    messages = w.ok("GET", f"{V1}/conversations/{conv}", owner)["messages"]
    return conv, int(next(m["id"] for m in reversed(messages) if m["role"] == "assistant"))


def answer_feedback(mine: bool, given: bool = False) -> Prepare:
    """Feedback on an answer of the caller's own conversation (`mine`) or of someone else's;
    with `given`, the owner has rated it already. Withdrawn afterwards."""

    def prepare(w: World, who: str) -> Prepared:
        if mine:
            owner = who if who in w.conversations else "staff_a"
        else:
            owner = "staff_a" if who == "staff_b" else "staff_b"
        conv, msg = answer_of(w, owner)
        path = f"{V1}/conversations/{conv}/messages/{msg}/feedback"
        if given:
            w.ok("PUT", path, owner, json={"rating": -1, "comment": "given"})
        return Prepared(
            {"conversation_id": conv, "message_id": msg},
            json={"rating": 1, "comment": f"from {who}"},
            after=[lambda _: w.ok("DELETE", path, owner, status=GONE)],
        )

    return prepare


def feedback_of(name: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        return Prepared(query={"library_id": w.libs[name]})

    return prepare


def library_patch(name: str) -> Prepare:
    """A change that leaves the library as it is (downloads stay allowed): who may, not what."""

    def prepare(w: World, who: str) -> Prepared:
        lib_id = w.libs[name] if name != "missing" else MISSING
        return Prepared({"library_id": lib_id}, json={"allow_download": True})

    return prepare


def doomed_library(w: World, who: str) -> Prepared:
    """An empty library of the admin's for a case to delete; gone afterwards in any case."""
    lib_id = int(w.ok("POST", LIBS, json={"name": f"tmp-doomed-{w.n()}"}, status=201)["id"])

    def cleanup(r: Any) -> None:
        assert w.call("DELETE", f"{LIBS}/{lib_id}").status_code in (204, 404)

    return Prepared({"library_id": lib_id}, after=[cleanup])


def downloads_off(key: str) -> Prepare:
    """Document `key` while its library does not allow downloads (allowed again afterwards)."""

    def prepare(w: World, who: str) -> Prepared:
        path = f"{LIBS}/{w.libs[DOC_LIBRARY[key]]}"
        w.ok("PATCH", path, json={"allow_download": False})
        return Prepared(
            {"document_id": w.docs[key]},
            after=[lambda _: w.ok("PATCH", path, json={"allow_download": True})],
        )

    return prepare


def page_of(key: str) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        doc_id = w.docs[key] if key != "missing" else MISSING
        return Prepared({"document_id": doc_id, "page": 1})

    return prepare


def fresh_pdf(name: str) -> Prepare:
    """Page 1 of a one-page PDF made and ingested in library `name` for the case (deleted
    afterwards): page images exist of ready PDFs only."""

    def prepare(w: World, who: str) -> Prepared:
        n, marker = w.n(), MARKERS[name][0]
        pdf = make_pdf([Page(lines=[f"Temporary page {n} about {marker}."])])
        report = w.ok(
            "POST",
            f"{LIBS}/{w.libs[name]}/documents",
            files=[("files", (f"tmp-{marker}-{n}.pdf", pdf))],
            status=202,
        )
        doc_id = int(report["items"][0]["document_id"])
        w.doc_ids_in[name].add(doc_id)
        run_inline(w.settings, w.libs[name], [(doc_id, 1)])
        return Prepared({"document_id": doc_id, "page": 1}, after=[lambda _: w.drop_doc(doc_id)])

    return prepare


def retitled(conversation: Prepare) -> Prepare:
    def prepare(w: World, who: str) -> Prepared:
        prepared = conversation(w, who)
        prepared.json = {"title": f"Renamed {w.n()}"}
        return prepared

    return prepare


D = 401  # no valid credentials
OK, CREATED, ACCEPTED, GONE = 200, 201, 202, 204
LIBS, LIB = f"{V1}/libraries", f"{V1}/libraries/{{library_id}}"
USR, GRP, KEYS = f"{V1}/users", f"{V1}/groups", f"{V1}/api-keys"


def row(method: str, path: str, variant: str, prepare: Prepare, *expect: Expect) -> Row:
    assert len(expect) == len(PRINCIPALS), (method, path, variant)
    return Row(method, path, variant, tuple(expect), prepare)


# fmt: off
ROWS: list[Row] = [
    #  method  path                                   variant     prepare
    #      anon  revoked  admin  librarian  staff_a  staff_b  key_a  act_as_a  act_as_b
    # --- public
    row("GET", "/healthz", "-", nothing,
        OK, OK, OK, OK, OK, OK, OK, OK, OK),
    # the world has no worker and a dead model URL: not ready, whoever asks (only admins see
    # the checks; a revoked key is treated as no credentials, never 401)
    row("GET", "/readyz", "-", nothing,
        503, 503, 503, 503, 503, 503, 503, 503, 503),
    # Prometheus: admins, or keys with the `metrics` scope owned by an admin
    row("GET", "/metrics", "-", nothing,
        D, D, OK, 403, 403, 403, M, M, M),
    row("GET", "/openapi.json", "-", nothing,
        OK, OK, OK, OK, OK, OK, OK, OK, OK),
    # the web UI's page and scripts hold no data: everything comes through the API
    row("GET", "/", "-", nothing,
        OK, OK, OK, OK, OK, OK, OK, OK, OK),
    row("GET", "/static/{path}", "-", web_asset,
        OK, OK, OK, OK, OK, OK, OK, OK, OK),
    row("POST", f"{V1}/auth/login", "someone else", login_body,
        OK, OK, OK, OK, OK, OK, OK, OK, OK),
    row("POST", f"{V1}/auth/session", "someone else", login_body,
        OK, OK, OK, OK, OK, OK, OK, OK, OK),
    # --- your own sign-in
    row("POST", f"{V1}/auth/logout", "own", fresh_sign_in,
        D, D, GONE, GONE, GONE, GONE, U, U, U),
    row("GET", f"{V1}/auth/me", "own", nothing,
        D, D, OK, OK, OK, OK, U, U, U),
    row("POST", f"{V1}/auth/password", "own", change_password,
        D, D, GONE, GONE, GONE, GONE, U, U, U),
    # --- accounts: admins manage, librarians list
    row("POST", USR, "new", new_user,
        D, D, CREATED, 403, 403, 403, U, U, U),
    row("GET", USR, "-", nothing,
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{USR}/{{user_id}}", "staff_b", user("staff_b"),
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{USR}/{{user_id}}", "missing", user("missing"),
        D, D, 404, 404, 403, 403, U, U, U),
    row("PATCH", f"{USR}/{{user_id}}", "nobody", patch_nobody,
        D, D, OK, 403, 403, 403, U, U, U),
    row("POST", f"{USR}/{{user_id}}/password", "nobody", reset_nobody,
        D, D, GONE, 403, 403, 403, U, U, U),
    row("POST", f"{USR}/{{user_id}}/unlock", "nobody", user("nobody"),
        D, D, GONE, 403, 403, 403, U, U, U),
    row("POST", f"{USR}/{{user_id}}/logout", "nobody", user("nobody"),
        D, D, GONE, 403, 403, 403, U, U, U),
    # --- departments
    row("POST", GRP, "new", new_group,
        D, D, CREATED, 403, 403, 403, U, U, U),
    row("GET", GRP, "-", nothing,
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{GRP}/{{group_id}}", "Dept B", group("B"),
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{GRP}/{{group_id}}", "missing", group("missing"),
        D, D, 404, 404, 403, 403, U, U, U),
    row("PATCH", f"{GRP}/{{group_id}}", "fresh",
        fresh_group(lambda w: {"name": f"renamed-{w.n()}"}),
        D, D, OK, 403, 403, 403, U, U, U),
    row("DELETE", f"{GRP}/{{group_id}}", "fresh", fresh_group(),
        D, D, GONE, 403, 403, 403, U, U, U),
    row("POST", f"{GRP}/{{group_id}}/members", "fresh",
        fresh_group(lambda w: {"user_id": w.nobody}),
        D, D, OK, 403, 403, 403, U, U, U),
    row("DELETE", f"{GRP}/{{group_id}}/members/{{user_id}}", "fresh", fresh_member,
        D, D, GONE, 403, 403, 403, U, U, U),
    # --- API keys: admins manage all, librarians their own for libraries they manage
    row("POST", KEYS, "library A", new_key("A"),
        D, D, CREATED, CREATED, 403, 403, U, U, U),
    row("POST", KEYS, "library B", new_key("B"),
        D, D, CREATED, 404, 403, 403, U, U, U),
    row("POST", KEYS, "no library", new_key("none"),
        D, D, CREATED, (422, "libraries_required"), 403, 403, U, U, U),
    row("GET", KEYS, "-", nothing,
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{KEYS}/{{key_id}}", "admin's", key("key_a"),
        D, D, OK, 404, 403, 403, U, U, U),
    row("GET", f"{KEYS}/{{key_id}}", "librarian's", key("lib"),
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{KEYS}/{{key_id}}", "missing", key("missing"),
        D, D, 404, 404, 403, 403, U, U, U),
    row("DELETE", f"{KEYS}/{{key_id}}", "admin's", fresh_key("admin"),
        D, D, GONE, 404, 403, 403, U, U, U),
    row("DELETE", f"{KEYS}/{{key_id}}", "librarian's", fresh_key("librarian"),
        D, D, GONE, GONE, 403, 403, U, U, U),
    # --- libraries
    row("POST", LIBS, "new", new_library,
        D, D, CREATED, 403, 403, 403, U, U, U),
    row("GET", LIBS, "-", nothing,
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("GET", LIB, "A", lib("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("GET", LIB, "B", lib("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", LIB, "missing", lib("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("PATCH", LIB, "A", library_patch("A"),
        D, D, OK, OK, 403, 404, U, U, U),
    row("PATCH", LIB, "B", library_patch("B"),
        D, D, OK, 404, 404, 403, U, U, U),
    row("PATCH", LIB, "missing", library_patch("missing"),
        D, D, 404, 404, 404, 404, U, U, U),
    row("DELETE", LIB, "fresh", doomed_library,
        D, D, GONE, 403, 403, 403, U, U, U),
    row("DELETE", LIB, "missing", lib("missing"),
        D, D, 404, 403, 403, 403, U, U, U),
    row("POST", f"{LIB}/grants", "A", grant_to_nobody("A"),
        D, D, CREATED, CREATED, 403, 404, U, U, U),
    row("POST", f"{LIB}/grants", "B", grant_to_nobody("B"),
        D, D, CREATED, 404, 404, 403, U, U, U),
    row("GET", f"{LIB}/grants", "A", lib("A"),
        D, D, OK, OK, 403, 404, U, U, U),
    row("GET", f"{LIB}/grants", "B", lib("B"),
        D, D, OK, 404, 404, 403, U, U, U),
    row("DELETE", f"{LIB}/grants/{{grant_id}}", "A", fresh_grant("A"),
        D, D, GONE, GONE, 403, 404, U, U, U),
    row("DELETE", f"{LIB}/grants/{{grant_id}}", "B", fresh_grant("B"),
        D, D, GONE, 404, 404, 403, U, U, U),
    row("POST", f"{LIB}/scoped-grants", "A", new_scoped_grant("A"),
        D, D, CREATED, CREATED, 403, 404, U, U, U),
    row("POST", f"{LIB}/scoped-grants", "B", new_scoped_grant("B"),
        D, D, CREATED, 404, 404, 403, U, U, U),
    row("GET", f"{LIB}/scoped-grants", "A", lib("A"),
        D, D, OK, OK, 403, 404, U, U, U),
    row("GET", f"{LIB}/scoped-grants", "B", lib("B"),
        D, D, OK, 404, 404, 403, U, U, U),
    row("DELETE", f"{LIB}/scoped-grants/{{grant_id}}", "A", fresh_scoped_grant("A"),
        D, D, GONE, GONE, 403, 404, U, U, U),
    row("DELETE", f"{LIB}/scoped-grants/{{grant_id}}", "B", fresh_scoped_grant("B"),
        D, D, GONE, 404, 404, 403, U, U, U),
    # --- documents
    row("POST", f"{LIB}/documents", "A", upload("A"),
        D, D, ACCEPTED, ACCEPTED, 403, 404, M, M, M),
    row("POST", f"{LIB}/documents", "B", upload("B"),
        D, D, ACCEPTED, 404, 404, 403, M, M, M),
    row("GET", f"{LIB}/documents", "A", lib("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("GET", f"{LIB}/documents", "B", lib("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", f"{LIB}/documents", "missing", lib("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}", "A", doc("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("GET", f"{V1}/documents/{{document_id}}", "B", doc("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}", "missing", doc("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}/chunks", "A", doc("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("GET", f"{V1}/documents/{{document_id}}/chunks", "B", doc("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}/chunks", "missing", doc("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}/file", "A", doc("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("GET", f"{V1}/documents/{{document_id}}/file", "A, downloads off", downloads_off("A"),
        D, D, OK, OK, NO_DL, 404, NO_DL, NO_DL, 404),
    row("GET", f"{V1}/documents/{{document_id}}/file", "B", doc("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}/file", "missing", doc("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}/pages/{{page}}", "A, a PDF", fresh_pdf("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("GET", f"{V1}/documents/{{document_id}}/pages/{{page}}", "B, a PDF", fresh_pdf("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", f"{V1}/documents/{{document_id}}/pages/{{page}}", "A, no PDF", page_of("A"),
        D, D, NO_PDF, NO_PDF, NO_PDF, 404, NO_PDF, NO_PDF, 404),
    row("GET", f"{V1}/documents/{{document_id}}/pages/{{page}}", "missing", page_of("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("DELETE", f"{V1}/documents/{{document_id}}", "A", fresh_doc("A"),
        D, D, GONE, GONE, 403, 404, M, M, M),
    row("DELETE", f"{V1}/documents/{{document_id}}", "B", fresh_doc("B"),
        D, D, GONE, 404, 404, 403, M, M, M),
    row("POST", f"{V1}/documents/{{document_id}}/reingest", "A", fresh_doc("A"),
        D, D, ACCEPTED, ACCEPTED, 403, 404, M, M, M),
    row("POST", f"{V1}/documents/{{document_id}}/reingest", "B", fresh_doc("B"),
        D, D, ACCEPTED, 404, 404, 403, M, M, M),
    # --- search and chat
    row("POST", f"{V1}/search", "all readable", search(),
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("POST", f"{V1}/search", "A", search("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("POST", f"{V1}/search", "B", search("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("POST", f"{V1}/search", "A and B", search("A", "B"),
        D, D, OK, 404, 404, 404, 404, 404, 404),
    row("POST", f"{V1}/search", "missing", search("missing"),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("POST", f"{V1}/chat", "all readable", chat(),
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("POST", f"{V1}/chat", "A", chat("A"),
        D, D, OK, OK, OK, 404, OK, OK, 404),
    row("POST", f"{V1}/chat", "B", chat("B"),
        D, D, OK, 404, 404, OK, 404, 404, 404),
    row("GET", f"{V1}/conversations", "own", nothing,
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("GET", f"{V1}/conversations/{{conversation_id}}", "own", own_conversation,
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("GET", f"{V1}/conversations/{{conversation_id}}", "someone else's", others_conversation,
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("DELETE", f"{V1}/conversations/{{conversation_id}}", "own", fresh_own_conversation,
        D, D, GONE, GONE, GONE, GONE, GONE, GONE, GONE),
    row("DELETE", f"{V1}/conversations/{{conversation_id}}", "someone else's",
        fresh_others_conversation,
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("PATCH", f"{V1}/conversations/{{conversation_id}}", "own", retitled(own_conversation),
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("PATCH", f"{V1}/conversations/{{conversation_id}}", "someone else's",
        retitled(others_conversation),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    # --- administration
    row("GET", f"{V1}/admin/lexicon", "-", nothing,
        D, D, OK, 403, 403, 403, U, U, U),
    row("PUT", f"{V1}/admin/lexicon", "unchanged", same_lexicon,
        D, D, OK, 403, 403, 403, U, U, U),
    row("GET", f"{V1}/audit", "-", audit_query,
        D, D, OK, 403, 403, 403, U, U, U),
    row("GET", f"{V1}/audit/export", "-", nothing,
        D, D, OK, 403, 403, 403, U, U, U),
    row("GET", f"{V1}/system/status", "-", nothing,
        D, D, OK, 403, 403, 403, U, U, U),
    # --- feedback on answers: the conversation's owner rates; admins and librarians review
    row("PUT", f"{V1}/conversations/{{conversation_id}}/messages/{{message_id}}/feedback",
        "own", answer_feedback(mine=True),
        D, D, OK, OK, OK, OK, OK, OK, OK),
    row("PUT", f"{V1}/conversations/{{conversation_id}}/messages/{{message_id}}/feedback",
        "someone else's", answer_feedback(mine=False, given=True),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("DELETE", f"{V1}/conversations/{{conversation_id}}/messages/{{message_id}}/feedback",
        "own", answer_feedback(mine=True, given=True),
        D, D, GONE, GONE, GONE, GONE, GONE, GONE, GONE),
    row("DELETE", f"{V1}/conversations/{{conversation_id}}/messages/{{message_id}}/feedback",
        "someone else's", answer_feedback(mine=False, given=True),
        D, D, 404, 404, 404, 404, 404, 404, 404),
    row("GET", f"{V1}/feedback", "-", nothing,
        D, D, OK, OK, 403, 403, U, U, U),
    row("GET", f"{V1}/feedback", "library B", feedback_of("B"),
        D, D, OK, 404, 403, 403, U, U, U),
    # --- OpenAI-compatible facade: API keys only
    row("GET", "/v1/models", "-", nothing,
        D, D, D, D, D, D, OK, OK, OK),
    row("POST", "/v1/chat/completions", "all readable", completion("zhiku"),
        D, D, D, D, D, D, OK, OK, OK),
    row("POST", "/v1/chat/completions", "A", completion("A"),
        D, D, D, D, D, D, OK, OK, 404),
    row("POST", "/v1/chat/completions", "B", completion("B"),
        D, D, D, D, D, D, 404, 404, 404),
]
# fmt: on

CASES = [
    pytest.param(r, who, expect, id=f"{r.method} {r.path} [{r.variant}] as {who}")
    for r in ROWS
    for who, expect in zip(PRINCIPALS, r.expect, strict=True)
]


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of the app, including routers included into it (HEAD
    answers like GET and is left out)."""
    out: set[tuple[str, str]] = set()

    def add(path: str, methods: set[str] | None) -> None:
        for m in methods or {"*"}:
            if m != "HEAD":
                out.add((m, path))

    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # FastAPI ≥ 0.16x keeps included routers as one entry
            for ctx in contexts():
                add(ctx.path, ctx.methods)
        elif isinstance(route, Mount):  # static files: any path below it
            add(f"{route.path}/{{path}}", {"GET"})
        else:
            add(getattr(route, "path", repr(route)), getattr(route, "methods", None))
    return out


def run_case(w: World, r: Row, who: str, expect: Expect) -> None:
    status, code = expect if isinstance(expect, tuple) else (expect, DEFAULT_CODES.get(expect))
    prepared = r.prepare(w, who)
    url = r.path.format(**prepared.params)
    headers = prepared.headers if prepared.headers is not None else w.headers[who]
    try:
        response = w.client.request(
            r.method,
            url,
            headers=headers,
            json=prepared.json,
            files=prepared.files,
            params=prepared.query,
        )
    finally:
        w.client.cookies.clear()  # /auth/session sets a cookie: never let it sign in others
    try:
        for after in prepared.after:
            after(response)
    finally:
        w.client.cookies.clear()
    got = response.status_code
    assert got == status, f"{r.method} {url} as {who}: {got}, expected {status}: {response.text}"
    if code is not None:
        assert response.json()["error"]["code"] == code, response.text
    request_text = json.dumps(prepared.json, ensure_ascii=False) if prepared.json else ""
    found = leaks(w, who, response, request_text)
    assert not found, f"{r.method} {url} as {who} shows what it may not read: {found}"


@pytest.mark.parametrize(("r", "who", "expect"), CASES)
def test_matrix(world: World, r: Row, who: str, expect: Expect) -> None:
    run_case(world, r, who, expect)


def test_every_route_is_in_the_matrix(world: World) -> None:
    """A route the matrix does not cover fails here: add rows for it (every caller, permitted
    and forbidden resources). A row for a route that is gone fails too."""
    routes = app_routes(world.client.app)  # type: ignore[arg-type]
    covered = {r.route for r in ROWS}
    assert routes - covered == set(), f"routes without rows in ROWS: {sorted(routes - covered)}"
    gone = covered - routes
    assert gone == set(), f"rows for routes the app no longer has: {sorted(gone)}"
    spec = world.ok("GET", "/openapi.json")
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert documented <= covered, sorted(documented - covered)


# --- what the lists and searches hold --------------------------------------------------------

CALLERS = PRINCIPALS[2:]  # those with valid credentials


def search_as(w: World, who: str, **body: Any) -> dict[str, Any]:
    out: dict[str, Any] = w.ok(
        "POST", f"{V1}/search", who, json={"query": QUERY, "top_k": 10, **body}
    )
    return out


def passage_doc_ids(result: dict[str, Any]) -> set[int]:
    return {int(p["document_id"]) for p in result["results"]}


def passage_chunk_ids(result: dict[str, Any]) -> set[int]:
    return {
        int(c)
        for p in result["results"]
        for c in [p["chunk_id"], *p["chunk_ids"], *p["duplicate_chunk_ids"]]
    }


def test_leak_check_is_not_blind(world: World) -> None:
    """The admin's answers, judged as if staff A had received them, show library B: the checks
    the matrix relies on do see a leak when there is one."""
    w = world
    r = w.call("POST", f"{V1}/search", json={"query": QUERY, "top_k": 10})
    found = leaks(w, "staff_a", r, "")
    assert any(MARK_B in f for f in found) and any("document id" in f for f in found), found
    assert any("chunk id" in f for f in found), found
    r = w.call("GET", f"{V1}/libraries")
    assert any("library id" in f for f in leaks(w, "staff_a", r, "")), r.text


def test_library_list_holds_exactly_the_readable_libraries(world: World) -> None:
    w = world
    expected_perm = {
        "admin": {"A": "manage", "B": "manage"},
        "librarian": {"A": "manage"},
        "staff_a": {"A": "read"},
        "staff_b": {"B": "read"},
        "key_a": {"A": "read"},
        "act_as_a": {"A": "read"},
        "act_as_b": {},
    }
    admin_counts = {x["id"]: x["documents"] for x in w.ok("GET", f"{V1}/libraries")}
    for who in CALLERS:
        listed = w.ok("GET", f"{V1}/libraries", who)
        by_id = {x["id"]: x for x in listed}
        want = {w.libs[name]: perm for name, perm in expected_perm[who].items()}
        if who == "admin":
            want.update(dict.fromkeys(w.extra_libs, "manage"))
        assert {i: x["permission"] for i, x in by_id.items()} == want, (who, listed)
        for lib_id, entry in by_id.items():
            # Nothing is restricted now: a reader counts what the admin counts.
            live = {k: v for k, v in admin_counts[lib_id].items() if k != "deleted"}
            assert {k: v for k, v in entry["documents"].items() if k != "deleted"} == live
            assert w.ok("GET", f"{V1}/libraries/{lib_id}", who) == entry
    assert admin_counts[w.libs["A"]]["ready"] == 3 and admin_counts[w.libs["B"]]["ready"] == 1


def test_search_without_library_ids_finds_only_permitted_passages(world: World) -> None:
    w = world
    every = search_as(w, "admin")
    assert passage_doc_ids(every) >= {w.docs["A"], w.docs["B"]}, every
    for who in CALLERS:
        result = search_as(w, who)
        readable = sorted(
            {w.libs[x] for x in READS[who]} | (w.extra_libs if who == "admin" else set())
        )
        assert result["library_ids"] == readable, (who, result["library_ids"])
        assert {p["library_id"] for p in result["results"]} <= set(readable), who
        if READS[who]:
            assert result["results"], f"{who} finds nothing"
            own = {w.docs[k] for k, lib in DOC_LIBRARY.items() if lib in READS[who]}
            assert passage_doc_ids(result) <= own
        else:
            assert result["results"] == []
        # Asking for a forbidden library looks exactly like asking for a missing one.
        for name in sorted(set("AB") - READS[who]):
            denied = w.call(
                "POST", f"{V1}/search", who, json={"query": QUERY, "library_ids": [w.libs[name]]}
            )
            missing = w.call(
                "POST", f"{V1}/search", who, json={"query": QUERY, "library_ids": [MISSING]}
            )
            assert denied.status_code == missing.status_code == 404
            assert denied.json()["error"]["message"].replace(str(w.libs[name]), "ID") == (
                missing.json()["error"]["message"].replace(str(MISSING), "ID")
            )


def assert_not_found_like_missing(w: World, who: str, path: str, hidden_id: int) -> None:
    """`path` (with `{}` for the id) answers for `hidden_id` exactly what it answers for an id
    that does not exist."""
    hidden = w.call("GET", path.format(hidden_id), who)
    missing = w.call("GET", path.format(MISSING), who)
    assert hidden.status_code == missing.status_code == 404, (who, path, hidden.text)
    assert hidden.text.replace(str(hidden_id), "ID") == missing.text.replace(str(MISSING), "ID")


def assert_hidden(w: World, who: str, keys: set[str]) -> None:
    """`who` reads library A but not the documents `keys` of it: not in search, the document
    list, the counts, nor by id."""
    lib_a = w.libs["A"]
    ids = {w.docs[k] for k in keys}
    chunk_ids = {c for k in keys for c in w.chunks[k]}
    marks = [DOC_MARKS[k] for k in keys]
    texts: list[str] = []
    for body in ({}, {"library_ids": [lib_a]}):
        r = w.call("POST", f"{V1}/search", who, json={"query": QUERY, "top_k": 10, **body})
        assert r.status_code == 200, r.text
        assert r.json()["results"], "the rest of library A is still found"
        assert not passage_doc_ids(r.json()) & ids, (who, r.json())
        assert not passage_chunk_ids(r.json()) & chunk_ids, (who, r.json())
        texts.append(r.text)
    listed = w.call("GET", f"{V1}/libraries/{lib_a}/documents", who)
    assert listed.status_code == 200
    assert not {d["id"] for d in listed.json()["items"]} & ids
    assert listed.json()["total"] == len(listed.json()["items"])
    texts.append(listed.text)
    admin_counts = w.ok("GET", f"{V1}/libraries/{lib_a}")["documents"]
    for r in (w.call("GET", f"{V1}/libraries/{lib_a}", who), w.call("GET", f"{V1}/libraries", who)):
        assert r.status_code == 200
        entry = (
            r.json()
            if isinstance(r.json(), dict)
            else next(x for x in r.json() if x["id"] == lib_a)
        )
        assert entry["documents"].get("ready", 0) == admin_counts["ready"] - len(keys), entry
        texts.append(r.text)
    for k in keys:
        assert_not_found_like_missing(w, who, f"{V1}/documents/{{}}", w.docs[k])
        assert_not_found_like_missing(w, who, f"{V1}/documents/{{}}/chunks", w.docs[k])
    for text in texts:
        assert not [m for m in marks if m in text], (who, text)


def assert_visible(w: World, who: str, keys: set[str]) -> None:
    ids = {w.docs[k] for k in keys}
    for body in ({}, {"library_ids": [w.libs["A"]]}):
        found = passage_doc_ids(search_as(w, who, **body))
        assert ids <= found, (who, found)
    listed = w.ok("GET", f"{V1}/libraries/{w.libs['A']}/documents", who)
    assert ids <= {d["id"] for d in listed["items"]}
    for doc_id in ids:
        assert w.ok("GET", f"{V1}/documents/{doc_id}", who)["id"] == doc_id
        assert w.ok("GET", f"{V1}/documents/{doc_id}/chunks", who)


@pytest.mark.parametrize("scope", ["folder", "document"])
def test_scoped_grant_hides_a_part_of_a_library_until_revoked(world: World, scope: str) -> None:
    """Restricting A's folder `restricted/` (or one document of it) to the librarian hides it
    from staff A — also through the act_as key — while the librarian, the admin and the
    admin's key still read it; revoking the restriction shows it again at the next request."""
    w = world
    keys = {"R", "Q"} if scope == "folder" else {"R"}
    body: dict[str, Any] = {"user_id": w.user_ids["librarian"]}
    body.update({"folder": "restricted"} if scope == "folder" else {"document_id": w.docs["R"]})
    path = f"{V1}/libraries/{w.libs['A']}/scoped-grants"
    for who in ("staff_a", "act_as_a"):
        assert_visible(w, who, keys)
    grant = w.ok("POST", path, json=body, status=201)
    revoked = False
    try:
        for who in ("staff_a", "act_as_a"):
            assert_hidden(w, who, keys)
        for who in ("admin", "librarian", "key_a"):
            assert_visible(w, who, keys)
        if scope == "document":
            assert_visible(w, "staff_a", {"Q"})  # the rest of the folder stays open
        w.ok("DELETE", f"{path}/{grant['id']}", status=204)
        revoked = True
        for who in ("staff_a", "act_as_a"):
            assert_visible(w, who, keys)
    finally:
        if not revoked:
            w.call("DELETE", f"{path}/{grant['id']}")


def test_a_restricted_document_stays_hidden_once_deleted(world: World) -> None:
    """A document of a restricted folder that is later deleted must not become visible (its
    file name, title, count) to the readers it was hidden from."""
    w = world
    lib_a = w.libs["A"]
    path = f"{V1}/libraries/{lib_a}/scoped-grants"
    grant = w.ok(
        "POST", path, json={"folder": "restricted", "user_id": w.user_ids["librarian"]}, status=201
    )
    public = [w.fresh_doc("A") for _ in range(3)]  # more open documents than restricted ones
    name = f"restricted/gone-{MARK_R}-{w.n()}.txt"
    report = w.ok(
        "POST",
        f"{V1}/libraries/{lib_a}/documents",
        files=[("files", (name, f"Board pay notes {MARK_R} {w.n()}".encode()))],
        status=202,
    )
    gone = int(report["items"][0]["document_id"])
    w.doc_ids_in["A"].add(gone)
    problems: list[str] = []
    try:
        staff_before = w.ok("GET", f"{V1}/libraries/{lib_a}", "staff_a")["documents"]
        admin_before = w.ok("GET", f"{V1}/libraries/{lib_a}")["documents"]
        w.drop_doc(gone)
        staff_after = w.ok("GET", f"{V1}/libraries/{lib_a}", "staff_a")["documents"]
        admin_after = w.ok("GET", f"{V1}/libraries/{lib_a}")["documents"]
        assert admin_after.get("deleted", 0) == admin_before.get("deleted", 0) + 1
        if staff_after.get("deleted", 0) != staff_before.get("deleted", 0):
            problems.append(f"staff A's count of deleted documents went up: {staff_after}")
        listed = w.call(
            "GET", f"{V1}/libraries/{lib_a}/documents", "staff_a", params={"status": "deleted"}
        )
        assert listed.status_code == 200
        shown = [d for d in listed.json()["items"] if d["id"] == gone]
        if shown or MARK_R in listed.text:
            problems.append(f"?status=deleted lists the restricted document: {shown}")
    finally:
        w.call("DELETE", f"{path}/{grant['id']}")
        for doc_id in public:
            w.drop_doc(doc_id)
    assert not problems, problems


def test_revoking_a_library_grant_takes_effect_at_the_next_request(world: World) -> None:
    w = world
    lib_a, dept_a = w.libs["A"], w.groups["A"]
    grants = w.ok("GET", f"{V1}/libraries/{lib_a}/grants")
    dept_grant = next(g for g in grants if g["group_id"] == dept_a)
    assert w.call("GET", f"{V1}/libraries/{lib_a}", "staff_a").status_code == 200
    w.ok("DELETE", f"{V1}/libraries/{lib_a}/grants/{dept_grant['id']}", status=204)
    try:
        for who in ("staff_a", "act_as_a"):
            assert w.call("GET", f"{V1}/libraries/{lib_a}", who).status_code == 404
            assert w.ok("GET", f"{V1}/libraries", who) == []
            result = search_as(w, who)
            assert result["results"] == [] and result["library_ids"] == []
            assert_not_found_like_missing(w, who, f"{V1}/documents/{{}}", w.docs["A"])
            r = w.call("GET", f"{V1}/conversations/{w.conversations[who]}", who)
            assert r.status_code == 200  # their own conversation stays theirs
    finally:
        w.ok(
            "POST",
            f"{V1}/libraries/{lib_a}/grants",
            json={"group_id": dept_a, "permission": "read"},
            status=201,
        )
    assert w.call("GET", f"{V1}/libraries/{lib_a}", "staff_a").status_code == 200


def test_act_as_sees_the_intersection_of_key_and_user(world: World) -> None:
    w = world
    lib_a, lib_b = w.libs["A"], w.libs["B"]
    # Acting for staff B: the key's library A ∩ staff B's library B is empty.
    assert w.ok("GET", f"{V1}/libraries", "act_as_b") == []
    assert_not_found_like_missing(w, "act_as_b", f"{V1}/libraries/{{}}", lib_a)
    assert_not_found_like_missing(w, "act_as_b", f"{V1}/libraries/{{}}", lib_b)
    assert_not_found_like_missing(w, "act_as_b", f"{V1}/documents/{{}}", w.docs["A"])
    assert_not_found_like_missing(w, "act_as_b", f"{V1}/documents/{{}}/chunks", w.docs["B"])
    result = search_as(w, "act_as_b")
    assert result["results"] == [] and result["library_ids"] == []
    for ids in ([lib_a], [lib_b]):
        r = w.call("POST", f"{V1}/search", "act_as_b", json={"query": QUERY, "library_ids": ids})
        assert r.status_code == 404
    models = w.ok("GET", "/v1/models", "act_as_b")
    assert [m["id"] for m in models["data"]] == ["zhiku"]
    # Acting for staff A: library A, all of it that staff A reads.
    assert [x["id"] for x in w.ok("GET", f"{V1}/libraries", "act_as_a")] == [lib_a]
    result = search_as(w, "act_as_a")
    assert result["library_ids"] == [lib_a] and w.docs["A"] in passage_doc_ids(result)
    models = w.ok("GET", "/v1/models", "act_as_a")
    assert [m["id"] for m in models["data"]] == ["zhiku", LIB_NAMES["A"]]
    # Acting for the admin: still only the key's library, and no admin powers.
    as_admin = {**auth(w.key_secrets["act_as"]), "X-Zhiku-User": ADMIN_NAME}
    r = w.client.get(f"{V1}/libraries", headers=as_admin)
    assert [x["id"] for x in r.json()] == [lib_a]
    r = w.client.get(f"{V1}/users", headers=as_admin)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "user_session_required")
    r = w.client.get(f"{V1}/libraries/{lib_b}", headers=as_admin)
    assert r.status_code == 404
    # Naming a user needs the act_as scope, an active user, and an API key.
    named = {"X-Zhiku-User": USERNAMES["staff_a"]}
    r = w.client.get(f"{V1}/libraries", headers={**w.headers["key_a"], **named})
    assert (r.status_code, r.json()["error"]["code"]) == (403, "missing_scope")
    r = w.client.get(
        f"{V1}/libraries", headers={**auth(w.key_secrets["act_as"]), "X-Zhiku-User": "no-such"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (403, "act_as_denied")
    r = w.client.get(f"{V1}/libraries", headers={**w.headers["staff_b"], **named})
    assert r.status_code == 403 and MARK_A not in r.text
    r = w.client.get(f"{V1}/libraries", headers={**auth(w.key_secrets["revoked"]), **named})
    assert r.status_code == 401
    # Conversations held through the key are the acted-for user's, and only through the key.
    mine = {c["id"] for c in w.ok("GET", f"{V1}/conversations", "act_as_a")}
    assert w.conversations["act_as_a"] in mine and w.conversations["staff_a"] not in mine
    r = w.call("GET", f"{V1}/conversations/{w.conversations['staff_a']}", "act_as_a")
    assert r.status_code == 404


ANSWERABLE = {
    "A": "What torque does the zebra calibration procedure of the alpha line use?",
    "B": "What torque limit did the board discuss for the zebra calibration procedure?",
}


def outcome(r: Any) -> tuple[int, str]:
    """503 with the code of the model failure, or 200 with found / not found."""
    out = r.json()
    if r.status_code == 503:
        error = out["error"]
        return 503, str(error.get("code") or error.get("type"))
    assert r.status_code == 200, r.text
    found = out.get("not_found", out.get("zhiku", {}).get("not_found"))
    return 200, "not_found" if found else "found"


@pytest.mark.parametrize("lib", ["A", "B"])
def test_chat_outcome_depends_only_on_what_the_caller_reads(world: World, lib: str) -> None:
    """A question one library answers: it needs the model (down here: 503 model_unavailable)
    exactly when the libraries the caller reads answer it — the outcome is the admin's when
    asking those libraries only; what the caller may not read changes nothing, and no answer
    (nor error) carries it."""
    w = world
    question = ANSWERABLE[lib]
    reference = {}
    for libs in ("A", "B"):
        body = {"question": question, "library_ids": [w.libs[libs]]}
        reference[libs] = outcome(w.call("POST", f"{V1}/chat", json=body))
    assert reference[lib] == (503, "model_unavailable"), reference  # not vacuous
    for who in CALLERS:
        readable = "".join(sorted(w.reads[who]))
        expected = reference.get(readable, (200, "not_found") if not readable else None)
        for path, body in (
            (f"{V1}/chat", {"question": question}),
            (
                "/v1/chat/completions",
                {"model": "zhiku", "messages": [{"role": "user", "content": question}]},
            ),
        ):
            r = w.call("POST", path, who, json=body)
            if path.startswith("/v1/") and who in USERS:
                assert r.status_code == 401
                continue
            if expected is not None:  # the admin reads both: no reference to compare with
                assert outcome(r) == expected, (who, path, r.text)
            else:
                assert outcome(r) == (503, "model_unavailable"), (who, path, r.text)
            assert not leaks(w, who, r, json.dumps(body)), (who, path, r.text)
