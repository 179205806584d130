"""Every audio-LLM backend available here honours the contract in agent/backend.py.

Parametrised over: the embedded cascade (in-process), the tiny random Qwen2.5-Omni in
a real model-worker process (through the worker pool client), the OpenAI-compatible
backend against a local stand-in server, and Fun-Audio-Chat where its package imports.
"""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
from pipecat.audio.utils import create_file_resampler

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    BackendBusy,
    CallerText,
    EndOfTurn,
    TextDelta,
    ToolCall,
    TurnRequest,
)
from callwright.agent.backends import funaudiochat
from callwright.agent.backends.scripted import ScriptedReplies
from callwright.agent.backends.turns import OPENING_PROMPT, SILENCE_PROMPT
from callwright.agent.backends.worker_pool import WorkerPool
from callwright.agent.fallback import BUSY_APOLOGY, FAILURE_APOLOGY, FallbackSession
from callwright.agent.transcript import TranscribingSession
from tests.openai_standin import OpenAIStandIn
from tests.support import speech_16k, tiny_omni_worker, words

BACKENDS = ["embedded", "qwen-omni-worker", "openai", "funaudiochat"]
BOOK_TOOL = {
    "name": "book_table",
    "description": "Book a table",
    "parameters": {"type": "object", "properties": {"people": {"type": "integer"}},
                   "required": ["people"]},
}


@pytest.fixture(scope="session")
def tiny_omni_dir(tmp_path_factory):
    from callwright.agent.backends.qwen_omni_random import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-omni"))


@pytest.fixture(scope="session")
def omni_worker(tmp_path_factory, tiny_omni_dir):
    worker = tiny_omni_worker(tmp_path_factory.mktemp("worker"), tiny_omni_dir)
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
async def openai_standin():
    standin = OpenAIStandIn(token_delay_s=0.02)
    await standin.serve()
    yield standin
    await standin.stop()


@pytest.fixture(params=BACKENDS)
async def backend(request, cascade, omni_worker, openai_standin) -> AudioLLM:
    name = request.param
    if name == "embedded":
        return cascade
    if name == "qwen-omni-worker":
        pool = WorkerPool(urls=[omni_worker.url])
        await pool.load()
        return pool
    if name == "openai":
        from callwright.agent.backends.openai_compat import OpenAICompatibleBackend

        backend = OpenAICompatibleBackend(base_url=openai_standin.base_url,
                                          model=openai_standin.model, speak=cascade.synthesize)
        await backend.load()
        return backend
    if why := funaudiochat.import_error():
        pytest.skip(f"Fun-Audio-Chat's package does not import here ({why}); it runs in its "
                    "own venv as a model worker, where `make fac-test FAC_SRC=...` tests it "
                    "on upstream's classes (README, 'Fun-Audio-Chat with real weights')")
    paths = {k: os.environ.get(f"FAC_{k.upper()}") for k in
             ("source_dir", "model_dir", "cosyvoice_dir", "speaker_path")}
    try:
        checked = funaudiochat.FunAudioChatPaths.checked(**paths)
        fac = funaudiochat.FunAudioChatBackend(paths=checked)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    await fac.load()
    return fac


@pytest.fixture
async def session(backend):
    session = await backend.open_session()
    yield session
    await session.close()


async def run_turn(session, request: TurnRequest) -> list:
    return [event async for event in session.respond(request)]


def check_turn(events: list, backend: AudioLLM) -> None:
    assert events and isinstance(events[-1], EndOfTurn), events
    assert events[-1].error is None, events[-1].error
    assert sum(isinstance(e, EndOfTurn) for e in events) == 1
    kinds = [type(e) for e in events]
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert chunks, "no audio"
    for chunk in chunks:
        assert chunk.sample_rate in (16_000, 22_050, 24_000) and chunk.audio
        assert len(chunk.audio) % 2 == 0
    if TextDelta in kinds:  # text covers the audio after it, so the first text leads
        assert kinds.index(TextDelta) < kinds.index(AudioChunk)
    for delta in (e for e in events if isinstance(e, TextDelta)):
        assert delta.text == delta.text.strip() and delta.text  # whole words, no padding
    if CallerText in kinds:
        assert backend.capabilities.caller_text
        assert kinds.index(CallerText) < kinds.index(AudioChunk)


