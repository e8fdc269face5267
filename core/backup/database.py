"""The database part of a backup: a consistent snapshot of a running database, and its restore.

SQLite: one read transaction on a connection of our own fixes the snapshot; SQLite's online
backup API then copies the pages through that same connection, so every page comes from that
snapshot although the api and the workers keep writing (WAL mode).

PostgreSQL: one `REPEATABLE READ READ ONLY` transaction; its first query fixes the snapshot,
and every table is exported with `COPY … TO STDOUT` (text format) inside it. Restore recreates
the schema with the migrations at the backup's revision, `COPY … FROM STDIN` in foreign-key
order, moves the id sequences past the restored ids and migrates to the newest schema, all in
one transaction. See docs/adr/0011-backup-and-restore.md for why not pg_dump.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from psycopg import sql
from sqlalchemy import MetaData, create_engine, inspect, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError as SAOperationalError
from sqlalchemy.pool import NullPool

from core import db
from core.backup.archive import (
    BLOCK,
    BackupError,
    FileWriter,
    ProgressFn,
    no_progress,
    space_error,
)
from core.settings import Settings

SQLITE_FILE = "database.sqlite3"
PG_DIR = "database"
SQLITE_PAGES_PER_STEP = 1024
VERSION_TABLE = "alembic_version"

COUNT_QUERIES = {
    "libraries": "SELECT count(*) FROM library",
    "documents": "SELECT count(*) FROM document WHERE status <> 'deleted'",
    "documents_ready": "SELECT count(*) FROM document WHERE status = 'ready'",
    "chunks": "SELECT count(*) FROM chunk",
    "users": 'SELECT count(*) FROM "user"',
}


def database_kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(f"backups support SQLite and PostgreSQL, not {backend}")
    return backend


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError(f"{url} is not a SQLite file; there is nothing to back up")
    return Path(database)


def _pg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_where(url: str) -> str:
    u = make_url(url)
    return f"{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


def _unreachable(url: str, exc: Exception) -> BackupError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BackupError(
        f"cannot reach the database at {_pg_where(url)} ({reason}); check that PostgreSQL is "
        "running and that ZHIKU_DATABASE_URL points at it, then run the command again"
    )


class DatabaseSnapshot(ABC):
    """A read-only view of the database fixed at the moment it was opened."""

    kind = ""

    def __init__(self, conn: Any, url: str):
        self.conn = conn
        self.url = url
        self._revision = self._scalar(f"SELECT version_num FROM {VERSION_TABLE}")

    def _scalar(self, query: str) -> Any:
        rows = self._rows(query)
        return rows[0][0] if rows else None

    def _rows(self, query: str) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(query)
            return list(cur.fetchall())
        finally:
            cur.close()

    @property
    def revision(self) -> str:
        return str(self._revision)

    def library_ids(self) -> set[int]:
        return {int(r[0]) for r in self._rows("SELECT id FROM library")}

    def original_digests(self) -> set[str]:
        """The originals the snapshot's documents refer to (deleted ones too: their rows stay)."""
        return {str(r[0]) for r in self._rows("SELECT DISTINCT sha256 FROM document")}

    def counts(self) -> dict[str, int]:
        out = {name: int(self._scalar(q)) for name, q in COUNT_QUERIES.items()}
        out["originals"] = len(self.original_digests())
        return out

    @abstractmethod
    def estimated_bytes(self) -> int: ...

    @abstractmethod
    def dump(self, writer: FileWriter, progress: ProgressFn = no_progress) -> dict[str, Any]: ...

    def close(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


class SqliteSnapshot(DatabaseSnapshot):
    kind = "sqlite"

    def __init__(self, path: Path, url: str):
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("BEGIN")  # the first read below fixes the snapshot
            super().__init__(conn, url)
        except BaseException:
            conn.close()
            raise
        self.path = path

    def estimated_bytes(self) -> int:
        page_size = int(self._scalar("PRAGMA page_size"))
        return page_size * int(self._scalar("PRAGMA page_count"))

    def dump(self, writer: FileWriter, progress: ProgressFn = no_progress) -> dict[str, Any]:
        target = writer.root / SQLITE_FILE
        dst = sqlite3.connect(target)
        try:

            def step(_status: int, remaining: int, total: int) -> None:
                progress("database", total - remaining, total)

            # Through our connection, which holds the read transaction: the copy is the
            # snapshot, not whatever the writers committed since.
            self.conn.backup(dst, pages=SQLITE_PAGES_PER_STEP, progress=step)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc).lower():
                raise space_error(writer.root) from exc
            raise
        finally:
            dst.close()
        writer.record(SQLITE_FILE)
        return {
            "kind": self.kind,
            "revision": self.revision,
            "file": SQLITE_FILE,
            "sqlite_version": sqlite3.sqlite_version,
        }

    def close(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()


class PostgresSnapshot(DatabaseSnapshot):
    kind = "postgresql"

    def __init__(self, url: str):
        try:
            conn = psycopg.connect(_pg_conninfo(url), connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise _unreachable(url, exc) from None
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            super().__init__(conn, url)  # its first query fixes the snapshot
        except BaseException:
            conn.close()
            raise

    def tables(self) -> list[str]:
        return [
            str(r[0])
            for r in self._rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
            )
        ]

    def columns(self, table: str) -> list[str]:
        cur = self.conn.cursor()
        try:
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = %s ORDER BY ordinal_position",
                (table,),
            )
            return [str(r[0]) for r in cur.fetchall()]
        finally:
            cur.close()

    def estimated_bytes(self) -> int:
        # bytea is written as hex in COPY's text format: up to twice its size on disk
        return 2 * int(self._scalar("SELECT pg_database_size(current_database())"))

    def dump(self, writer: FileWriter, progress: ProgressFn = no_progress) -> dict[str, Any]:
        try:
            return self._dump(writer, progress)
        except psycopg.OperationalError as exc:  # the server went away half-way
            raise _unreachable(self.url, exc) from None

    def _dump(self, writer: FileWriter, progress: ProgressFn) -> dict[str, Any]:
        tables = self.tables()
        out: list[dict[str, Any]] = []
        progress("database", 0, len(tables))
        for i, table in enumerate(tables, 1):
            columns = self.columns(table)
            query = sql.SQL("COPY {} ({}) TO STDOUT").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            rel = f"{PG_DIR}/{table}.copy"
            rows = 0
            with writer.open(rel) as f, self.conn.cursor() as cur, cur.copy(query) as copy:
                for block in copy:
                    data = bytes(block)
                    rows += data.count(b"\n")  # text format: one line per row
                    f.write(data)
            out.append({"name": table, "columns": columns, "rows": rows, "file": rel})
            progress("database", i, len(tables))
        return {
            "kind": self.kind,
            "revision": self.revision,
            "server_version": str(self._scalar("SHOW server_version")),
            "tables": out,
        }


