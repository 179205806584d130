"""The `callwright` command."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import typer

from callwright.admin.cli import users_app
from callwright.flows.cli import app as flows_app
from callwright.memory_cli import memory_app

app = typer.Typer(help="callwright: phone agents on streaming audio LLMs.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
token_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(users_app, name="users")
app.add_typer(memory_app, name="memory")
app.add_typer(flows_app, name="flows")



def _settings(**overrides):
    from callwright.settings import Settings

    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to bind (CALLWRIGHT_HOST)."),
    port: int = typer.Option(None, help="Port (CALLWRIGHT_PORT)."),
) -> None:
    """Serve the Twilio webhook, media streams and API."""
    from callwright.server import create_server

    settings = _settings(host=host, port=port)
    try:
        server = create_server(settings)
    except ValueError as exc:  # settings that cannot work together: say which, no traceback
        typer.echo(f"callwright serve: {exc}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(server.serve())


@app.command()
def call(
    wav: list[Path] = typer.Option(..., exists=True, dir_okay=False,
                                   help="Caller speech; repeat for several lines."),
    url: str = typer.Option(None, help="A running server; default: start one in-process."),
    api_token: str = typer.Option(None, envvar="CALLWRIGHT_API_TOKEN",
                                  help="Bearer token to read a running server's transcript."),
) -> None:
    """Call the agent as a Twilio caller, playing WAV files, and print the transcript."""
    import httpx

    try:
        asyncio.run(_call(wav, url, api_token))
    except httpx.ConnectError as exc:
        typer.echo(f"No server answers at {url} ({exc}).", err=True)
        raise typer.Exit(1) from None
    except httpx.HTTPStatusError as exc:
        why = exc.response.status_code
        hint = (" The signature did not match: use the server's TWILIO_AUTH_TOKEN, and the "
                "URL it has as PUBLIC_URL.") if why == 403 else ""
        typer.echo(f"The server refused the call's webhook ({why}).{hint}", err=True)
        raise typer.Exit(1) from None


async def _call(wavs: list[Path], url: str | None, api_token: str | None) -> None:
    from callwright.memory.db import open_database
    from callwright.memory.store import CallStore
    from callwright.server import create_server
    from callwright.testing.line_audio import load_wav_8k
    from callwright.testing.twilio_emulator import TwilioCaller
    from callwright.testing.twilio_rest import TwilioRestStandIn

    lines = [load_wav_8k(path) for path in wavs]
    tasks: list[asyncio.Task] = []
    server = None
    if url is None:
        # A throwaway server with its own database and a local stand-in for Twilio's API.
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="callwright-call-"))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        settings = _settings(port=port, data_dir=data_dir, public_url=f"http://127.0.0.1:{port}")
        rest = TwilioRestStandIn(account_sid=settings.twilio_sid, auth_token=settings.twilio_token)
        await rest.serve()
        settings = _settings(port=port, data_dir=data_dir, public_url=settings.base_url,
                             twilio_api_base_url=rest.base_url)
        server = create_server(settings, quiet=True)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not server.started:
            await asyncio.sleep(0.05)
        url = settings.base_url
        async with open_database(settings.sqlalchemy_url) as engine:
            api_token = await CallStore(engine).create_api_token("callwright call")
    else:
        settings = _settings()
    caller = TwilioCaller(base_url=url, auth_token=settings.twilio_token,
                          account_sid=settings.twilio_sid)
    typer.echo(f"Calling {url} as {caller.from_number} ({caller.call_sid})")
    printer = asyncio.create_task(_print_turns(url, caller.call_sid, api_token))
    try:
        result = await caller.call(lines, end_timeout_s=5.0)
        await asyncio.sleep(1.0)  # the last turn reaches the database just after hang-up
    finally:
        printer.cancel()
    await _print_turns(url, caller.call_sid, api_token, once=True)
    for i, ms in enumerate(result.latencies_ms, 1):
        typer.echo(f"voice-to-voice after line {i}: {ms:.0f} ms")
    typer.echo(f"hung up by {result.hung_up_by}; marks echoed: {result.marks_echoed}; "
               f"protocol errors: {result.errors or 'none'}")
    if server:
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await rest.stop()


_printed: dict[str, int] = {}


async def _print_turns(url: str, call_sid: str, token: str | None, once: bool = False) -> None:
    import httpx

    if not token:
        if once:
            typer.echo("(no API token: set CALLWRIGHT_API_TOKEN to print the transcript)")
        return
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        while True:
            response = await client.get("/api/calls", params={"call_sid": call_sid})
            if response.status_code in (401, 403):
                if once:
                    typer.echo(f"(the server refused the API token ({response.status_code}): "
                               "create one there with `callwright token create`)")
                return
            calls = response.json()
            if calls:
                detail = (await client.get(f"/api/calls/{calls[0]['id']}")).json()
                for turn in detail["turns"][_printed.get(call_sid, 0):]:
                    cut = "  [interrupted]" if turn["interrupted"] else ""
                    typer.echo(f"{turn['start_ms'] / 1000:7.2f}s {turn['speaker']:>6}: "
                               f"{turn['text']}{cut}")
                _printed[call_sid] = len(detail["turns"])
            if once:
                return
            await asyncio.sleep(0.5)


@app.command("model-server")
def model_server(
    backend: str = typer.Option(..., help="qwen-omni | funaudiochat | embedded, or one you "
                                "registered (callwright.register_backend)"),
    port: int = typer.Option(8765, help="Port for ws://HOST:PORT/session and /health."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    model_path: Path = typer.Option(None, envvar="MODEL_PATH",
                                    help="Local checkpoint directory (nothing is downloaded)."),
    device: str = typer.Option("cpu", envvar="MODEL_DEVICE", help="cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("auto", help="auto, bfloat16, float16, float32."),
    max_sessions: int = typer.Option(1, help="Conversations at a time on this model."),
    max_text_tokens: int = typer.Option(256, help="Text tokens per turn at most."),
    max_speech_codes: int = typer.Option(2048, help="Speech codes per turn at most."),
    fac_source_dir: Path = typer.Option(None, envvar="FAC_SOURCE_DIR",
                                        help="Fun-Audio-Chat source checkout."),
    fac_cosyvoice_dir: Path = typer.Option(None, envvar="FAC_COSYVOICE_DIR",
                                           help="Fun-CosyVoice3-0.5B directory."),
    fac_speaker_path: Path = typer.Option(None, envvar="FAC_SPEAKER_PATH",
                                          help="Speaker x-vector (.pt) for Fun-Audio-Chat."),
    secret_file: Path = typer.Option(
        None, envvar="MODEL_WORKER_SECRET_FILE",
        help="File holding the shared secret sessions must present (else MODEL_WORKER_SECRET); "
             "required unless --host is loopback."),
    tls_cert: Path = typer.Option(None, envvar="MODEL_WORKER_TLS_CERT",
                                  help="PEM certificate (chain): serve wss://."),
    tls_key: Path = typer.Option(None, envvar="MODEL_WORKER_TLS_KEY",
                                 help="PEM private key for --tls-cert."),
    advertise: str = typer.Option(
        "", envvar="MODEL_WORKER_ADVERTISE",
        help="URL the call servers reach this worker at (ws[s]://host:port): joins their "
             "pools through REDIS_URL, and leaves them on SIGTERM. Needs the shared secret."),
    redis_url: str = typer.Option("", envvar="REDIS_URL", help="The call servers' Redis."),
    drain_seconds: float = typer.Option(
        300.0, envvar="MODEL_WORKER_DRAIN_SECONDS",
        help="On SIGTERM, how long open sessions may go on (no new ones are taken)."),
    log_level: str = typer.Option("INFO", envvar="LOG_LEVEL"),
    log_format: str = typer.Option("text", envvar="LOG_FORMAT", help='"text" or "json".'),
) -> None:
    """Run a model worker that hosts one audio-LLM backend (see README, "Audio LLM backends")."""
    from callwright import logs
    from callwright.agent.backends.registry import BackendContext, ModelOptions, create_backend
    from callwright.agent.workers.hosted import run_worker, tls_context, worker_secret
    from callwright.agent.workers.server import is_loopback
    from callwright.settings import Settings

    if log_format not in ("text", "json"):
        raise typer.BadParameter(f'LOG_FORMAT is "text" or "json", not {log_format!r}')
    logs.configure(log_level, log_format)
    try:
        secret = worker_secret(secret_file)
        tls = tls_context(tls_cert, tls_key)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if secret is None and not is_loopback(host):  # before loading a model for minutes
        raise typer.BadParameter(f"--host {host} needs a shared secret: MODEL_WORKER_SECRET "
                                 "or --secret-file (README, 'Model workers')")
    if advertise and (secret is None or not redis_url):
        raise typer.BadParameter("--advertise needs REDIS_URL and a shared secret "
                                 "(MODEL_WORKER_SECRET or --secret-file), which signs the entry")
    options = ModelOptions(
        model_path=model_path, device=device, dtype=dtype, max_text_tokens=max_text_tokens,
        max_speech_codes=max_speech_codes, fac_source_dir=fac_source_dir,
        fac_cosyvoice_dir=fac_cosyvoice_dir, fac_speaker_path=fac_speaker_path,
    )
    try:
        hosted = create_backend(backend, BackendContext(settings=Settings(), model=options))
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    asyncio.run(run_worker(hosted, host=host, port=port, max_sessions=max_sessions,
                           secret=secret, tls=tls, advertise=advertise.rstrip("/"),
                           redis_url=redis_url, drain_s=drain_seconds))


@app.command()
def dial(
    number: str = typer.Argument(..., help="E.164 number to call (must match OUTBOUND_ALLOW)."),
    flow: Path = typer.Option(None, "--flow", help="The flow the agent runs on the call."),
    var: list[str] = typer.Option(
        [], "--var", metavar="NAME=VALUE",
        help="A variable the flow reads as caller.NAME (repeatable): --var day=2026-12-03.",
    ),
    url: str = typer.Option(None, help="The running server (default: its configured URL)."),
    api_token: str = typer.Option(..., envvar="CALLWRIGHT_API_TOKEN",
                                  help="Bearer token (callwright token create)."),
) -> None:
    """Place an outbound call through a running server."""
    import httpx

    variables = dict(item.partition("=")[::2] for item in var)
    if not all(variables) or any("=" not in item for item in var):
        raise typer.BadParameter("expected NAME=VALUE", param_hint="--var")
    base = url or f"http://{_settings().host}:{_settings().port}"
    response = httpx.post(
        f"{base}/api/calls/outbound", headers={"Authorization": f"Bearer {api_token}"},
        json={"to": number, "flow": flow.stem if flow else None, "variables": variables},
        timeout=30,
    )
    if response.status_code != 201:
        typer.echo(f"Refused: HTTP {response.status_code} {response.json().get('detail')}",
                   err=True)
        raise typer.Exit(1)
    placed = response.json()
    typer.echo(f"Dialling: call {placed['id']} ({placed['call_sid']})")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION."""
    from callwright.database import run_with_database

    run_with_database(_nothing, revision=revision)


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(...)) -> None:
    """Revert migrations down to REVISION ('base' for an empty database)."""
    from callwright.database import run_with_database

    run_with_database(_nothing, revision=revision, down=True)


async def _nothing(engine, settings) -> None:  # noqa: ANN001 - migrating is the work
    return None


@token_app.command("create")
def token_create(name: str = typer.Option("cli", help="A label for the token.")) -> None:
    """Create an API bearer token and print it (only its hash is stored)."""
    from callwright.database import run_with_database
    from callwright.memory.store import CallStore

    async def create(engine, settings) -> str:  # noqa: ANN001
        return await CallStore(engine).create_api_token(name)

    typer.echo(run_with_database(create))
