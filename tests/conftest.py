import os

import pytest

import callwright.admin.models  # noqa: F401  (registers the admin tables on the memory Base)
from callwright.testing.twilio_rest import TwilioRestStandIn
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    create_pg_database,
    drop_pg_database,
    pg_available,
    start_server,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_passed = 0


def pytest_collection_modifyitems(items):
    # End-to-end tests are real-time calls on a 2-core machine: one retry absorbs a
    # scheduling hiccup; a real failure fails twice.
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


def pytest_runtest_logreport(report):
    global _passed
    if report.when == "call" and report.passed:
        _passed += 1


def pytest_sessionfinish(session, exitstatus):
    # CI must fail when nothing actually ran (all skipped, or nothing collected).
    if exitstatus == 0 and _passed == 0 and not session.config.option.collectonly:
        print("\nNo test passed: failing the run.")
        session.exitstatus = 1


@pytest.fixture(scope="session")
async def rest_standin():
    standin = TwilioRestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    await standin.serve()
    yield standin
    await standin.stop()


@pytest.fixture(scope="session")
async def server(tmp_path_factory, rest_standin):
    server = start_server(tmp_path_factory.mktemp("server"), rest_url=rest_standin.base_url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def cascade():
    """The embedded cascade, its models loaded in the test process."""
    from callwright.agent import models
    from callwright.agent.backends.cascade import EmbeddedCascade
    from callwright.agent.model_host import ModelHost
    from callwright.agent.policy import Receptionist

    backend = EmbeddedCascade(
        host=ModelHost(paths=models.resolve(), processes=0), policy_factory=Receptionist
    )
    await backend.load()
    return backend


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request, tmp_path):
    """A fresh, empty database on each engine; PostgreSQL is skipped only if none answers."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    if not await pg_available():
        pytest.skip("no PostgreSQL server answers at 127.0.0.1:5432")
    url = await create_pg_database()
    yield url
    await drop_pg_database(url)
