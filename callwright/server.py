"""uvicorn with a graceful drain: on SIGTERM, refuse new calls and let running ones end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from loguru import logger

from callwright import logs
from callwright.settings import Settings
from callwright.telephony.lines import Lines

if TYPE_CHECKING:
    from callwright.agent.pipeline import PipelineStep

CLOSE_CONNECTIONS_S = 2.0  # after the drain, how long open sockets get to close
WS_MAX_BYTES = 1 << 20  # Twilio's messages are small; refuse anything absurd at the socket


class DrainingServer(uvicorn.Server):
    """The first SIGTERM/SIGINT starts a drain of up to `grace_s`; a second one stops at once.

    While draining, the voice webhook answers "all lines are busy" and the server stops
    as soon as no call is left. Calls still running at the bound are cut off; the next
    start marks them interrupted.
    """

    def __init__(self, config: uvicorn.Config, *, lines: Lines, grace_s: float):
        config.timeout_graceful_shutdown = CLOSE_CONNECTIONS_S
        super().__init__(config)
        self._lines = lines
        self._grace_s = grace_s
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Start the drain on the first signal; pass a later one to uvicorn (stop, force exit)."""
        if self._drain_until is None and not self.should_exit:
            self._drain_until = time.monotonic() + self._grace_s
            self._lines.drain()
            logger.info(f"Stopping: no new calls; waiting up to {self._grace_s:.0f} s for "
                        f"{self._lines.in_use} running calls (signal again to stop now)")
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """While draining, exit once no call is left or `grace_s` is up (cutting off the rest)."""
        if self._drain_until is not None and not self.should_exit:
            left = self._lines.in_use
            if left == 0 or time.monotonic() >= self._drain_until:
                if left:
                    logger.warning(f"Stopping with {left} calls still running")
                    self._lines.cut_off()
                self.should_exit = True
        return await super().on_tick(counter)


def create_server(
    settings: Settings | None = None, *, steps: Sequence[PipelineStep] = (), quiet: bool = False
) -> DrainingServer:
    """The app of `create_app` in a uvicorn server that drains on SIGTERM.

    Args:
        settings: defaults to `Settings()`, read from the environment and `.env`.
        steps: your own per-call pipeline steps (see `PipelineStep`).
        quiet: log warnings only, and no access log.

    Returns:
        A server to run with `await server.serve()`.
    """
    settings = settings or Settings()
    # Before the app's imports: pipecat logs as it is imported, in the chosen format.
    logs.configure("WARNING" if quiet else settings.log_level, settings.log_format)
    from callwright.app import create_app  # the models' imports: only once a server is wanted

    application = create_app(settings, steps=steps)
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        ws_max_size=WS_MAX_BYTES,
        # Base64 μ-law barely compresses; deflating every message of every call took
        # ~4% of the event loop's time at 12 calls.
        ws_per_message_deflate=False,
        log_level="warning" if quiet else "info",
        log_config=None,  # uvicorn logs through loguru (logs.configure): masked, maybe JSON
        access_log=not quiet,
        lifespan="on",
    )
    return DrainingServer(config, lines=application.state.lines, grace_s=settings.shutdown_grace_s)


def serve(settings: Settings | None = None, *, steps: Sequence[PipelineStep] = ()) -> None:
    """Answer calls until stopped (blocking): `callwright serve`, from your own Python.

    Args:
        settings: defaults to `Settings()`, read from the environment and `.env`.
        steps: your own per-call pipeline steps (see `PipelineStep`).
    """
    asyncio.run(create_server(settings, steps=steps).serve())
