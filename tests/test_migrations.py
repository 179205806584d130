"""Migrations go up from empty and back down, on SQLite and PostgreSQL."""

from sqlalchemy import inspect

from callwright.memory.db import create_engine, migrate
from callwright.memory.models import Base


async def _tables(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_upgrade_and_downgrade(database_url):
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        tables = await _tables(engine)
        assert set(Base.metadata.tables) <= tables
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)}
                           for t in Base.metadata.tables}
            )
        for name, table in Base.metadata.tables.items():
            assert {c.name for c in table.columns} == columns[name], name
        await migrate(engine, "base", down=True)
        assert await _tables(engine) <= {"alembic_version"}
    finally:
        await engine.dispose()
