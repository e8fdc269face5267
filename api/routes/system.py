"""The installation's health, for administrators (see api/system_status.py)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminDep, SettingsDep
from api.system_status import SystemStatus, collect

router = APIRouter(prefix="/system", tags=["system"])


@router.get("/status", response_model=SystemStatus)
def system_status(settings: SettingsDep, _: AdminDep) -> SystemStatus:
    """Workers online, the ingest queue, documents by status, the model servers, each
    library's index and the disk — each part with its own `ok` and `error`, so one that is
    down does not hide the rest. Answers within about 5 seconds even when Redis, the workers
    or a model server do not."""
    return collect(settings)
