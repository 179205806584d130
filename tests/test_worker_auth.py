"""Model workers' transport: a shared secret on both ends, and TLS.

A worker in this process hosts a small stand-in backend; the pool connects to it as the
call server does. Sessions without the secret, or with a wrong one, are refused; with it
they run; over `wss://` the pool checks the worker's certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from loguru import logger
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    BackendBusy,
    Capabilities,
    EndOfTurn,
    Event,
    TurnRequest,
)
from callwright.agent.backends.worker_pool import WorkerPool
from callwright.agent.workers import protocol as p
from callwright.agent.workers.server import ModelWorker

SECRET = "s3cret-" + "x" * 36


def free_port() -> int:
    # Not tests.support's: this file also runs in the Fun-Audio-Chat worker's environment.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Beep(AudioLLM):
    """Answers every turn with 10 ms of audio."""

    name = "beep"
    capabilities = Capabilities()

    async def load(self) -> None:
        pass

    async def open_session(self) -> AudioLLMSession:
        return BeepSession()


class BeepSession(AudioLLMSession):
    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        yield AudioChunk(audio=bytes(320), sample_rate=16_000)
        yield EndOfTurn()

    async def cancel(self) -> None:
        pass


@pytest.fixture(autouse=True)
def no_secret_in_env(monkeypatch):
    monkeypatch.delenv(p.SECRET_ENV, raising=False)
    monkeypatch.delenv(p.CA_ENV, raising=False)


@pytest.fixture
def logs():
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    yield lines
    logger.remove(sink)


async def worker(*, secret: str | None = SECRET, tls: ssl.SSLContext | None = None):
    port = free_port()
    server = await ModelWorker(backend=Beep(), secret=secret).serve(
        host="127.0.0.1", port=port, tls=tls)
    return server, f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"


async def one_turn(pool: WorkerPool) -> list[Event]:
    session = await pool.open_session()
    try:
        return [e async for e in session.respond(TurnRequest(audio=bytes(3200)))]
    finally:
        await session.close()


async def test_a_session_without_the_secret_or_with_a_wrong_one_is_refused(logs):
    server, url = await worker()
    try:
        for secret in (None, "not-the-secret-but-long-enough"):
            with pytest.raises(BackendBusy, match="HTTP 401"):
                await WorkerPool(urls=[url], secret=secret).open_session()
        # The header must be a bearer token: the secret under another scheme is no good.
        with pytest.raises(InvalidStatus) as refused:
            await connect(url + p.SESSION_PATH,
                          additional_headers={"Authorization": f"Basic {SECRET}"})
        assert refused.value.response.status_code == 401
        assert refused.value.response.headers["WWW-Authenticate"] == "Bearer"
        events = await one_turn(WorkerPool(urls=[url], secret=SECRET))
        assert [type(e) for e in events] == [AudioChunk, EndOfTurn]
        async with httpx.AsyncClient() as client:  # health stays open for probes
            health = await client.get(url.replace("ws://", "http://") + p.HEALTH_PATH)
        assert health.json()["sessions"] == 0
    finally:
        server.close()
        await server.wait_closed()
    assert sum("refused a session" in line for line in logs) == 3
    assert not [line for line in logs if SECRET in line]  # the secret is never logged


async def test_the_pool_takes_the_secret_from_the_environment(monkeypatch):
    server, url = await worker()
    try:
        monkeypatch.setenv(p.SECRET_ENV, SECRET)
        events = await one_turn(WorkerPool(urls=[url]))
        assert isinstance(events[-1], EndOfTurn)
    finally:
        server.close()
        await server.wait_closed()


async def test_without_a_secret_a_worker_serves_only_loopback():
    with pytest.raises(ValueError, match="needs a shared secret"):
        await ModelWorker(backend=Beep()).serve(host="0.0.0.0", port=free_port())
    with pytest.raises(ValueError, match="at least 16 characters"):
        ModelWorker(backend=Beep(), secret="short")
    server, url = await worker(secret=None)  # development: loopback, no secret
    try:
        assert isinstance((await one_turn(WorkerPool(urls=[url])))[-1], EndOfTurn)
    finally:
        server.close()
        await server.wait_closed()


def test_model_server_refuses_to_listen_beyond_loopback_without_a_secret(tmp_path):
    from callwright.cli import app

    result = CliRunner().invoke(app, ["model-server", "--backend", "embedded", "--host",
                                      "0.0.0.0", "--port", str(free_port())])
    assert result.exit_code == 2 and "needs a shared secret" in result.output
    short = tmp_path / "secret"
    short.write_text("short\n")
    result = CliRunner().invoke(app, ["model-server", "--backend", "embedded",
                                      "--secret-file", str(short)])
    assert result.exit_code == 2 and "at least 16 characters" in result.output


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "model worker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "worker.pem", tmp / "worker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_wss_worker_with_a_certificate_the_pool_checks(tmp_path):
    from callwright.agent.workers.hosted import tls_context

    cert, key = self_signed(tmp_path)
    server, url = await worker(tls=tls_context(cert, key))
    try:
        pool = WorkerPool(urls=[url], secret=SECRET, ca_file=cert)
        await pool.load()
        assert pool.name == "workers:beep"  # /health over https, certificate checked
        events = await one_turn(pool)
        assert [type(e) for e in events] == [AudioChunk, EndOfTurn]
        # Without the worker's CA the pool does not trust it, secret or not.
        with pytest.raises(BackendBusy, match="CERTIFICATE_VERIFY_FAILED"):
            await WorkerPool(urls=[url], secret=SECRET).open_session()
        # TLS does not stand in for the secret.
        with pytest.raises(BackendBusy, match="HTTP 401"):
            await WorkerPool(urls=[url], ca_file=cert).open_session()
    finally:
        server.close()
        await server.wait_closed()
