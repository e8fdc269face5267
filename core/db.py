"""Database engine, sessions and migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from core.settings import Settings, get_settings

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    url = settings.db_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            # No wait for a pooled connection, ever (max_overflow=-1: extra connections are
            # opened, then closed on return). A request holds its connection from its first
            # query until the response is out, and its last steps (the response's validation,
            # the session's teardown) need a free thread: with a bounded pool, a burst of
            # requests left every thread waiting for a connection that only a thread could
            # give back, and answered 500 after the 30 s pool timeout.
            if url.startswith("sqlite"):
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                engine = create_engine(
                    url,
                    connect_args={"check_same_thread": False, "timeout": 30},
                    pool_size=5,
                    max_overflow=-1,
                )
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=-1)
            _engines[url] = engine
    return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def ping(settings: Settings | None = None) -> None:
    """Raise if the database does not answer a trivial query."""
    with get_engine(settings).connect() as conn:
        conn.execute(text("SELECT 1"))


@contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(settings), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(settings: Settings | None = None) -> Config:
    settings = settings or get_settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", settings.db_url.replace("%", "%%"))
    return cfg


def migrate(settings: Settings | None = None) -> None:
    """Bring the database schema to the newest migration (idempotent)."""
    settings = settings or get_settings()
    cfg = alembic_config(settings)
    with get_engine(settings).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
