"""`callwright call`, the README's way to call the agent without a phone, run as a user runs it."""

import os
import subprocess
import sys
import wave

import pytest

from tests.support import AUTH_TOKEN, ROOT, free_port, speech_8k, start_server


def _wav(path, text: str):
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(speech_8k(text))
    return path


def _call(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "callwright", "call", *args], capture_output=True, text=True,
        cwd=ROOT, timeout=180, env={**os.environ, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, **env},
    )


@pytest.mark.e2e
def test_a_call_with_no_server_given_prints_the_stored_transcript(tmp_path):
    hello = _wav(tmp_path / "hello.wav", "I would like to make a booking for tomorrow evening.")
    bye = _wav(tmp_path / "bye.wav", "No thanks, goodbye.")
    done = _call("--wav", str(hello), "--wav", str(bye))
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "agent: Hello, you've reached the callwright front desk" in out, out
    assert "caller:" in out and "booking" in out, out
    assert "voice-to-voice after line 1:" in out and "protocol errors: none" in out, out


def test_no_server_at_the_url_is_one_clear_line(tmp_path):
    hello = _wav(tmp_path / "hello.wav", "Hello.")
    done = _call("--url", f"http://127.0.0.1:{free_port()}", "--wav", str(hello))
    assert done.returncode == 1
    assert "No server answers at http://127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.e2e
def test_a_refused_signature_says_which_settings_to_check(tmp_path):
    server = start_server(tmp_path)  # its PUBLIC_URL is not the URL called: signatures differ
    try:
        done = _call("--url", server.url, "--wav", str(_wav(tmp_path / "hi.wav", "Hello.")))
    finally:
        server.stop()
    assert done.returncode == 1
    assert "refused the call's webhook (403)" in done.stderr
    assert "TWILIO_AUTH_TOKEN" in done.stderr and "PUBLIC_URL" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
