"""The one way command-line tools reach the database: configured, migrated, disposed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory.db import open_database
from callwright.settings import Settings

T = TypeVar("T")


def run_with_database(
    work: Callable[[AsyncEngine, Settings], Awaitable[T]],
    *,
    revision: str = "head",
    down: bool = False,
) -> T:
    """Run `work(engine, settings)` on the configured database and return its result.

    The database is migrated to `revision` first (down to it with `down`), and the engine
    is disposed of afterwards, also when `work` fails.
    """
    settings = Settings()

    async def run() -> T:
        async with open_database(settings.sqlalchemy_url, revision=revision, down=down) as engine:
            return await work(engine, settings)

    return asyncio.run(run())
