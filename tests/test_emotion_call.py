"""An upset caller end to end over the Twilio protocol, on one server with business
webhooks: their agitated turns are stored as frustrated, the support flow hands them to a
person after two in a row, the admin call page (in Chromium) shows each turn's marker and
the call's trajectory, and every call's end reaches the business's receiver once, signed
(an outbound call never answered too)."""

import asyncio
import json
import re

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from tests.admin_seed import PASSWORD, add_user
from tests.support import caller, have, speech_8k, start_server, transcribe_8k
from tests.test_admin_site import ARTIFACTS, CHROMIUM_FLAGS, sign_in
from tests.test_webhooks import SECRET, Receiver

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not have("chromium"), reason="Debian chromium is not installed"),
]

FROM = "+15550100200"
# The same espeak voice, first at its own calm level, then raised: higher, faster, louder
# (not so much higher that the speaker labels take it for another person).
CALM = dict(pitch=45, speed=150, amplitude=90)
AGITATED = dict(pitch=62, speed=185, amplitude=190)
LINES = [
    ("My internet is not working.", CALM),
    ("I already did that and it is still not working!", AGITATED),
    ("This is ridiculous, I have called three times already!", AGITATED),
]


@pytest.fixture(scope="module")
async def business():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture(scope="module")
def support_server(tmp_path_factory, rest_standin, business):
    server = start_server(
        tmp_path_factory.mktemp("support-server"), rest_url=rest_standin.base_url,
        DEFAULT_FLOW="support", TRANSFER_ALLOW='["+1415555*"]', TWILIO_FROM_NUMBER=FROM,
        OUTBOUND_ALLOW=json.dumps(["+1555010*"]),
        WEBHOOK_URLS=json.dumps([f"{business.url}/calls"]), WEBHOOK_SECRET=SECRET,
    )
    yield server
    server.stop()
    assert SECRET not in server.log()


async def test_frustrated_caller_is_escalated_shown_and_reported(support_server, business):
    server = support_server
    twilio = caller(server)
    result = await twilio.call([speech_8k(text, **how) for text, how in LINES])
    assert result.errors == []
    # The calm_down node's words, heard on the line (the calmer delivery's pause between
    # its sentences may split them into two utterances).
    last = " ".join(transcribe_8k(bytes(u.pcm)) for u in result.utterances[-2:]).lower()
    assert "so frustrating" in last and "to a person" in last, last

    call = await _stored(server, twilio.call_sid)
    turns = [t for t in call["turns"] if t["speaker"] == "caller"]
    assert [t["emotion"] for t in turns] == ["neutral", "frustrated", "frustrated"], turns
    assert turns[2]["arousal"] > turns[0]["arousal"] + 0.3
    assert call["flow_path"][-1] == "calm_down", call["flow_path"]
    assert call["transferred_to"] == "+14155550123"
    assert call["outcome"] == "escalated"

    report = (await _delivered(business, twilio.call_sid)).payload
    assert report["call"]["outcome"] == "escalated"
    assert report["emotion"]["counts"]["frustrated"] == 2
    assert report["emotion"]["last"] == "frustrated"
    assert report["flow"]["path"][-1] == "calm_down"
    assert report["summary"] == (await server.call_by_sid(twilio.call_sid))["summary"]

    add_user(server, "sue", "supervisor")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                   args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(15_000)
        await sign_in(page, server, "sue", PASSWORD)
        await page.goto(f"{server.url}/admin/calls?emotion=frustrated")
        await expect(page.locator("#count")).to_have_text("1 call")
        await page.get_by_role("link", name=re.compile(r"\d{4}-\d\d-\d\d")).first.click()
        markers = page.locator("ol.turns .badge.emotion")
        await expect(markers).to_have_text(["neutral", "frustrated", "frustrated"])
        await expect(page.locator(".emotion-trajectory svg.chart circle")).to_have_count(6)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "admin-emotion-call.png"), full_page=True)
        await browser.close()


async def test_an_unanswered_outbound_call_reaches_the_business(support_server, business):
    server = support_server
    async with httpx.AsyncClient(base_url=server.url) as client:
        placed = await client.post(
            "/api/calls/outbound", json={"to": "+15550100300", "flow": "reminder"},
            headers={"Authorization": f"Bearer {server.api_token}"})
    assert placed.status_code == 201, placed.text
    unanswered = caller(server, call_sid=placed.json()["call_sid"], from_number=FROM,
                        to_number="+15550100300", extra_params={"Direction": "outbound-api"})
    assert (await unanswered.post_status("no-answer")).status_code == 204

    missed = (await _delivered(business, unanswered.call_sid)).payload
    assert missed["call"]["outcome"] == "failed" and missed["call"]["direction"] == "outbound"
    assert missed["call"]["end_reason"] == "twilio-no-answer"
    await asyncio.sleep(0.5)  # and nothing more for it
    assert [r.payload["call"]["call_sid"] for r in business.received].count(
        unanswered.call_sid) == 1


async def _stored(server, call_sid: str, timeout_s: float = 15.0) -> dict:
    """The call once it has ended and its three caller turns are stored."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        call = await server.call_by_sid(call_sid)
        done = sum(t["speaker"] == "caller" for t in call["turns"]) >= 3 and call["ended_at"]
        if done or asyncio.get_running_loop().time() > deadline:
            return call
        await asyncio.sleep(0.3)


async def _delivered(business: Receiver, call_sid: str, timeout_s: float = 30.0):
    """The one signed delivery of `call_sid`'s end."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = [r for r in business.received if r.payload["call"]["call_sid"] == call_sid]
        if found or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(found) == 1 and found[0].signed, found
    return found[0]
