"""Log setup: loguru for our code and pipecat's, at a level the user picks."""

from __future__ import annotations

import sys

from loguru import logger


def configure(level: str = "INFO") -> None:
    logger.remove()
    logger.add(sys.stderr, level=level.upper(),
               format="{time:HH:mm:ss.SSS} {level: <7} {name}: {message}")
