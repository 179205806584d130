"""Outbound calls: only to allowed numbers, at a capped rate, through Twilio's REST API."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from loguru import logger

from callwright.memory.store import CallStore
from callwright.telephony.numbers import allowed, mask_number
from callwright.telephony.twilio.rest import TwilioAccount, place_call


class DialRefused(Exception):
    """Raised by `Dialer.dial` when a call is not placed; the message says why.

    Attributes:
        status: The HTTP status to answer with: 403, 429 or 502.
    """

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class OutboundConfig:
    """How outbound calls are placed and limited.

    Attributes:
        from_number: The caller ID calls are placed from; empty refuses every call.
        calls_per_minute: The most calls a `Dialer` places in any 60 seconds.
        status_url: Twilio's status callback for the call's progress events.
        amd_url: Where Twilio posts an asynchronous answering-machine result.
        async_amd: Detect machines asynchronously (the agent speaks at once, the result
            arrives at `amd_url`) rather than have the voice webhook wait for it.
    """

    from_number: str
    allow: tuple[str, ...]  # glob patterns over E.164 numbers; empty: no outbound calls
    calls_per_minute: int
    voice_url: str  # our webhook: Twilio fetches the stream TwiML there once answered
    status_url: str
    amd_url: str
    machine_detection: str  # "" (off), "Enable" or "DetectMessageEnd"
    async_amd: bool


class Dialer:
    """Places outbound calls through Twilio's REST API and stores each as an outbound call.

    Only numbers matching `config.allow` are dialled. The rate cap is this Dialer's own,
    over a sliding minute: every attempt that reaches Twilio counts, failed or not.
    """

    def __init__(self, *, config: OutboundConfig, account: TwilioAccount, store: CallStore):
        self._config = config
        self._account = account
        self._store = store
        self._recent: deque[float] = deque()

    async def dial(
        self, to: str, *, flow: str | None = None, variables: dict | None = None
    ) -> tuple[int, str]:
        """Place a call; (call id, call SID). Raises DialRefused (403, 429, 502).

        `variables` reach the call's flow as `caller.<name>`."""
        config = self._config
        if not allowed(to, config.allow):
            logger.warning(f"outbound call to {mask_number(to)} refused: not in OUTBOUND_ALLOW")
            raise DialRefused(403, "destination not allowed (OUTBOUND_ALLOW)")
        if not config.from_number:
            raise DialRefused(403, "no caller number configured (TWILIO_FROM_NUMBER)")
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 60:
            self._recent.popleft()
        if len(self._recent) >= config.calls_per_minute:
            raise DialRefused(429, f"rate cap reached ({config.calls_per_minute} calls/minute)")
        self._recent.append(now)
        try:
            call_sid = await place_call(
                self._account, to=to, from_=config.from_number, url=config.voice_url,
                status_callback=config.status_url,
                machine_detection=config.machine_detection or None,
                amd_callback=config.amd_url if config.async_amd else None,
            )
        except Exception as exc:
            logger.error(f"outbound call to {mask_number(to)} failed: {exc}")
            raise DialRefused(502, "Twilio refused the call") from None
        call_id = await self._store.record_outbound(
            call_sid=call_sid, account_sid=self._account.account_sid,
            from_number=config.from_number, to_number=to, flow_name=flow,
            variables=variables,
        )
        logger.info(f"call {call_sid}: dialling {mask_number(to)}")
        return call_id, call_sid
