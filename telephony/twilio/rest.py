"""Twilio's REST API through the official client, at a configurable base URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import Dial, VoiceResponse


@dataclass(frozen=True, kw_only=True)
class TwilioAccount:
    """A Twilio account's credentials and the REST API to reach it at.

    Attributes:
        account_sid: The account SID (`AC...`).
        auth_token: The account's auth token; it also signs Twilio's webhooks.
    """

    account_sid: str
    auth_token: str
    base_url: str  # https://api.twilio.com, or a stand-in in tests

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """A REST client for this account on its own async HTTP client, closed on exit."""
        http = AsyncTwilioHttpClient()
        client = Client(self.account_sid, self.auth_token, http_client=http)
        client.api.base_url = self.base_url.rstrip("/")
        try:
            yield client
        finally:
            await http.close()


def preload() -> None:
    """Import the client's call resources now: twilio loads them on first use, and that
    import held the event loop for ~170 ms under load, mid-call, at the first hang-up."""
    Client("AC" + "0" * 32, "preload").calls  # noqa: B018 - the attribute imports them


async def hang_up(account: TwilioAccount, call_sid: str) -> bool:
    """End a live call (Status=completed). A call that is already gone counts as done."""
    return await _update(account, call_sid, "hang-up", status="completed")


async def transfer(account: TwilioAccount, call_sid: str, to: str, *, caller_id: str = "") -> bool:
    """Cold transfer: replace the call's TwiML with `<Dial>`, which also ends the stream."""
    response = VoiceResponse()
    dial = Dial(caller_id=caller_id or None)
    dial.number(to)
    response.append(dial)
    return await _update(account, call_sid, "transfer", twiml=str(response))


async def place_call(
    account: TwilioAccount,
    *,
    to: str,
    from_: str,
    url: str,
    status_callback: str,
    machine_detection: str | None,
    amd_callback: str | None,
) -> str:
    """Start an outbound call whose TwiML comes from our voice webhook; its CallSid.

    With `amd_callback`, detection runs asynchronously (the agent speaks at once and
    Twilio reports AnsweredBy there); otherwise the webhook waits for AnsweredBy.
    """
    extra: dict = {}
    if machine_detection:
        extra["machine_detection"] = machine_detection
        if amd_callback:
            extra.update(async_amd="true", async_amd_status_callback=amd_callback,
                         async_amd_status_callback_method="POST")
    async with account.client() as client:
        call = await client.calls.create_async(
            to=to, from_=from_, url=url, method="POST",
            status_callback=status_callback, status_callback_method="POST",
            status_callback_event=["initiated", "ringing", "answered", "completed"],
            **extra,
        )
    return call.sid


async def _update(account: TwilioAccount, call_sid: str, what: str, **fields) -> bool:
    try:
        async with account.client() as client:
            await client.calls(call_sid).update_async(**fields)
        return True
    except TwilioRestException as exc:
        if exc.status == 404 and what == "hang-up":
            return True
        logger.error(f"call {call_sid}: {what} failed: HTTP {exc.status} {exc.msg}")
        return False
    except Exception as exc:
        logger.error(f"call {call_sid}: {what} failed: {exc!r}")
        return False
