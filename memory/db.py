"""Engine, sessions and migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from loguru import logger
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x63616C6C  # "call": the advisory lock key migrations take on PostgreSQL


def async_url(url: str) -> str:
    """Accept the usual postgres:// spellings and run them on asyncpg."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout, enforced foreign keys and
    transactions that take the write lock at BEGIN (deferred ones, upgraded mid-way,
    stalled every pooled connection when calls started and ended together)."""
    url = async_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            dbapi_connection.isolation_level = None  # SQLAlchemy's own BEGIN, below

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    """Sessions on `engine` whose objects stay readable after commit (`expire_on_commit=False`)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, revision: str = "head", *, down: bool = False) -> None:
    """Run Alembic migrations up (or down) to `revision` on this engine."""

    def run(connection: Connection) -> None:
        cfg = _alembic_config(connection)
        if down:
            command.downgrade(cfg, revision)
        else:
            command.upgrade(cfg, revision)

    logger.info(f"Database: migrating {'down' if down else 'up'} to {revision}")
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Workers starting together on one database migrate one at a time (the lock
            # ends with the transaction); the others then find nothing left to do.
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        await conn.run_sync(run)


@asynccontextmanager
async def open_database(
    url: str, *, revision: str = "head", down: bool = False
) -> AsyncIterator[AsyncEngine]:
    """An engine on `url`, migrated to `revision` (up, or down with `down`) before use and
    disposed of afterwards, on error too. What every command-line tool runs in."""
    engine = create_engine(url)
    try:
        await migrate(engine, revision, down=down)
        yield engine
    finally:
        await engine.dispose()
