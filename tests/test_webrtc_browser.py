"""A real browser calls the agent from the call page, with a WAV file as its microphone."""

import asyncio
import wave
from pathlib import Path

import pytest

from tests.support import ROOT, speech_8k
from tests.webrtc_peer import RATE, to_48k

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
LINE = "Hello, I would like to make a reservation for tomorrow evening."

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium (make system-deps)"),
]


def caller_wav(path: Path) -> Path:
    """Silence through the greeting, the line, then silence: 48 kHz mono, as chromium wants."""
    silence = bytes(2 * RATE)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(silence * 9 + to_48k(speech_8k(LINE)) + silence * 30)
    return path


async def test_call_from_the_browser(server, tmp_path):
    from playwright.async_api import async_playwright

    wav = caller_wav(tmp_path / "caller.wav")
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}%noloop",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.url + "/")
        offered = await page.locator("#flow option").all_text_contents()
        assert offered[0] == "default" and "restaurant" in offered  # the example flows
        await page.click("#call")

        caller_line = page.locator("#transcript li.caller")
        agent_reply = page.locator("#transcript li.caller ~ li.agent:not(.pending)")
        await agent_reply.first.wait_for(timeout=60_000)
        await page.screenshot(path=str(ARTIFACTS / "webrtc_call_page.png"), full_page=True)
        shown_caller = await caller_line.first.locator(".text").text_content()
        shown_reply = await agent_reply.first.locator(".text").text_content()
        shown_latency = await page.locator("#transcript .latency").all_text_contents()
        sid = await page.locator("#sid").text_content()
        await page.click("#hangup")
        await page.locator("#transcript li.note", has_text="You hung up").wait_for()
        assert await page.locator("#state").text_content() == "idle"
        await browser.close()
    assert errors == []

    assert "tomorrow evening" in shown_caller.lower(), shown_caller
    assert shown_latency and all(
        text.startswith("voice-to-voice ") and text.endswith(" ms") for text in shown_latency
    ), shown_latency
    for _ in range(50):  # the hang-up reaches the database just after the page
        call = await server.call_by_sid(sid)
        if call["ended_at"]:
            break
        await asyncio.sleep(0.2)
    assert call["transport"] == "webrtc"
    assert call["status"] == "completed" and call["end_reason"] == "caller-hangup"
    turns = call["turns"]
    stored_callers = [t["text"] for t in turns if t["speaker"] == "caller"]
    assert "tomorrow evening" in stored_callers[0].lower(), turns
    agent_turns = [t["text"] for t in turns if t["speaker"] == "agent"]
    assert shown_reply in agent_turns[1:], (shown_reply, turns)