def open_snapshot(settings: Settings) -> DatabaseSnapshot:
    """Fix a snapshot of the database now (close it when done)."""
    url = settings.db_url
    kind = database_kind(url)
    if kind == "sqlite":
        path = sqlite_path(url)
        if not path.is_file():
            raise BackupError(
                f"there is no database at {path}; check ZHIKU_DATA_DIR and ZHIKU_DATABASE_URL"
            )
        try:
            return SqliteSnapshot(path, url)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read the database at {path} ({exc})") from None
    try:
        return PostgresSnapshot(url)
    except psycopg.errors.UndefinedTable:
        raise BackupError(
            f"the database at {_pg_where(url)} has no Zhiku tables; check ZHIKU_DATABASE_URL"
        ) from None


@contextmanager
def snapshot(settings: Settings) -> Iterator[DatabaseSnapshot]:
    snap = open_snapshot(settings)
    try:
        yield snap
    finally:
        snap.close()


# ------------------------------------------------------------------------------ restore


def check_revision_known(settings: Settings, revision: str) -> None:
    """The backup's schema must be one this code's migrations know (older is fine)."""
    scripts = ScriptDirectory.from_config(db.alembic_config(settings))
    try:
        found = scripts.get_revision(revision)
    except CommandError:
        found = None
    if found is None:
        raise BackupError(
            f"the backup's database schema ({revision}) is newer than this Zhiku knows; "
            "restore it with the Zhiku version that made it (or a newer one)"
        )


def _sqlite_has_data(path: Path) -> list[str]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return [
            t
            for t in tables
            if t != VERSION_TABLE
            and conn.execute(f'SELECT EXISTS (SELECT 1 FROM "{t}")').fetchone()[0]
        ]
    finally:
        conn.close()


def _pg_tables_with_data(conn: Connection) -> list[str]:
    names = inspect(conn).get_table_names()
    preparer = conn.dialect.identifier_preparer
    return [
        t
        for t in names
        if t != VERSION_TABLE
        and conn.execute(text(f"SELECT EXISTS (SELECT 1 FROM {preparer.quote(t)})")).scalar()
    ]


def _pg_engine(url: str) -> Any:
    return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})


def _not_empty(where: str, tables: list[str]) -> BackupError:
    return BackupError(
        f"the database {where} already holds data (tables {', '.join(sorted(tables)[:5])}"
        f"{'…' if len(tables) > 5 else ''}); restore needs an empty database: create a new "
        "one and point ZHIKU_DATABASE_URL at it"
    )


def check_database_empty(settings: Settings, kind: str) -> None:
    """BackupError unless the target database is reachable, of `kind` and holds no rows."""
    url = settings.db_url
    target = database_kind(url)
    if target != kind:
        raise BackupError(
            f"this is a {kind} backup but ZHIKU_DATABASE_URL is {target}; a backup restores "
            f"into the same kind of database (moving between SQLite and PostgreSQL is not "
            "supported)"
        )
    if kind == "sqlite":
        path = sqlite_path(url)
        if path.exists() and (tables := _sqlite_has_data(path)):
            raise _not_empty(str(path), tables)
        return
    engine = _pg_engine(url)
    try:
        with engine.connect() as conn:
            if tables := _pg_tables_with_data(conn):
                raise _not_empty(_pg_where(url), tables)
    except SAOperationalError as exc:
        raise _unreachable(url, exc.orig or exc) from None
    finally:
        engine.dispose()


