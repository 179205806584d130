"""Log setup: loguru for our code, pipecat's and the standard library's, as text or JSON.

Every message has its phone numbers masked before any sink sees it, whatever the format:
logs are shipped to places with wider access than the call records. `LOG_FORMAT=json`
writes one JSON object per line, carrying the call's SID and id when logged inside a call
(see `call_context`), for log pipelines (Loki, CloudWatch, Elasticsearch) to index.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Literal

from loguru import logger

from callwright.telephony.numbers import mask_number

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "{time:HH:mm:ss.SSS} {level: <7} {name}: {message}"
# E.164 numbers (also URL-encoded, as in an access log's path) and bare runs of 10 to 15
# digits, the length of a national or international number. Runs inside words (SIDs,
# hex ids) and decimals are left alone; a 13-digit epoch timestamp is masked too.
PHONE_NUMBER = re.compile(r"(?:\+|%2[Bb])[1-9]\d{6,14}(?!\d)|(?<![\w.])\d{10,15}(?![\w.])")


def mask_numbers(text: str) -> str:
    """`text` with every phone number in it masked ("+15550100089" → "…0089").

    Args:
        text: Any text, a log message say.

    Returns:
        The text, each number reduced to its last four digits.
    """
    return PHONE_NUMBER.sub(lambda match: mask_number(match.group(0)), text)


def configure(level: str = "INFO", log_format: LogFormat = "text") -> None:
    """Send loguru's log (ours and pipecat's) and the standard library's to stderr.

    It replaces every handler added before, loguru's default one included. Tracebacks
    leave out variable values (loguru's `diagnose`): they would put callers' numbers and
    secrets in the log.

    Args:
        level: A loguru level name, in any case ("debug", "WARNING").
        log_format: "text" for people, "json" for one JSON object per line.
    """
    logger.remove()
    logger.configure(patcher=_mask_record)
    level = level.upper()
    if log_format == "json":
        logger.add(_write_json, level=level, format="{message}", diagnose=False)
    else:
        logger.add(sys.stderr, level=level, format=TEXT_FORMAT, diagnose=False)
    # uvicorn, httpx, aiortc and alembic log through `logging`: send them through loguru
    # too, so they are masked and, in JSON mode, every line is JSON. Other libraries stay
    # at WARNING, as before: below it, httpx logs every URL it requests (a flow webhook's
    # may hold a key) and aiortc every packet. uvicorn sets its own loggers' levels.
    root_level = max(logger.level(level).no, logging.WARNING)
    logging.basicConfig(handlers=[_InterceptHandler()], level=root_level, force=True)
    logging.captureWarnings(True)


@contextmanager
def call_context(*, call_sid: str, call_id: int | None = None) -> Iterator[None]:
    """Tag every log record made inside the block, and in tasks started from it, with a call.

    Pipecat's tasks for the call's pipeline are created inside the block and inherit
    the tags (they live in a context variable).

    Args:
        call_sid: The call's SID (Twilio's CA…, or WR… for a browser call).
        call_id: The call's row id in the database, once it has one.
    """
    fields: dict[str, object] = {"call_sid": call_sid}
    if call_id is not None:
        fields["call_id"] = call_id
    with logger.contextualize(**fields):
        yield


def _mask_record(record: dict) -> None:
    record["message"] = mask_numbers(record["message"])
    for key, value in record["extra"].items():
        if isinstance(value, str):
            record["extra"][key] = mask_numbers(value)


def _write_json(message) -> None:
    """A loguru sink: the record as one line of JSON on stderr."""
    record = message.record
    entry = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "level": record["level"].name,
        "logger": record["name"],
        "message": record["message"],
        **{key: value for key, value in record["extra"].items() if not key.startswith("_")},
    }
    if record["exception"] is not None:
        kind, value, tb = record["exception"]
        entry["exception"] = mask_numbers("".join(traceback.format_exception(kind, value, tb)))
    # Looked up on each write, so that a test's or a supervisor's replaced stderr is used.
    sys.stderr.write(json.dumps(entry, default=str, ensure_ascii=False) + "\n")
    sys.stderr.flush()


class _InterceptHandler(logging.Handler):
    """Hands `logging` records to loguru, at their level and with their exception."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Find the caller outside the logging module, so loguru names the right place.
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())