async def test_streaming_order(backend, session):
    check_turn(await run_turn(session, TurnRequest(audio=None)), backend)
    events = await run_turn(session, TurnRequest(audio=speech_16k("What time do you open?")))
    check_turn(events, backend)


async def test_cancel_stops_at_once_and_session_goes_on(backend, session):
    turn = session.respond(TurnRequest(audio=speech_16k("Can I book a table for two?")))
    first = await anext(turn)
    assert not isinstance(first, EndOfTurn)
    await asyncio.wait_for(session.cancel(), timeout=5)
    after = [event async for event in turn]
    assert not [e for e in after if isinstance(e, (AudioChunk, TextDelta))], after
    check_turn(await run_turn(session, TurnRequest(audio=speech_16k("Hello?"))), backend)


async def test_audio_resamples_for_every_transport(session):
    events = await run_turn(session, TurnRequest(audio=speech_16k("What are your hours?")))
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    rate = chunks[0].sample_rate
    audio = b"".join(c.audio for c in chunks)
    resampler = create_file_resampler()
    phone = await resampler.resample(audio, rate, 8000)  # Twilio
    assert abs(len(phone) / 2 / 8000 - len(audio) / 2 / rate) < 0.01
    # 8 -> 16 -> 24 -> 8 kHz keeps band-limited audio: the round trip is near lossless.
    wide = await resampler.resample(await resampler.resample(phone, 8000, 16000), 16000, 24000)
    back = np.frombuffer(await resampler.resample(wide, 24000, 8000), np.int16).astype(float)
    ref = np.frombuffer(phone, np.int16).astype(float)
    n = min(len(ref), len(back))
    assert abs(len(back) - len(ref)) <= 2
    if np.abs(ref).max() > 100:
        assert np.corrcoef(ref[:n], back[:n])[0, 1] > 0.98


async def test_long_turn_is_capped_not_refused(backend, session):
    silence = bytes(int(16000 * 38) * 2)  # 40 s in all: past the 30 s the encoders see
    speech = speech_16k("I have a long story to tell you.")
    check_turn(await run_turn(session, TurnRequest(audio=silence + speech)), backend)


async def test_tool_calls(backend, session, openai_standin):
    request = TurnRequest(audio=speech_16k("A table for four, please."), tools=(BOOK_TOOL,))
    if backend.capabilities.tools and backend.name == "openai":
        openai_standin.replies.append({"name": "book_table", "arguments": {"people": 4}})
        events = await run_turn(session, request)
        calls = [e for e in events if isinstance(e, ToolCall)]
        assert [(c.name, c.arguments) for c in calls] == [("book_table", {"people": 4})]
        assert isinstance(events[-1], EndOfTurn) and events[-1].error is None
    else:  # tools offered to a backend that cannot call them must not break the turn
        check_turn(await run_turn(session, request), backend)


async def test_keys_and_silence_are_turns_not_a_new_call(backend, session, openai_standin):
    """A turn of keys or of silence ends cleanly, and a model is told what it was (the
    keys, a silence) in that turn and in the history after, never that the call began."""
    check_turn(await run_turn(session, TurnRequest(audio=None)), backend)
    for request in (TurnRequest(audio=None, dtmf="42"), TurnRequest(audio=None, silence=True)):
        events = await run_turn(session, request)
        assert isinstance(events[-1], EndOfTurn) and events[-1].error is None, events
    if backend.name == "openai":
        sent = openai_standin.requests[-1]["messages"]
        told = [m["content"] for m in sent if m["role"] == "user"]
        assert told == [OPENING_PROMPT, "(The caller pressed the keys 4 2.)", SILENCE_PROMPT]


