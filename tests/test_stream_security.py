"""The media stream refuses unsigned upgrades and bad, expired or reused tokens."""

import asyncio
import json
import time

import pytest
import websockets

from callwright.telephony.twilio import tokens
from callwright.testing.twilio_emulator import TwilioCaller
from tests.support import SECRET_KEY, caller


async def _open_with(twilio: TwilioCaller, stream_url: str, token: str | None) -> int | None:
    """Connect, send connected+start with `token`; the close code the server answers."""
    custom = {} if token is None else {"token": token}
    async with twilio.connect(stream_url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(twilio.start_message(custom)))
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed:
            pass
        except TimeoutError:
            return None
        return ws.close_code


async def _answered(server) -> tuple[TwilioCaller, str, str]:
    twilio = caller(server)
    response = await twilio.post_webhook()
    url, params = TwilioCaller.parse_twiml(response.text)
    return twilio, url, params["token"]


async def _assert_untouched(server, twilio: TwilioCaller) -> None:
    call = await server.call_by_sid(twilio.call_sid)
    assert call["status"] == "ringing" and call["stream_sid"] is None
    assert call["turns"] == []


@pytest.mark.parametrize("kind", ["missing", "tampered", "other-call", "expired"])
async def test_bad_tokens_are_closed_with_1008(server, kind):
    twilio, url, token = await _answered(server)
    key = SECRET_KEY.encode()
    bad = {
        "missing": None,
        "tampered": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "other-call": tokens.issue(key, "CA" + "f" * 32, 30)[0],
        "expired": tokens.issue(key, twilio.call_sid, -1)[0],
    }[kind]
    assert await _open_with(twilio, url, bad) == 1008
    await _assert_untouched(server, twilio)


async def test_a_token_works_once(server):
    twilio, url, token = await _answered(server)
    async with twilio.connect(url) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps(twilio.start_message({"token": token})))
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))  # the greeting starts
        assert first["event"] == "media"
        replay = caller(server)
        replay.call_sid, replay.stream_sid = twilio.call_sid, "MZ" + "e" * 32
        assert await _open_with(replay, url, token) == 1008
    call = await server.call_by_sid(twilio.call_sid)
    assert call["stream_sid"] == twilio.stream_sid  # the replay changed nothing


async def test_unsigned_upgrade_is_rejected(server):
    twilio, url, _ = await _answered(server)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with twilio.connect(url, sign=False):
            pass
    assert refused.value.response.status_code == 403


def test_token_unit_rules():
    key = b"k" * 32
    text, issued = tokens.issue(key, "CA1", 30)
    assert tokens.verify(key, text) == issued
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(b"other-key", text)
    with pytest.raises(tokens.TokenError, match="malformed"):
        tokens.verify(key, "not a token")
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(key, tokens.issue(key, "CA1", -0.001)[0])
    assert issued.expires > time.time()
