"""Database engine, sessions and migrations."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url, text
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


# Any constant of our own: PostgreSQL advisory locks are keyed by a 64-bit number.
_MIGRATE_LOCK_KEY = 0x7A68696B75  # "zhiku"


@contextmanager
def _sqlite_migrate_lock(url: str) -> Iterator[None]:
    """An exclusive lock on a file next to the SQLite database, held for the migration."""
    path = make_url(url).database
    if not path or path == ":memory:":
        yield
        return
    lock_path = Path(f"{path}.migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def migrate(settings: Settings | None = None) -> None:
    """Bring the database schema to the newest migration (idempotent). Processes that start at
    once on a new database (api replicas, workers) take turns: the first migrates, the others
    then find the schema current."""
    settings = settings or get_settings()
    cfg = alembic_config(settings)
    url = settings.db_url
    is_sqlite = url.startswith("sqlite")
    with (
        _sqlite_migrate_lock(url) if is_sqlite else nullcontext(),
        get_engine(settings).begin() as conn,
    ):
        if not is_sqlite:  # held until this transaction ends; DDL is transactional
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK_KEY})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