async def test_worker_busy_gets_the_fallback(cascade, omni_worker):
    pool = WorkerPool(urls=[omni_worker.url])
    await pool.load()
    held = await pool.open_session()
    try:
        assert omni_worker.health()["busy"] is True
        with pytest.raises(BackendBusy, match="HTTP 503"):
            await pool.open_session()
        # What the call runner does then: an apology, then the embedded cascade.
        fallback = FallbackSession(primary=None, fallback=cascade, speak=cascade.synthesize)
        events = await run_turn(fallback, TurnRequest(audio=None))
        assert events[0] == TextDelta(text=BUSY_APOLOGY)
        assert isinstance(events[1], AudioChunk)
        assert "front desk" in " ".join(e.text for e in events if isinstance(e, TextDelta))
        check_turn(events, cascade)
        await fallback.close()
    finally:
        await held.close()
    for _ in range(50):  # the worker frees its slot when the session closes
        if omni_worker.health()["sessions"] == 0:
            break
        await asyncio.sleep(0.1)
    again = await pool.open_session()
    await again.close()


async def test_worker_crash_mid_turn_falls_back_and_the_call_goes_on(
    cascade, tiny_omni_dir, tmp_path
):
    worker = tiny_omni_worker(tmp_path, tiny_omni_dir)
    try:
        pool = WorkerPool(urls=[worker.url])
        await pool.load()
        primary = TranscribingSession(inner=await pool.open_session(),
                                      transcribe=cascade.transcribe)
        session = FallbackSession(primary=primary, fallback=cascade, speak=cascade.synthesize)
        # Freeze the worker so the turn is surely in flight, then kill it.
        os.kill(worker.process.pid, signal.SIGSTOP)
        turn = asyncio.create_task(run_turn(
            session, TurnRequest(audio=speech_16k("I would like to book a table."))))
        await asyncio.sleep(0.5)
        worker.process.kill()
        events = await asyncio.wait_for(turn, 30)
        assert TextDelta(text=FAILURE_APOLOGY) in events
        said = " ".join(e.text for e in events if isinstance(e, TextDelta))
        assert "name" in said.lower(), said  # the cascade answered the same turn
        check_turn(events, cascade)
        events = await run_turn(session, TurnRequest(audio=speech_16k("My name is Alice.")))
        heard = [e.text for e in events if isinstance(e, CallerText)]
        assert "my name is" in words(" ".join(heard)), heard  # the cascade hears the caller
        check_turn(events, cascade)
        await session.close()
    finally:
        worker.stop()


async def test_transcripts_start_when_the_caller_pauses_and_are_reused(cascade):
    """A model that reports no transcript still gets the caller's words early (they help
    end the turn), and its turn reuses them rather than transcribing twice."""
    transcribed: list[int] = []

    def transcribe(audio: bytes) -> str:
        transcribed.append(len(audio))
        return cascade.transcribe(audio)

    replies = ScriptedReplies(voice=cascade)
    await replies.load()
    # Wrapped as a call wraps it: behind the fallback.
    primary = TranscribingSession(inner=await replies.open_session(), transcribe=transcribe)
    session = FallbackSession(primary=primary, fallback=cascade, speak=cascade.synthesize)
    audio = speech_16k("What time do you open on Sunday?")
    said = await session.prepare(audio)
    assert "sunday" in words(said), said
    events = await run_turn(session, TurnRequest(audio=audio))
    assert [e.text for e in events if isinstance(e, CallerText)] == [said]
    assert transcribed == [len(audio)]
    other = speech_16k("No thanks, goodbye.")  # not prepared: transcribed in the turn
    events = await run_turn(session, TurnRequest(audio=other))
    assert "goodbye" in words(" ".join(e.text for e in events if isinstance(e, CallerText)))
    assert len(transcribed) == 2
