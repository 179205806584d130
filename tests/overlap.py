"""Labelled overlap scenarios for tests and `bench/interruptions.py`, played over Twilio.

Each scenario is a real call: the caller (one espeak-ng voice) says an opening line
that the agent answers at length; while that reply plays, a clip (a barge-in, a
backchannel, a cough, another person's side talk, …) is mixed into what the caller's
side sends, optionally with speakerphone echo of the agent and room noise. What the
server did is read from the wire (`clear` times) and from its database (stored turns).
"""

from __future__ import annotations

import asyncio
import io
import secrets
import sqlite3
import subprocess
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soxr

from callwright.testing.line_audio import (
    CHUNK_BYTES,
    RATE,
    SPEECH_RMS,
    LineAcoustics,
    rms,
    speech_end_s,
)


@dataclass(frozen=True, kw_only=True)
class Voice:
    espeak: str
    speed: int = 150
    pitch: int = 50


VOICES = {
    "caller": Voice(espeak="en-us", speed=150, pitch=45),
    "partner": Voice(espeak="en-gb+f3", speed=165, pitch=75),
    "child": Voice(espeak="en-us+f4", speed=175, pitch=95),
    "colleague": Voice(espeak="en-029+f2", speed=160, pitch=60),
}


def say(text: str, voice: str = "caller", *, pad_s: float = 0.2) -> bytes:
    """Speech in one of the synthetic voices, 8 kHz int16, with silence either side."""
    v = VOICES[voice]
    wav = subprocess.run(
        ["espeak-ng", "-v", v.espeak, "-s", str(v.speed), "-p", str(v.pitch), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    samples = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, RATE)
    pad = np.zeros(int(pad_s * RATE))
    return np.concatenate([pad, samples, pad]).astype(np.int16).tobytes()


def cough(seed: int = 0) -> bytes:
    """A cough-like burst: two decaying bursts of band-limited noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for length in (0.18, 0.12):
        n = int(length * RATE)
        noise = np.convolve(rng.normal(size=n), np.ones(6) / 6, mode="same")
        parts += [noise * np.exp(-np.linspace(0, 5, n)) * 9000, np.zeros(int(0.08 * RATE))]
    return _pad(np.concatenate(parts))


def noise_burst(seed: int = 0, length_s: float = 0.15) -> bytes:
    """A knock or a door: a short broadband burst."""
    rng = np.random.default_rng(seed)
    n = int(length_s * RATE)
    return _pad(rng.normal(size=n) * np.exp(-np.linspace(0, 8, n)) * 12000)


def breath(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    n = int(0.5 * RATE)
    noise = np.convolve(rng.normal(size=n), np.ones(12) / 12, mode="same")
    return _pad(noise * np.hanning(n) * 2500)


def room_noise(seconds: float = 10.0, level: float = 300.0, seed: int = 1) -> bytes:
    """Background noise (low-passed, like a room or a street) at int16 RMS `level`."""
    rng = np.random.default_rng(seed)
    noise = np.convolve(rng.normal(size=int(seconds * RATE)), np.ones(4) / 4, mode="same")
    return (noise / noise.std() * level).astype(np.int16).tobytes()


def _pad(samples: np.ndarray) -> bytes:
    pad = np.zeros(int(0.2 * RATE))
    return np.clip(np.concatenate([pad, samples, pad]), -32768, 32767).astype(np.int16).tobytes()


def speech_start_s(pcm8k: bytes) -> float:
    step = CHUNK_BYTES * 2
    for i in range(0, len(pcm8k), step):
        if rms(pcm8k[i : i + step]) > SPEECH_RMS:
            return i / 2 / RATE
    return 0.0


OPENING = "Hi, I am calling about a few things for my family today, if that's alright."


@dataclass(kw_only=True)
class Scenario:
    name: str
    kind: str
    should_stop: bool | None  # whether the clip must stop the agent's reply
    clip: bytes | None = None  # mixed in while the agent replies to the opening
    clip_after_s: float = 1.2  # after the reply's first audio
    clip_voice: str = "caller"  # who says the clip (its true speaker label)
    acoustics: LineAcoustics = LineAcoustics()
    opening: bytes = b""
    later: list[tuple[str, bytes]] = field(default_factory=list)  # (true speaker, line)


@dataclass(kw_only=True)
class Outcome:
    scenario: Scenario
    stopped: bool
    clear_latency_s: float | None  # clip speech onset -> first clear after it
    turns: list[dict]
    agent_audio_s: float


async def run(server, scenario: Scenario, make_caller) -> Outcome:
    # A number of its own: the server remembers callers, and a name another test's caller
    # gave would change what the agent asks.
    twilio = make_caller(server, from_number=f"+1555{secrets.randbelow(10**7):07d}")
    opening = scenario.opening or say(OPENING)
    onset = None
    async with twilio.open_stream(scenario.acoustics) as session:
        await session.wait_reply(1.0, 20.0)
        sent = await session.speak(opening)
        ended = sent + speech_end_s(opening)
        reply = await session.wait_speech_after(ended, 20.0)
        if reply is not None and scenario.clip is not None:
            at = reply + scenario.clip_after_s
            session.overlay(scenario.clip, at)
            onset = at + speech_start_s(scenario.clip)
            await asyncio.sleep(max(0.0, at - time.monotonic()) + len(scenario.clip) / 2 / RATE)
            ended = time.monotonic()  # the agent resumes, or answers the interruption
        await session.wait_reply(1.5, 25.0, after=ended)
        for _, line in scenario.later:
            sent = await session.speak(line)
            await session.wait_reply(1.5, 20.0, after=sent + speech_end_s(line))
        result = session.result
    turns = await stored_turns(server, twilio.call_sid)
    agent = [t for t in turns if t["speaker"] == "agent"]
    stopped = len(agent) > 1 and bool(agent[1]["interrupted"])
    latency = None
    if onset is not None:
        after = [t for t in result.clear_times if t >= onset - 0.3]
        latency = after[0] - onset if after else None
    return Outcome(scenario=scenario, stopped=stopped, clear_latency_s=latency, turns=turns,
                   agent_audio_s=len(result.agent_audio()) / 2 / RATE)


async def stored_turns(server, call_sid: str, timeout_s: float = 15.0) -> list[dict]:
    """The call's turns from the server's SQLite database, once the call is finished."""
    path = Path(server.env["CALLWRIGHT_DATA_DIR"]) / "callwright.db"
    deadline = time.monotonic() + timeout_s
    while True:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            call = db.execute("SELECT id, status FROM calls WHERE call_sid = ?",
                              (call_sid,)).fetchone()
            if call and call["status"] != "in-progress" or time.monotonic() > deadline:
                rows = db.execute("SELECT * FROM turns WHERE call_id = ? ORDER BY seq",
                                  (call["id"],)).fetchall() if call else []
                return [dict(r) for r in rows]
        await asyncio.sleep(0.3)
