"""The voice webhook: Twilio's signature, and the TwiML that opens the media stream."""

import httpx
from twilio.request_validator import RequestValidator

from callwright.testing.twilio_emulator import TwilioCaller
from tests.support import AUTH_TOKEN, caller


async def test_signed_webhook_returns_connect_stream(server):
    twilio = caller(server)
    response = await twilio.post_webhook()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    url, params = TwilioCaller.parse_twiml(response.text)
    port = server.port
    assert url == f"wss://callwright.test:{port}/twilio/stream"  # from PUBLIC_URL, no query
    assert "?" not in url
    assert set(params) == {"token"} and len(params["token"]) > 40


async def _post(server, params: dict, signature: str | None) -> httpx.Response:
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    async with httpx.AsyncClient() as client:
        return await client.post(f"{server.url}/twilio/voice", data=params, headers=headers)


async def test_bad_signatures_are_refused(server):
    twilio = caller(server)
    params = twilio.webhook_params()
    url = f"{server.env['PUBLIC_URL']}/twilio/voice"
    good = RequestValidator(AUTH_TOKEN).compute_signature(url, params)

    tampered = dict(params, From="+15550009999")
    assert (await _post(server, tampered, good)).status_code == 403
    assert (await _post(server, params, None)).status_code == 403
    wrong_token = RequestValidator("not-the-token").compute_signature(url, params)
    assert (await _post(server, params, wrong_token)).status_code == 403
    # Signed for the address the server listens on, not the public URL Twilio uses.
    local = RequestValidator(AUTH_TOKEN).compute_signature(f"{server.url}/twilio/voice", params)
    assert (await _post(server, params, local)).status_code == 403
    # Nothing was stored for any of them.
    assert (await server.api("/api/calls", call_sid=twilio.call_sid)).json() == []
    # The correctly signed request still works.
    assert (await _post(server, params, good)).status_code == 200


async def test_missing_call_sid_is_a_clear_400(server):
    twilio = caller(server)
    params = {k: v for k, v in twilio.webhook_params().items() if k != "CallSid"}
    url = f"{server.env['PUBLIC_URL']}/twilio/voice"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    response = await _post(server, params, signature)
    assert response.status_code == 400 and "CallSid" in response.text


async def test_api_requires_a_bearer_token(server):
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/api/calls")).status_code == 401
        bad = {"Authorization": "Bearer cw_nope"}
        assert (await client.get("/api/calls", headers=bad)).status_code == 401
    assert (await server.api("/api/calls")).status_code == 200
    assert (await server.api("/api/calls/999999")).status_code == 404
