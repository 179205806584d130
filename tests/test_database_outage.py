"""The database goes away mid-call: the caller hears no difference, and no turn is lost."""

import asyncio

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
