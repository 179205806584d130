"""uvicorn with a graceful drain: on SIGTERM, refuse new calls and let running ones end."""

from __future__ import annotations

import time
from types import FrameType

import uvicorn
from loguru import logger

from callwright.telephony.lines import Lines

CLOSE_CONNECTIONS_S = 2.0  # after the drain, how long open sockets get to close


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
        if self._drain_until is None and not self.should_exit:
            self._drain_until = time.monotonic() + self._grace_s
            self._lines.drain()
            logger.info(f"Stopping: no new calls; waiting up to {self._grace_s:.0f} s for "
                        f"{self._lines.in_use} running calls (signal again to stop now)")
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and not self.should_exit:
            left = self._lines.in_use
            if left == 0 or time.monotonic() >= self._drain_until:
                if left:
                    logger.warning(f"Stopping with {left} calls still running")
                    self._lines.cut_off()
                self.should_exit = True
        return await super().on_tick(counter)
