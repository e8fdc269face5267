"""The web UI end to end, in headless Chromium (Debian's /usr/bin/chromium driven by Playwright;
no browser is downloaded), against the real stack: uvicorn serving the api and the UI, a real
Celery worker, the real embedder, and the vLLM CPU server with the bundled quantized model.

One story, in order (the tests share the stack and the browser): an admin signs in, creates a
library, uploads a DOCX and a PDF and watches them reach `ready`; asks a question and sees the
answer stream in and cite the PDF; opens the citation at its page; a staff member without a
grant sees the library nowhere until the admin grants it; HTML in a file name and a passage is
shown as text. Screenshots of the main screens go to test-artifacts/ui/.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_sync

from core import db
from core.models import Role
from core.repo import users
from core.settings import Settings
from tests.conftest import REPO, TEST_MODEL, VllmServers, WorkerProcess, _free_port, settings_env
from tests.pdf_maker import Page, make_pdf

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "test-artifacts" / "ui"
ADMIN, ADMIN_PASSWORD = "ui-admin", "Lantern-Otter-1987"
STAFF, STAFF_PASSWORD = "ui-staff", "Quokka-Harbour-2291"
LIBRARY = "Staff handbook"
QUESTION = "How many days of annual leave do employees get per year?"
XSS_NAME = "<img src=x onerror=window.__xss=1>.txt"  # browsers send \" as %22: no quotes
XSS_TEXT = (
    "Badge policy\n\nVisitors wear a red badge at all times. "
    '<script>window.__xss=2</script> <img src=x onerror="window.__xss=3"> '
    "Lost badges are reported to security within one hour.\n"
)
# What the browser may legitimately log: a 401 from /auth/me before signing in, and from
# /auth/session for the wrong password the sign-in test types on purpose.
EXPECTED_401 = ("/api/v1/auth/me", "/api/v1/auth/session")


def _docx(heading: str, paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def _pdf() -> bytes:
    # The bundled test model is tiny (135M): with greedy decoding this library's question gets
    # a cited answer; some other mixes of passages, or wordings of the question, make it answer
    # nothing at all ("… do employees get?" did on the clean run at d72a030).
    return make_pdf(
        [
            Page(
                lines=[
                    "Annual leave",
                    "",
                    "Employees get 15 days of annual leave per year.",
                    "Leave requests go through the HR portal.",
                ]
            )
        ]
    )


@dataclass
class Stack:
    base: str
    settings: Settings
    files: Path
    console: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class ApiServer:
    """uvicorn running the app (api + web UI) on the stack's settings, as `make run` would."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.log = log
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"api exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"api did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, vllm: VllmServers
) -> Iterator[Stack]:
    import redis

    tmp = tmp_path_factory.mktemp("web-ui")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'zhiku.db'}",
        redis_url=redis_url,
        main_base_urls=vllm.wait("main"),
        main_model="zhiku-main",
        main_tokenizer=str(TEST_MODEL),
        main_read_timeout=120.0,
        answer_max_tokens=96,
    )
    settings.data_dir.mkdir(parents=True)
    db.migrate(settings)
    with db.session_scope(settings) as session:
        users.create_user(session, ADMIN, ADMIN_PASSWORD, role=Role.admin)
    redis.Redis.from_url(redis_url).flushdb()
    worker = WorkerProcess(settings, tmp / "worker.log")
    worker.start()
    env = settings_env(settings) | {
        "ZHIKU_MAIN_BASE_URLS": settings.main_base_urls,
        "ZHIKU_MAIN_MODEL": "zhiku-main",
        "ZHIKU_MAIN_TOKENIZER": str(TEST_MODEL),
        "ZHIKU_MAIN_READ_TIMEOUT": "120",
        "ZHIKU_ANSWER_MAX_TOKENS": "96",
        # a robot clicks far faster than a person: 300 requests a minute is not enough here
        "ZHIKU_RATE_LIMIT_PER_MINUTE": "100000",
    }
    port = _free_port()
    api = ApiServer(env, port, tmp / "api.log")
    files = tmp / "files"
    files.mkdir()
    (files / "leave-policy.pdf").write_bytes(_pdf())
    (files / "it-helpdesk.docx").write_bytes(_docx("IT helpdesk", ["Helpdesk phone: 13812345678."]))
    (files / "xss").mkdir()
    (files / "xss" / XSS_NAME).write_text(XSS_TEXT, encoding="utf-8")
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        api.wait()
        yield Stack(f"http://127.0.0.1:{port}/", settings, files)
    finally:
        api.stop()
        worker.stop()
        db.dispose_engines()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _page(
    stack: Stack, browser: Any, *, width: int = 1280, height: int = 860, lang: str = "en-US"
) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, locale=lang)
    page = context.new_page()

    def on_console(msg: Any) -> None:
        url = (msg.location or {}).get("url", "")
        expected = "status of 401" in msg.text and url.endswith(EXPECTED_401)
        if msg.type in ("error", "warning") and not expected:
            stack.console.append(f"{msg.type}: {msg.text} ({url})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: stack.console.append(f"pageerror: {exc}"))
    page.on("dialog", lambda d: stack.console.append(f"dialog: {d.message}") or d.dismiss())
    page.set_default_timeout(30_000)
    return page


@pytest.fixture(scope="module")
def admin_page(stack: Stack, browser: Any) -> Any:
    page = _page(stack, browser)
    yield page
    page.context.close()


def _sign_in(page: Any, base: str, username: str, password: str) -> None:
    page.goto(base)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Ask").wait_for()


def _sign_in_zh(page: Any, base: str) -> None:
    page.goto(base)
    page.get_by_role("heading", name="登录知库").wait_for()
    page.get_by_label("用户名").fill(ADMIN)
    page.get_by_label("密码").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.get_by_role("heading", name="向知识库提问").wait_for()


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


@contextmanager
def _api(stack: Stack) -> Iterator[httpx.Client]:
    """The admin's REST session on the live server (to check what the UI stored)."""
    with httpx.Client(base_url=stack.base.rstrip("/") + "/api/v1", timeout=60) as client:
        login = client.post("/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        yield client


# --- the story ------------------------------------------------------------------------------


def test_sign_in(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    page.goto(stack.base)
    page.get_by_role("heading", name="Sign in to Zhiku").wait_for()
    paint = page.evaluate(
        "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
    )
    stack.facts["first_contentful_paint_ms"] = paint
    _shot(page, "01-sign-in")
    page.get_by_label("Username").fill(ADMIN)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="Wrong username or password").wait_for()
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Ask your knowledge base").wait_for()
    assert page.get_by_role("link", name="Manage").is_visible()


def test_upload_docx_and_pdf_until_ready(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    page.get_by_role("link", name="Manage").click()
    page.get_by_label("Library name").fill(LIBRARY)
    page.get_by_label("What it holds (optional)").fill("HR rules and IT contacts")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name=LIBRARY).wait_for()
    stack.facts["library_id"] = int(page.url.rsplit("/", 1)[-1])
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose files").click()
    chooser.value.set_files(
        [str(stack.files / "it-helpdesk.docx"), str(stack.files / "leave-policy.pdf")]
    )
    uploads = page.get_by_role("list", name="Uploads")
    uploads.get_by_text("it-helpdesk.docx").wait_for()
    # Both move through the pipeline to ready (the worker parses, embeds and indexes them).
    page.wait_for_function(
        "() => { const s = [...document.querySelectorAll('.upload-item')]"
        ".map(e => e.dataset.status); return s.length === 2 && s.every(x => x === 'ready'); }",
        timeout=300_000,
    )
    _shot(page, "02-library-documents")
    table = page.locator("table.data")
    table.get_by_text("leave-policy.pdf").wait_for()
    row = table.locator("tr", has_text="leave-policy.pdf")
    assert "Ready" in row.inner_text()
    assert row.locator("td.num").first.inner_text().strip() == "1"  # pages
    # The chunk viewer shows how the PDF was cut.
    row.get_by_role("button", name="Passages").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Employees get 15 days of annual leave per year.").wait_for()
    dialog.get_by_role("button", name="Close").click()


def test_question_streams_and_cites_the_pdf(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    page.get_by_role("link", name="Ask").click()
    page.get_by_role("heading", name="Ask your knowledge base").wait_for()
    # Watch the answer while it streams: its text after each change, and layout shifts.
    page.evaluate(
        """() => {
        window.__stream = { texts: [], shift: 0 };
        const log = document.querySelector('.messages');
        new MutationObserver(() => {
          const a = document.querySelector('.msg-assistant[aria-busy="true"] .answer');
          if (!a || a.querySelector('.typing')) return;
          const t = a.textContent;
          const all = window.__stream.texts;
          if (t && all[all.length - 1] !== t) all.push(t);
        }).observe(log, { subtree: true, childList: true, characterData: true });
        new PerformanceObserver((list) => {
          for (const e of list.getEntries())
            if (!e.hadRecentInput) window.__stream.shift += e.value;
        }).observe({ type: 'layout-shift' });
      }"""
    )
    page.get_by_label("Question", exact=True).fill(QUESTION)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Stop").wait_for()
    page.wait_for_selector(".msg-assistant:not([aria-busy])", timeout=180_000)
    stream = page.evaluate("window.__stream")
    growing = stream["texts"]
    conversation_id = int(page.url.rsplit("/", 1)[-1])
    with _api(stack) as api:
        stored = api.get(f"/conversations/{conversation_id}").json()["messages"][-1]
    # Tokens arrived one after another: many intermediate states, each extending the last.
    assert len(growing) >= 3, json.dumps([growing, stored], ensure_ascii=False)
    assert growing[-1].startswith(growing[0][: max(1, len(growing[0]) // 2)])
    stack.facts["layout_shift_while_streaming"] = stream["shift"]
    assert stream["shift"] < 0.1, stream  # no layout jumps while tokens stream
    answer = page.locator(".msg-assistant .answer").last
    # What streamed in ends as exactly the stored answer, rendered (markers become chips).
    assert answer.inner_text().strip() == page.evaluate(
        "(html) => { const d = document.createElement('div'); d.innerHTML = html;"
        " return d.innerText.trim(); }",
        stored["answer_html"],
    ) or answer.inner_text().replace("\n", "") == stored["content"].replace("\n", ""), stored
    assert stored["citations"], stored  # the answer rests on the handbook
    assert page.get_by_role("button", name="Send").is_visible()  # the stop button is gone
    chip = answer.locator("sup.cite a").first
    chip.wait_for()
    _shot(page, "03-answer-with-sources")
    chip.click()
    card = page.locator(".source-card.highlight")
    card.wait_for()
    assert "leave-policy" in card.inner_text() or "Staff handbook" in card.inner_text()
    assert card.locator("blockquote mark").count() >= 1  # the cited span, highlighted
    # The conversation got an address and a place in the sidebar.
    page.get_by_role("list", name="Conversations").get_by_role("link").first.wait_for()

    # Open the source: page 2 of the PDF as an image, its text with the passage marked.
    card.get_by_role("button", name="Open source").click()
    viewer = page.get_by_role("dialog")
    viewer.get_by_text("Page 1 of 1").wait_for()
    image = viewer.locator("img.page-image")
    image.wait_for()
    page.wait_for_function("() => document.querySelector('img.page-image')?.naturalWidth > 100")
    assert viewer.locator(".chunk-cited mark").first.inner_text().strip()
    assert "annual leave" in viewer.locator(".chunk-cited").first.inner_text()
    download = viewer.get_by_role("link", name="Download original")
    assert download.get_attribute("href").endswith("/file")
    _shot(page, "04-source-viewer")
    with page.expect_download() as got:
        download.click()
    assert got.value.suggested_filename == "leave-policy.pdf"
    viewer.get_by_role("button", name="Close").click()

    # Feedback on the answer is stored and visible to admins.
    page.get_by_role("button", name="Helpful", exact=True).last.click()
    page.wait_for_selector('button[aria-label="Helpful"][aria-pressed="true"]')
    with _api(stack) as api:
        items = api.get("/feedback").json()["items"]
    assert [(i["rating"], i["question"]) for i in items] == [(1, QUESTION)]


def test_stop_cancels_and_retry_answers(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    page.get_by_label("Question", exact=True).fill(
        "Summarise the staff handbook chapter on annual leave in detail."
    )
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Stop").click()
    failed = page.locator(".msg-failed").last
    failed.get_by_text("Stopped").wait_for()
    failed.get_by_role("button", name="Retry").click()
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('.msg-assistant')].pop();"
        " return m && !m.hasAttribute('aria-busy') && !m.classList.contains('msg-failed'); }",
        timeout=180_000,
    )


def test_conversations_are_renamed_and_deleted(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    sidebar = page.get_by_role("list", name="Conversations")
    first = sidebar.get_by_role("listitem").first
    first.get_by_role("button", name=re.compile("^Rename")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Title", exact=True).fill("Leave questions")
    dialog.get_by_role("button", name="Save").click()
    sidebar.get_by_role("link", name=re.compile("Leave questions")).wait_for()
    # A second conversation, deleted again.
    page.get_by_role("link", name="New conversation").click()
    page.get_by_role("heading", name="Ask your knowledge base").wait_for()
    page.get_by_label("Question", exact=True).fill("Who do I call for IT problems?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg-assistant:not([aria-busy])", timeout=180_000)
    sidebar.get_by_role("listitem").nth(1).wait_for()
    assert sidebar.get_by_role("listitem").count() == 2
    doomed = sidebar.get_by_role("listitem").filter(has_text="Who do I call")
    doomed.get_by_role("button", name=re.compile("^Delete")).click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    page.get_by_role("heading", name="Ask your knowledge base").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.conv-list .conv-item').length === 1")
    with _api(stack) as api:
        titles = [c["title"] for c in api.get("/conversations").json()]
    assert titles == ["Leave questions"]


def test_an_api_key_is_shown_once(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    page.goto(stack.base + "#/admin/keys")
    page.get_by_role("button", name="New API key").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Name", exact=True).fill("OA system")
    dialog.get_by_role("button", name="Create key").click()
    secret = page.get_by_role("dialog").get_by_label("API key")
    secret.wait_for()
    key = secret.inner_text().strip()
    assert key.startswith("zk_key_"), key
    _shot(page, "11-api-key-once")
    page.get_by_role("button", name="I have stored it").click()
    page.locator("table.data", has_text="OA system").first.wait_for()
    assert key not in page.content()  # only its prefix stays visible
    # The key works against the API.
    r = httpx.post(
        stack.base + "api/v1/search",
        json={"query": "annual leave"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["results"], r.text


def test_staff_without_a_grant_sees_no_library_until_granted(
    stack: Stack, browser: Any, admin_page: Any
) -> None:
    with _api(stack) as api:
        r = api.post(
            "/users",
            json={
                "username": STAFF,
                "password": STAFF_PASSWORD,
                "role": "staff",
                "must_change_password": False,
            },
        )
        assert r.status_code == 201, r.text
    staff = _page(stack, browser)
    try:
        _sign_in(staff, stack.base, STAFF, STAFF_PASSWORD)
        staff.get_by_text("You have no libraries to ask yet").wait_for()
        assert staff.get_by_role("link", name="Manage").count() == 0
        staff.locator(".library-picker summary").click()
        assert LIBRARY not in staff.content()
        staff.goto(stack.base + f"#/admin/libraries/{stack.facts['library_id']}")
        staff.wait_for_function("() => location.hash === '#/chat'")
        assert LIBRARY not in staff.content()
        _shot(staff, "05-staff-without-grant")

        # The admin grants read access in the Access tab.
        admin = admin_page
        admin.goto(stack.base + f"#/admin/libraries/{stack.facts['library_id']}/access")
        admin.get_by_role("heading", name="Who may use this library").wait_for()
        grant_form = admin.locator("form", has=admin.get_by_role("button", name="Give access"))
        grant_form.get_by_label("To").select_option("user")
        grant_form.get_by_label("Who").select_option(label=STAFF)
        grant_form.get_by_label("Permission").select_option("read")
        grant_form.get_by_role("button", name="Give access").click()
        admin.locator("table.data", has_text=STAFF).wait_for()
        _shot(admin, "06-library-access")

        staff.reload()
        staff.locator(".library-picker summary", has_text="All libraries (1)").wait_for()
        staff.locator(".library-picker summary").click()
        staff.get_by_label(LIBRARY).wait_for()
        assert staff.get_by_label(LIBRARY).is_checked()
    finally:
        staff.context.close()


def test_html_in_a_file_name_and_a_passage_is_text(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    page.goto(stack.base + f"#/admin/libraries/{stack.facts['library_id']}")
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose files").click()
    chooser.value.set_files([str(stack.files / "xss" / XSS_NAME)])
    page.wait_for_function(
        "() => [...document.querySelectorAll('.upload-item')].some("
        "e => e.textContent.includes('onerror') && e.dataset.status === 'ready')",
        timeout=300_000,
    )
    table = page.locator("table.data")
    table.get_by_text(XSS_NAME).first.wait_for()  # the file name, shown as text
    # The passage as the chunk viewer shows it: the markup is text.
    table.locator("tr", has_text="onerror").get_by_role("button", name="Passages").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("<script>window.__xss=2</script>", exact=False).wait_for()
    assert dialog.locator("script, img").count() == 0
    _shot(page, "07-escaped-html")
    dialog.get_by_role("button", name="Close").click()
    # And wherever an answer or its sources show it.
    page.get_by_role("link", name="Ask").click()
    page.get_by_label("Question", exact=True).fill(
        "What colour badge do visitors wear? Lost badges?"
    )
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg-assistant:not([aria-busy])", timeout=180_000)
    for button in page.get_by_role("button", name=re.compile(r"^Sources \(\d+\)$")).all():
        button.click()
    assert page.locator(".messages img, .sources-body img, .messages script").count() == 0
    assert page.evaluate("window.__xss") is None


def test_a_failed_upload_says_why_and_can_be_retried(stack: Stack, admin_page: Any) -> None:
    """A broken PDF fails with a reason a person can act on and a Retry button that queues
    it again; a zip archive of a folder becomes its documents, their folder kept."""
    page = admin_page
    broken = stack.files / "broken-report.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer\n")
    archive = stack.files / "wiki.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            "wiki/it/printers.md", "# Printers\n\nThe printer on floor 3 is named Kestrel.\n"
        )
        z.writestr("wiki/it/wifi.md", "# Wi-Fi\n\nThe guest network is called Harbour.\n")
    page.goto(stack.base + f"#/admin/libraries/{stack.facts['library_id']}")
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose files").click()
    chooser.value.set_files([str(broken), str(archive)])
    failed = page.locator(".upload-item[data-status='failed']", has_text="broken-report.pdf")
    failed.wait_for(timeout=300_000)
    reason = failed.locator(".reason").inner_text()
    assert reason.strip() and "Traceback" not in reason, reason
    page.wait_for_function(
        "() => ['printers.md', 'wifi.md'].every(n => [...document.querySelectorAll("
        "'.upload-item')].some(e => e.textContent.includes(n) && e.dataset.status === 'ready'))",
        timeout=300_000,
    )
    page.locator("table.data").get_by_text("wiki/it/printers.md").wait_for()
    _shot(page, "12-upload-failure-and-zip")
    failed.get_by_role("button", name="Retry").click()
    page.get_by_text("Queued again: broken-report.pdf").wait_for()
    page.locator(".upload-item[data-status='failed']", has_text="broken-report.pdf").wait_for(
        timeout=300_000
    )
    with _api(stack) as api:
        docs = api.get(f"/libraries/{stack.facts['library_id']}/documents").json()["items"]
    broken_doc = next(d for d in docs if d["filename"] == "broken-report.pdf")
    assert broken_doc["status"] == "failed" and broken_doc["version"] == 2, broken_doc


def test_files_dropped_on_the_page_are_uploaded_and_found(stack: Stack, admin_page: Any) -> None:
    """A drop of files (what a drag from the desktop delivers) uploads them; the document
    list's search and status filter narrow the list."""
    page = admin_page
    page.goto(stack.base + f"#/admin/libraries/{stack.facts['library_id']}")
    page.get_by_text("Drop files, folders or .zip archives here").wait_for()
    page.evaluate(
        """() => {
        const data = new DataTransfer();
        data.items.add(new File(['# Parking\\n\\nVisitors park in row P.\\n'], 'parking.md',
                                { type: 'text/markdown' }));
        const zone = document.querySelector('[data-testid="dropzone"]');
        for (const type of ['dragover', 'drop'])
          zone.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true,
                                                   cancelable: true }));
      }"""
    )
    page.locator(".upload-item[data-status='ready']", has_text="parking.md").wait_for(
        timeout=300_000
    )
    search = page.get_by_label("Search title, file name or folder")
    search.fill("parking")
    table = page.locator("table.data")
    page.wait_for_function("() => document.querySelectorAll('table.data tbody tr').length === 1")
    assert "parking.md" in table.inner_text()
    search.fill("")
    page.get_by_label("Status", exact=True).select_option("failed")
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.data tbody tr')].every("
        "r => r.textContent.includes('Failed'))"
        " && document.querySelectorAll('table.data tbody tr').length === 1"
    )
    assert "broken-report.pdf" in table.inner_text()


def test_blocked_questions_show_as_blocked(stack: Stack, admin_page: Any) -> None:
    with _api(stack) as api:
        text = api.get("/admin/lexicon").json()["text"]
        r = api.put("/admin/lexicon", json={"text": text + "\nzebracorn-heist\tviolence\n"})
        assert r.status_code == 200, r.text
    page = admin_page
    page.goto(stack.base + "#/chat")
    page.get_by_label("Question", exact=True).fill("How do I plan a zebracorn-heist?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg-assistant:not([aria-busy])", timeout=180_000)
    last = page.locator(".msg-assistant").last
    last.get_by_text("Blocked by the safety policy").wait_for()
    assert not last.locator(".error-box").count()  # a block is an answer, not an error
    _shot(page, "13-blocked")


def test_phone_width_and_chinese(stack: Stack, browser: Any) -> None:
    page = _page(stack, browser, width=390, height=844, lang="zh-CN")
    try:
        _sign_in_zh(page, stack.base)
        # Nothing is wider than the phone's screen.
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
        _shot(page, "08-phone-chat-zh")
        page.get_by_role("button", name="对话").click()
        page.get_by_role("list", name="对话").get_by_role("link").first.click()
        page.wait_for_selector(".msg-assistant:not([aria-busy])")
        _shot(page, "09-phone-conversation-zh")
        page.select_option(".lang-select", "en")
        page.get_by_role("link", name="Ask").wait_for()
    finally:
        page.context.close()


def test_admin_screens_render_without_errors(stack: Stack, admin_page: Any) -> None:
    page = admin_page
    for route, heading, shows in [
        ("users", "Users", STAFF),
        ("groups", "Departments", "New department"),
        ("keys", "API keys", "New API key"),
        ("audit", "Audit log", "login.success"),
        ("feedback", "Feedback", QUESTION),
        ("status", "System status", "Workers"),
    ]:
        page.goto(stack.base + f"#/admin/{route}")
        page.get_by_role("heading", name=heading, exact=True).first.wait_for()
        page.get_by_text(shows).first.wait_for()
        page.wait_for_load_state("networkidle")
        errors = page.locator(".error-box").all_inner_texts()
        assert not errors, (route, errors)
        _shot(page, f"10-admin-{route}")


def _axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as shown (the rules of WCAG 2.1 A and AA)."""
    from axe_playwright_python.base import AXE_SCRIPT

    page.evaluate(AXE_SCRIPT)
    result = page.evaluate(
        "axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'],"
        " resultTypes: ['violations'] })"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
    ]


def test_accessibility_of_the_main_screens(stack: Stack, browser: Any, admin_page: Any) -> None:
    """Labels, names, contrast, landmarks… by axe-core (bundled by axe-playwright-python):
    no violation of WCAG 2.1 A/AA on any main screen, at desktop and phone width."""
    found: dict[str, list[dict[str, Any]]] = {}
    guest = _page(stack, browser)
    try:
        guest.goto(stack.base)
        guest.get_by_role("heading", name="Sign in to Zhiku").wait_for()
        found["sign-in"] = _axe(guest)
    finally:
        guest.context.close()
    page = admin_page
    with _api(stack) as api:
        conversation = api.get("/conversations").json()[-1]["id"]
    library = stack.facts["library_id"]
    screens = [
        ("chat", f"#/chat/{conversation}", ".msg-assistant:not([aria-busy])"),
        ("library", f"#/admin/libraries/{library}", "table.data"),
        ("access", f"#/admin/libraries/{library}/access", "form"),
        ("settings", f"#/admin/libraries/{library}/settings", "form"),
        ("libraries", "#/admin/libraries", "table.data"),
        ("users", "#/admin/users", "table"),
        ("groups", "#/admin/groups", "h1"),
        ("keys", "#/admin/keys", "h1"),
        ("audit", "#/admin/audit", "table"),
        ("feedback", "#/admin/feedback", "h1"),
        ("status", "#/admin/status", ".card"),
        ("account", "#/account", "form"),
    ]
    for name, route, ready in screens:
        page.goto(stack.base + route)
        page.locator(ready).first.wait_for()
        page.wait_for_load_state("networkidle")
        found[name] = _axe(page)
    page.goto(stack.base + f"#/chat/{conversation}")
    page.locator("sup.cite a").first.click()
    page.get_by_role("button", name="Open source").first.click()
    page.locator(".chunk-cited").first.wait_for()
    found["source viewer"] = _axe(page)
    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    phone = _page(stack, browser, width=390, height=844, lang="zh-CN")
    try:
        _sign_in_zh(phone, stack.base)
        phone.goto(stack.base + f"#/chat/{conversation}")
        phone.locator(".msg-assistant:not([aria-busy])").first.wait_for()
        found["phone chat zh"] = _axe(phone)
    finally:
        phone.context.close()
    stack.facts["axe_violations"] = {k: v for k, v in found.items() if v}
    assert not any(found.values()), json.dumps(stack.facts["axe_violations"], indent=1)


def test_no_console_errors(stack: Stack) -> None:
    (SHOTS / "facts.json").write_text(json.dumps(stack.facts, indent=2))
    assert stack.console == [], stack.console
