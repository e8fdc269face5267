"""`make run`'s supervisor for real: scripts/run.sh with the real Procfile under honcho, in a
scratch data dir on a private port, with the model server given by ZHIKU_MAIN_BASE_URLS (the
test vLLM server; `zhiku models serve` is not started here). The first start creates the
first administrator and prints its password once; the notice with the URL appears; the web UI
is served; the worker ingests an upload; Ctrl-C (SIGINT to the supervisor's process group)
leaves no process behind; a second start reuses everything and prints no secret."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app as cli_app
from core import db
from core.repo import users
from core.security import verify_password
from core.settings import Settings
from tests.conftest import REPO, TEST_MODEL, TEST_REDIS_URL, VllmServers, _free_port

pytestmark = pytest.mark.integration

READY = "Zhiku is ready"
V1 = "/api/v1"
NEW_PASSWORD = "a brand new passphrase"
# A Redis database of this test's own: its worker must not take other tests' jobs.
REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/13"


def _processes_of(data_dir: Path, root: int) -> dict[int, str]:
    """Live processes started for this data dir: the supervisor's descendants, and anything
    whose environment names the data dir (a process that lost its parent still counts)."""
    parents: dict[int, int] = {}
    found: dict[int, str] = {}
    marker = f"ZHIKU_DATA_DIR={data_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat_line = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat_line.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # exited, waiting to be reaped: gone
            continue
        parents[pid] = int(fields[1])
        if marker in environ.split(b"\0"):
            found[pid] = cmdline
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if pid not in found and (ppid == root or ppid in found):
                found[pid] = "(descendant)"
                changed = True
    found.pop(os.getpid(), None)
    return found


class Supervisor:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            # A session of its own, like a terminal's foreground job: Ctrl-C reaches the group.
            self.proc = subprocess.Popen(
                ["bash", "scripts/run.sh"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> str:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.proc.poll() is not None:
                pytest.fail(f"run.sh exited ({self.proc.returncode}) before {text!r}:\n{out}")
            time.sleep(1)
        pytest.fail(f"no {text!r} within {timeout:.0f} s:\n{self.output()[-5000:]}")

    def ctrl_c(self, data_dir: Path) -> int:
        """SIGINT to the foreground group, as Ctrl-C does; every process must be gone soon."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the supervisor did not stop within 90 s:\n{self.output()[-5000:]}")
        deadline = time.monotonic() + 30
        left = _processes_of(data_dir, self.proc.pid)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = _processes_of(data_dir, self.proc.pid)
        assert not left, f"left running after Ctrl-C: {left}\n{self.output()[-3000:]}"
        return code

    def kill(self, data_dir: Path) -> None:
        """After a failure: SIGKILL the supervisor and every process group it started (each
        Procfile process has a session of its own, out of reach of the supervisor's group)."""
        if self.proc is None:
            return
        mine = os.getpgid(0)
        for pid in [self.proc.pid, *_processes_of(data_dir, self.proc.pid)]:
            try:
                group = os.getpgid(pid)
                if group != mine:
                    os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                continue
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)