def restore_database(
    settings: Settings, src: Path, info: dict[str, Any], progress: ProgressFn = no_progress
) -> None:
    """Load the backup's database into the (empty) target and migrate it to the newest schema."""
    check_revision_known(settings, str(info["revision"]))
    if info["kind"] == "sqlite":
        _restore_sqlite(settings, src / str(info["file"]), progress)
    else:
        _restore_postgres(settings, src, info, progress)


def _restore_sqlite(settings: Settings, src_file: Path, progress: ProgressFn) -> None:
    path = sqlite_path(settings.db_url)
    db.dispose_engines()
    if path.exists():
        if tables := _sqlite_has_data(path):
            raise _not_empty(str(path), tables)
        for suffix in ("", "-wal", "-shm", "-journal"):  # an empty schema: replaced whole
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src_file}?mode=ro", uri=True)
    target = sqlite3.connect(path)
    try:

        def step(_status: int, remaining: int, total: int) -> None:
            progress("database", total - remaining, total)

        source.backup(target, pages=SQLITE_PAGES_PER_STEP, progress=step)
    except sqlite3.OperationalError as exc:
        target.close()
        path.unlink(missing_ok=True)
        if "full" in str(exc).lower():
            raise space_error(path.parent) from exc
        raise
    finally:
        source.close()
        target.close()
    path.chmod(0o600)
    db.migrate(settings)


def _restore_postgres(
    settings: Settings, src: Path, info: dict[str, Any], progress: ProgressFn
) -> None:
    url = settings.db_url
    tables: list[dict[str, Any]] = [t for t in info["tables"] if t["name"] != VERSION_TABLE]
    engine = _pg_engine(url)
    cfg = db.alembic_config(settings)
    try:
        with engine.begin() as conn:
            # Checked again inside the transaction that writes; an empty schema is replaced.
            if busy := _pg_tables_with_data(conn):
                raise _not_empty(_pg_where(url), busy)
            preparer = conn.dialect.identifier_preparer
            ours = {t["name"] for t in info["tables"]} | {VERSION_TABLE}
            for name in inspect(conn).get_table_names():
                if name in ours or name in _known_tables():
                    conn.execute(text(f"DROP TABLE {preparer.quote(name)} CASCADE"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, str(info["revision"]))

            meta = MetaData()
            meta.reflect(bind=conn)
            order = [t.name for t in meta.sorted_tables]
            by_name = {t["name"]: t for t in tables}
            missing = set(by_name) - set(order)
            if missing:
                raise BackupError(
                    f"the backup holds tables the schema {info['revision']} does not have "
                    f"({', '.join(sorted(missing))}); the backup does not match its manifest"
                )
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            done = 0
            progress("database", 0, len(tables))
            with raw.cursor() as cur:
                for name in order:
                    table = by_name.get(name)
                    if table is None:
                        continue
                    _copy_in(cur, src, table)
                    _bump_sequences(cur, name, table["columns"])
                    done += 1
                    progress("database", done, len(tables))
            command.upgrade(cfg, "head")
    except SAOperationalError as exc:
        raise _unreachable(url, exc.orig or exc) from None
    finally:
        engine.dispose()
        db.dispose_engines()


def _known_tables() -> set[str]:
    from sqlmodel import SQLModel

    import core.models  # noqa: F401  (registers the tables)

    return set(SQLModel.metadata.tables)


def _copy_in(cur: psycopg.Cursor[Any], src: Path, table: dict[str, Any]) -> None:
    query = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table["name"]), sql.SQL(", ").join(map(sql.Identifier, table["columns"]))
    )
    with (src / str(table["file"])).open("rb") as f, cur.copy(query) as copy:
        while block := f.read(BLOCK):
            copy.write(block)
    if cur.rowcount != int(table["rows"]):
        raise BackupError(
            f"table {table['name']}: restored {cur.rowcount} rows, the backup lists "
            f"{table['rows']}; the backup is damaged"
        )


def _bump_sequences(cur: psycopg.Cursor[Any], table: str, columns: list[str]) -> None:
    """Ids handed out after the restore must come after the restored ones."""
    quoted = sql.Identifier(table).as_string(cur)
    for column in columns:
        cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (quoted, column))
        row = cur.fetchone()
        if row is None or row[0] is None:
            continue
        cur.execute(
            sql.SQL("SELECT setval(%s, COALESCE(MAX({}), 0) + 1, false) FROM {}").format(
                sql.Identifier(column), sql.Identifier(table)
            ),
            (row[0],),
        )
