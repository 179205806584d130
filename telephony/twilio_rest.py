"""Twilio's REST API through the official client, at a configurable base URL."""

from __future__ import annotations

from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client


async def hang_up(*, account_sid: str, auth_token: str, base_url: str, call_sid: str) -> bool:
    """End a live call (Status=completed). A call that is already gone counts as done."""
    http = AsyncTwilioHttpClient()
    client = Client(account_sid, auth_token, http_client=http)
    client.api.base_url = base_url.rstrip("/")
    try:
        await client.calls(call_sid).update_async(status="completed")
        return True
    except TwilioRestException as exc:
        if exc.status == 404:
            return True
        logger.error(f"call {call_sid}: hang-up failed: HTTP {exc.status} {exc.msg}")
        return False
    except Exception as exc:
        logger.error(f"call {call_sid}: hang-up failed: {exc!r}")
        return False
    finally:
        await http.close()
