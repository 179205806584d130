"""Notices when the event loop stalls, and says what it was doing.

Every call's audio goes out from one event loop: a callback that holds it for 100 ms is
a 100 ms hole in every caller's ear. A heartbeat task stamps the time every `period_s`;
a plain thread checks the stamp and, once it is older than `warn_after_s`, logs the loop
thread's stack at that moment (once per stall). `/healthz` reports the worst lag seen.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

from loguru import logger


class LoopWatchdog:
    """Measures how late the event loop runs, and logs where it is stuck when it stalls.

    Args:
        period_s: The heartbeat's interval.
        warn_after_s: Lateness that counts as a stall: logged, counted in `stalls`, and
            the loop thread's stack logged once per stall.
        on_lag: Hears each heartbeat's lateness in seconds, on the loop (a metric's
            `observe`, say); it must be quick.

    Attributes:
        worst_lag_ms: The most a heartbeat has been late so far.
    """

    def __init__(
        self,
        *,
        period_s: float = 0.02,
        warn_after_s: float = 0.1,
        on_lag: Callable[[float], None] | None = None,
    ):
        self._period = period_s
        self._on_lag = on_lag
        self._warn_after = warn_after_s
        self._beat = time.monotonic()
        self._loop_thread = 0  # set by start(), on the loop's thread
        self._task: asyncio.Task | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._recent_ms: deque[float] = deque(maxlen=int(60 / period_s))  # the last minute
        self.worst_lag_ms = 0.0
        self.stalls = 0  # heartbeats later than warn_after_s

    def start(self) -> None:
        """Start the heartbeat task and the watching thread; call once, on the loop to watch."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        self._thread.start()

    async def stop(self) -> None:
        """Stop the heartbeat task and the watching thread, without waiting for them."""
        self._stop.set()
        if self._task:
            self._task.cancel()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            now = time.monotonic()
            lag = now - self._beat - self._period
            self.worst_lag_ms = max(self.worst_lag_ms, lag * 1000)
            self._recent_ms.append(lag * 1000)
            if self._on_lag:
                self._on_lag(lag)
            if lag > self._warn_after:
                self.stalls += 1
                logger.warning(f"Event loop stalled {lag * 1000:.0f} ms")
            self._beat = now

    def recent_lag_ms(self, q: float) -> float:
        """The q-quantile of the heartbeat's lateness over the last minute."""
        lags = sorted(self._recent_ms)
        return lags[min(len(lags) - 1, int(q * len(lags)))] if lags else 0.0

    def _watch(self) -> None:
        reported = 0.0  # the heartbeat a stack was logged for
        while not self._stop.wait(self._warn_after / 2):
            beat = self._beat
            if time.monotonic() - beat < self._warn_after or beat == reported:
                continue
            reported = beat
            if stack := self._loop_stack():
                logger.warning(f"Event loop busy for over {self._warn_after * 1000:.0f} ms "
                               f"in:\n{stack}")

    def _loop_stack(self) -> str:
        """The loop thread's innermost calls now, as text.

        No frame outlives this: a frame kept (in a variable until the next stall) keeps
        its locals alive, and a numpy view among them keeps its buffer exported, so the
        next `bytearray +=` on that buffer fails (pipecat's volume tracker: every frame of
        that call's audio refused).
        """
        frame = sys._current_frames().get(self._loop_thread)
        try:
            return "" if frame is None else "".join(traceback.format_stack(frame)[-12:])
        finally:
            del frame
