"""An upset caller end to end over the Twilio protocol: their agitated turns are stored as
frustrated, the support flow hands them to a person after two in a row, and the admin
call page (in Chromium) shows each turn's marker and the call's trajectory."""

import asyncio
import re

import pytest
from playwright.async_api import async_playwright, expect

from tests.admin_seed import PASSWORD, add_user
from tests.support import caller, have, speech_8k, start_server, transcribe_8k
from tests.test_admin_site import ARTIFACTS, CHROMIUM_FLAGS, sign_in

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not have("chromium"), reason="Debian chromium is not installed"),
]

# The same espeak voice, first at its own calm level, then raised: higher, faster, louder
# (not so much higher that the speaker labels take it for another person).
CALM = dict(pitch=45, speed=150, amplitude=90)
AGITATED = dict(pitch=62, speed=185, amplitude=190)
LINES = [
    ("My internet is not working.", CALM),
    ("I already did that and it is still not working!", AGITATED),
    ("This is ridiculous, I have called three times already!", AGITATED),
]


async def test_frustrated_caller_is_escalated_and_shown(tmp_path, rest_standin):
    server = start_server(tmp_path, rest_url=rest_standin.base_url, DEFAULT_FLOW="support",
                          TRANSFER_ALLOW='["+1415555*"]')
    try:
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
    finally:
        server.stop()


async def _stored(server, call_sid: str, timeout_s: float = 15.0) -> dict:
    """The call once it has ended and its three caller turns are stored."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        call = await server.call_by_sid(call_sid)
        done = sum(t["speaker"] == "caller" for t in call["turns"]) >= 3 and call["ended_at"]
        if done or asyncio.get_running_loop().time() > deadline:
            return call
        await asyncio.sleep(0.3)
