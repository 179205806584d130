"""Log setup: loguru for our code and pipecat's, at a level the user picks."""

from __future__ import annotations

import sys

from loguru import logger


def configure(level: str = "INFO") -> None:
    """Send loguru's log (ours and pipecat's) to stderr, from `level` up.

    It replaces every handler added before, loguru's default one included.

    Args:
        level: A loguru level name, in any case ("debug", "WARNING").
    """
    logger.remove()
    logger.add(sys.stderr, level=level.upper(),
               format="{time:HH:mm:ss.SSS} {level: <7} {name}: {message}")
