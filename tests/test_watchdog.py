"""The loop watchdog counts a stall and logs where the loop was held."""

import asyncio
import time

from loguru import logger

from callwright.watchdog import LoopWatchdog


def _blocks_the_loop() -> None:
    time.sleep(0.3)


async def test_a_blocking_call_is_counted_and_named():
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING")
    watchdog = LoopWatchdog(period_s=0.01, warn_after_s=0.1)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)
        _blocks_the_loop()
        await asyncio.sleep(0.05)
    finally:
        await watchdog.stop()
        logger.remove(sink)
    assert watchdog.stalls == 1 and watchdog.worst_lag_ms > 250
    assert watchdog.recent_lag_ms(0.5) < 50  # one stall, not a slow loop
    assert any("_blocks_the_loop" in line for line in lines), lines


def _holds_a_view_while_blocking(buffer: bytearray) -> None:
    view = memoryview(buffer)  # exports the buffer, as np.frombuffer does
    time.sleep(0.3)
    assert len(view) == 320  # still a local when the function returns


async def test_a_reported_stall_leaves_the_stalled_code_its_buffers():
    """The stack is logged, and the stalled call's locals die with it: a buffer it viewed
    can grow again (a frame kept by the watchdog kept a call's audio buffer exported)."""
    buffer = bytearray(b"\0" * 320)
    watchdog = LoopWatchdog(period_s=0.01, warn_after_s=0.1)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)
        _holds_a_view_while_blocking(buffer)
        await asyncio.sleep(0.2)  # the watchdog has looked at the stalled frame by now
        for _ in range(10):
            buffer += b"\0" * 320  # BufferError while any view of it is alive
            del buffer[:320]
            await asyncio.sleep(0.01)
    finally:
        await watchdog.stop()
    assert watchdog.stalls == 1