def _login(base: str, password: str) -> dict[str, object]:
    r = httpx.post(
        f"{base}{V1}/auth/login", json={"username": "admin", "password": password}, timeout=30
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_bootstrap_creates_the_first_admin_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import reset_settings

    monkeypatch.setenv("ZHIKU_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ZHIKU_DATABASE_URL", settings.db_url)
    reset_settings()
    runner = CliRunner()
    secret_file = settings.data_dir / "initial-admin.txt"
    try:
        first = runner.invoke(cli_app, ["admin", "bootstrap", "--url", "http://h:1/"])
        assert first.exit_code == 0, first.output
        password = re.findall(r"^\s*password:\s*(\S+)\s*$", first.output, flags=re.M)[0]
        assert len(password.replace("-", "")) >= 20
        assert "Sign in at http://h:1/" in first.output
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert f"password: {password}" in secret_file.read_text()
        with db.session_scope(settings) as session:
            admin = users.get_by_username(session, "admin")
            assert admin is not None and admin.is_admin and admin.must_change_password
            assert verify_password(admin.password_hash, password)

        again = runner.invoke(cli_app, ["admin", "bootstrap"])
        assert again.exit_code == 0 and "an administrator exists" in again.output
        assert password not in again.output and secret_file.exists()

        with db.session_scope(settings) as session:
            admin = users.get_by_username(session, "admin")
            assert admin is not None
            users.set_password(session, admin, "the admin's own passphrase")
        third = runner.invoke(cli_app, ["admin", "bootstrap"])
        assert third.exit_code == 0 and f"removed {secret_file}" in third.output
        assert not secret_file.exists() and password not in third.output
        with db.session_scope(settings) as session:
            assert users.count_admins(session, active_only=False) == 1
            assert len(users.list_users(session)) == 1
    finally:
        reset_settings()


@pytest.mark.vllm
@pytest.mark.timeout(1800)
def test_make_run_supervises_bootstraps_and_stops_cleanly(
    tmp_path: Path, vllm: VllmServers
) -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    data_dir = tmp_path / "data"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHIKU_")}
    env.update(
        ZHIKU_DATA_DIR=str(data_dir),
        ZHIKU_REDIS_URL=REDIS_URL,
        ZHIKU_HOST="127.0.0.1",
        ZHIKU_PORT=str(port),
        ZHIKU_MAIN_BASE_URLS=vllm.wait("main"),
        ZHIKU_MAIN_MODEL="zhiku-main",
        ZHIKU_MAIN_TOKENIZER=str(TEST_MODEL),
    )
    base = f"http://127.0.0.1:{port}"
    first = Supervisor(env, tmp_path / "run1.log")
    second = Supervisor(env, tmp_path / "run2.log")
    try:
        first.start()
        out = first.wait_for(READY, timeout=900)
        assert "using the model server at" in out
        found = re.findall(r"^\s*password:\s*(\S+)\s*$", out, flags=re.M)
        assert len(found) == 1, out
        password = found[0]
        assert f"open {base}/ in a browser" in out
        assert "as admin with the password printed above" in out
        assert "zhiku demo load" in out
        secret_file = data_dir / "initial-admin.txt"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert f"password: {password}" in secret_file.read_text()

        # Every process has started: the api, the worker and the notice (blocking quietly).
        names = " ".join(_processes_of(data_dir, first.proc.pid).values())  # type: ignore[union-attr]
        assert "zhiku serve" in names and "zhiku worker" in names and "sleep infinity" in names, (
            names
        )
        assert "models serve" not in names

        # A second `make run` while this one runs refuses instead of fighting for the port.
        clash = subprocess.run(
            ["bash", "scripts/run.sh"], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert clash.returncode == 1 and "already answers" in clash.stderr, clash

        page = httpx.get(f"{base}/", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "<html" in page.text.lower()

        token = _login(base, password)
        assert token["must_change_password"] is True
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        r = httpx.post(
            f"{base}{V1}/auth/password",
            json={"current_password": password, "new_password": NEW_PASSWORD},
            headers=headers,
            timeout=30,
        )
        assert r.status_code == 204, r.text
        headers = {"Authorization": f"Bearer {_login(base, NEW_PASSWORD)['access_token']}"}

        r = httpx.post(f"{base}{V1}/libraries", json={"name": "Canteen"}, headers=headers)
        assert r.status_code == 201, r.text
        lib = r.json()["id"]
        note = "# Canteen\n\nThe staff canteen opens at 11:30 and closes at 13:30.\n"
        r = httpx.post(
            f"{base}{V1}/libraries/{lib}/documents",
            files=[("files", ("canteen.md", note.encode(), "text/markdown"))],
            headers=headers,
            timeout=60,
        )
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 600
        status = ""
        while time.monotonic() < deadline:
            items = httpx.get(
                f"{base}{V1}/libraries/{lib}/documents", headers=headers, timeout=30
            ).json()["items"]
            status = items[0]["status"]
            if status in ("ready", "failed"):
                break
            time.sleep(1)
        assert status == "ready", (items, first.output()[-3000:])

        code = first.ctrl_c(data_dir)
        assert code in (0, 130), (code, first.output()[-3000:])

        # Second start: the same data dir; no new admin, no secret, the stale file removed.
        second.start()
        out2 = second.wait_for(READY, timeout=900)
        assert "an administrator exists" in out2, out2
        assert f"removed {secret_file}" in out2
        assert password not in out2 and not re.search(r"^\s*password:", out2, flags=re.M)
        assert not secret_file.exists()
        assert "Sign in with your account" in out2
        headers = {"Authorization": f"Bearer {_login(base, NEW_PASSWORD)['access_token']}"}
        listed = httpx.get(f"{base}{V1}/users", headers=headers, timeout=30).json()
        assert [u["username"] for u in listed] == ["admin"]
        docs = httpx.get(f"{base}{V1}/libraries/{lib}/documents", headers=headers).json()
        assert [d["status"] for d in docs["items"]] == ["ready"]

        code = second.ctrl_c(data_dir)
        assert code in (0, 130), (code, second.output()[-3000:])
    finally:
        first.kill(data_dir)
        second.kill(data_dir)
