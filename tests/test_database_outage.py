"""The database goes away mid-call: the caller hears no difference, and no turn is lost."""

import asyncio
import sqlite3
import time

import asyncpg
import pytest

from tests.support import (
    PG_ADMIN_URL,
    caller,
    create_pg_database,
    drop_pg_database,
    pg_available,
    speech_8k,
    start_server,
)

pytestmark = pytest.mark.e2e
LOCK_S = 9.0  # the first caller line and its reply


async def _set_reachable(name: str, reachable: bool) -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


async def test_turns_wait_for_the_database_to_come_back(tmp_path, rest_standin):
    if not await pg_available():
        pytest.skip("no PostgreSQL server answers at 127.0.0.1:5432")
    url = await create_pg_database()
    name = url.rsplit("/", 1)[1]
    server = start_server(tmp_path, database_url=url, rest_url=rest_standin.base_url)
    try:
        twilio = caller(server)
        outage = asyncio.Event()

        async def take_database_away() -> None:
            await asyncio.sleep(4)  # once the greeting is under way
            await _set_reachable(name, False)
            outage.set()
            await asyncio.sleep(14)  # two caller lines and replies
            await _set_reachable(name, True)

        away = asyncio.create_task(take_database_away())
        result = await twilio.call([
            speech_8k("What time do you open on Sunday?"),
            speech_8k("I would like to make a booking."),
            speech_8k("No thanks goodbye."),
        ])
        await away
        assert outage.is_set()
        # Every line got its answer, database or not.
        assert result.errors == [] and result.hung_up_by == "agent"
        assert len(result.latencies_ms) == 3
        for _ in range(100):
            call = await server.call_by_sid(twilio.call_sid)
            if call["ended_at"] and len(call["turns"]) == 7:
                break
            await asyncio.sleep(0.3)
        assert [t["speaker"] for t in call["turns"]] == ["agent", "caller"] * 3 + ["agent"]
        assert [t["seq"] for t in call["turns"]] == list(range(1, 8))
        assert call["end_reason"] == "agent-hangup"
        assert "retrying" in server.log()  # the writer really did hold the turns
    finally:
        server.stop()
        await _set_reachable(name, True)
        await drop_pg_database(url)


async def test_turns_wait_out_a_locked_sqlite_file(tmp_path, rest_standin):
    """Another process holds the SQLite file's write lock through a caller line and its
    reply: the reply comes as usual, nothing is stored meanwhile, every turn lands once after."""
    db = tmp_path / "calls.db"
    server = start_server(tmp_path, database_url=f"sqlite+aiosqlite:///{db}",
                          rest_url=rest_standin.base_url)
    try:
        twilio = caller(server)
        held: dict[str, float | int] = {}

        async def lock_the_file() -> None:
            await asyncio.sleep(4)  # once the greeting is under way
            other = sqlite3.connect(db, isolation_level=None, timeout=5)
            try:
                other.execute("BEGIN EXCLUSIVE")  # what a long write elsewhere holds
                held["from"], held["stored_before"] = time.monotonic(), _turn_count(other)
                await asyncio.sleep(LOCK_S)
                held["stored_during"] = _turn_count(other)
                held["until"] = time.monotonic()
                other.execute("COMMIT")
            finally:
                other.close()

        locker = asyncio.create_task(lock_the_file())
        result = await twilio.call([
            speech_8k("What time do you open on Sunday?"),
            speech_8k("No thanks goodbye."),
        ])
        await locker
        assert result.errors == [] and result.hung_up_by == "agent"
        assert len(result.latencies_ms) == 2
        # The reply that began while the file was locked came as fast as any other.
        during = [u for u in result.utterances if held["from"] < u.started < held["until"]]
        assert during, [u.started - held["from"] for u in result.utterances]
        assert max(result.latencies_ms) < 3000, result.latencies_ms
        assert held["stored_during"] == held["stored_before"]  # the lock really held them
        for _ in range(100):
            call = await server.call_by_sid(twilio.call_sid)
            if call["ended_at"] and len(call["turns"]) == 5:
                break
            await asyncio.sleep(0.3)
        assert [t["speaker"] for t in call["turns"]] == ["agent", "caller"] * 2 + ["agent"]
        assert [t["seq"] for t in call["turns"]] == list(range(1, 6))
        print(f"\nlatencies with the file locked: {[round(ms) for ms in result.latencies_ms]} ms")
        assert call["end_reason"] == "agent-hangup"
    finally:
        server.stop()


def _turn_count(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT count(*) FROM turns").fetchone()[0]
