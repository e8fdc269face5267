"""Where the model servers are: settings first, then what `zhiku models serve` wrote.

`zhiku models serve` records the servers it started in `<data_dir>/models/servers.json`:

    {"main": {"base_urls": ["http://127.0.0.1:8011/v1"], "model": "zhiku-main",
              "context_window": 4096, "tokenizer": "/…/models/smollm2-135m-w4a16"},
     "safety": {…}}

Any `ZHIKU_MAIN_*` / `ZHIKU_SAFETY_*` setting overrides the file, so a deployment can point at
any OpenAI-compatible server (vLLM, SGLang, Ollama, llama.cpp server, TGI) without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.settings import Settings
from serving.llm_client import EndpointConfig

SERVERS_FILE = "servers.json"
DEFAULT_CONTEXT_WINDOW = 4096


@dataclass(frozen=True)
class ModelEndpoint:
    role: str  # "main" | "safety"
    config: EndpointConfig | None  # None when no server is configured or recorded
    context_window: int
    tokenizer_dir: str  # "" when unknown: token counts are then estimated

    @property
    def configured(self) -> bool:
        return self.config is not None


def servers_path(settings: Settings) -> Path:
    return settings.models_dir / SERVERS_FILE


def read_servers(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(servers_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_servers(settings: Settings, servers: dict[str, Any]) -> Path:
    path = servers_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(servers, indent=2))
    os.replace(tmp, path)
    return path


def clear_servers(settings: Settings, roles: list[str]) -> None:
    servers = read_servers(settings)
    for role in roles:
        servers.pop(role, None)
    if servers:
        write_servers(settings, servers)
    else:
        servers_path(settings).unlink(missing_ok=True)


def endpoint(settings: Settings, role: str) -> ModelEndpoint:
    """The endpoint for `role`, from settings, falling back to the servers file."""
    if role not in ("main", "safety"):
        raise ValueError(f"unknown model role {role!r}")
    recorded = read_servers(settings).get(role) or {}
    urls_setting: str = getattr(settings, f"{role}_base_urls")
    urls = [u.strip().rstrip("/") for u in urls_setting.split(",") if u.strip()]
    if not urls:
        urls = [str(u).rstrip("/") for u in recorded.get("base_urls", [])]
    model = getattr(settings, f"{role}_model") or str(recorded.get("model", ""))
    config = (
        None
        if not urls or not model
        else EndpointConfig(
            base_urls=tuple(urls),
            model=model,
            api_key=getattr(settings, f"{role}_api_key") or recorded.get("api_key"),
            connect_timeout=getattr(settings, f"{role}_connect_timeout"),
            read_timeout=getattr(settings, f"{role}_read_timeout"),
            first_token_timeout=getattr(settings, f"{role}_first_token_timeout"),
            max_concurrency=getattr(settings, f"{role}_max_concurrency"),
            queue_timeout=getattr(settings, f"{role}_queue_timeout"),
        )
    )
    window = (
        settings.main_context_window
        if role == "main" and settings.main_context_window
        else int(recorded.get("context_window") or DEFAULT_CONTEXT_WINDOW)
    )
    tokenizer = (settings.main_tokenizer if role == "main" else "") or str(
        recorded.get("tokenizer", "")
    )
    return ModelEndpoint(role, config, window, tokenizer)
