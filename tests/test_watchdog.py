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
