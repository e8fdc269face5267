"""Secrets generated on first start into the data dir (mode 0600); nothing has a default."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
FILENAME = "secrets.json"


@dataclass(frozen=True)
class InstanceSecrets:
    instance_id: str  # namespaces this installation's keys in a shared Redis
    csrf_key: bytes  # signs the CSRF token bound to a web session


def _generate() -> dict[str, str]:
    return {"instance_id": secrets.token_hex(8), "csrf_key": secrets.token_hex(32)}


def load_or_create(data_dir: Path) -> InstanceSecrets:
    """Read data_dir/secrets.json, creating it (0600, never overwritten) on first start.
    A file readable by others is tightened and a warning logged."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILENAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            json.dump(_generate(), fh)
            fh.flush()
            os.fsync(fh.fileno())
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("%s was readable by others (mode %o); setting it to 0600", path, mode)
        path.chmod(0o600)
    data = json.loads(path.read_text())
    return InstanceSecrets(
        instance_id=data["instance_id"], csrf_key=bytes.fromhex(data["csrf_key"])
    )
