"""The llm backend (agent/backends/chat_llm.py) against the strict OpenAI stand-in on loopback.

The caller's audio is real speech, transcribed by the embedded Whisper; replies are spoken
by the embedded Piper; the chat server is a real HTTP server speaking OpenAI's streaming
format, scripted to produce what a small model won't on demand: split tool calls, text
and tools together, stalls, garbage, errors, a server killed mid-reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date

import httpx
import pytest

from callwright.agent.backend import (
    AudioChunk,
    CallerText,
    EndOfTurn,
    ModelUsage,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnRequest,
)
from callwright.agent.backends.chat_llm import ChatLLMBackend
from callwright.agent.backends.openai_compat import well_formed
from callwright.agent.fallback import FAILURE_APOLOGY, FallbackSession
from callwright.flows.engine import FlowRun
from callwright.flows.loader import load_flow
from callwright.flows.policy import FlowPolicy
from callwright.flows.session import FlowSession
from tests.openai_standin import OpenAIStandIn
from tests.support import ROOT, free_port, speech_16k, words

EXAMPLES = ROOT / "flows" / "examples"
BOOK_TOOL = {
    "name": "book_table", "description": "Book a table",
    "parameters": {"type": "object", "properties": {"people": {"type": "integer"}},
                   "required": ["people"]},
}


@pytest.fixture
async def standin():
    server = OpenAIStandIn(model="chat-model")
    await server.serve()
    yield server
    await server.stop()


def make_backend(cascade, url: str, **kwargs) -> ChatLLMBackend:
    return ChatLLMBackend(base_url=url, model="chat-model", transcribe=cascade.transcribe,
                          speak=cascade.synthesize, **kwargs)


async def run_turn(session, request: TurnRequest) -> list:
    return [event async for event in session.respond(request)]


def said(events: list) -> str:
    return " ".join(e.text for e in events if isinstance(e, TextDelta))


def check_turn(events: list) -> None:
    """The contract (tests/test_backend_conformance.py's check, for this backend)."""
    assert events and isinstance(events[-1], EndOfTurn), events
    assert events[-1].error is None, events[-1].error
    kinds = [type(e) for e in events]
    assert AudioChunk in kinds and kinds.index(TextDelta) < kinds.index(AudioChunk)
    for delta in (e for e in events if isinstance(e, TextDelta)):
        assert delta.text == delta.text.strip() and delta.text
    if CallerText in kinds:
        assert kinds.index(CallerText) < kinds.index(AudioChunk)


async def test_a_turn_is_heard_thought_and_spoken(cascade, standin):
    backend = make_backend(cascade, standin.base_url)
    await backend.load()
    session = await backend.open_session()
    standin.replies.extend(["Hello, this is the front desk. How can I help?",
                            "We deliver on Saturdays and Sundays from nine to five."])
    events = await run_turn(session, TurnRequest(audio=None, instructions="You work at Luigi's."))
    check_turn(events)
    assert said(events) == "Hello, this is the front desk. How can I help?"
    opening = standin.requests[0]
    assert opening["stream"] is True and opening["stream_options"] == {"include_usage": True}
    system = opening["messages"][0]["content"]
    assert "You work at Luigi's" in system  # the request's instructions, after the persona
    assert system.startswith("You are a friendly phone assistant.")
    assert opening["messages"][0]["role"] == "system"

    events = await run_turn(session, TurnRequest(audio=speech_16k("Do you deliver on weekends?"),
                                                 instructions="You work at Luigi's."))
    check_turn(events)
    heard = [e.text for e in events if isinstance(e, CallerText)]
    assert "deliver on weekends" in words(" ".join(heard))
    # The model got the caller's words as text, after the conversation so far.
    messages = standin.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "deliver on weekends" in words(messages[-1]["content"])
    assert messages[2]["content"] == "Hello, this is the front desk. How can I help?"
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "We deliver on Saturdays and Sundays from nine to five."]
    usage = [e for e in events if isinstance(e, ModelUsage)]
    assert len(usage) == 1 and usage[0].first_token_ms is not None
    assert usage[0].tokens_out == 10 and usage[0].tokens_in > 10  # as the server counted
    await session.close()
    await backend.close()


async def test_speech_starts_while_the_reply_still_streams(cascade, standin):
    standin.token_delay_s = 0.12
    standin.replies.append("Sure. We open at noon every day. The kitchen closes at ten. "
                           "Would you like to book a table?")
    session = await make_backend(cascade, standin.base_url).open_session()
    started = time.monotonic()
    first_audio = None
    events = []
    async for event in session.respond(TurnRequest(audio=None)):
        events.append(event)
        if isinstance(event, AudioChunk) and first_audio is None:
            first_audio = time.monotonic() - started
            assert standin.completed == 0, "the first sentence waited for the whole reply"
    check_turn(events)
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "Sure.", "We open at noon every day.", "The kitchen closes at ten.",
        "Would you like to book a table?"]
    assert first_audio < 17 * 0.12  # well before the last of the 17 words was sent


async def test_a_long_first_sentence_is_spoken_from_its_first_clause(cascade, standin):
    standin.replies.append("Well, on Sundays we open at noon, and we close at ten, as always. "
                           "See you then, Ada.")
    session = await make_backend(cascade, standin.base_url).open_session()
    events = await run_turn(session, TurnRequest(audio=None))
    check_turn(events)
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "Well, on Sundays we open at noon,", "and we close at ten, as always.",
        "See you then, Ada."]


async def test_tool_calls_are_reassembled_and_their_results_go_back(cascade, standin):
    standin.replies.extend([
        {"text": "Let me book that.", "tool_calls": [
            {"name": "book_table", "arguments": {"people": 4}},
            {"name": "note", "arguments": {"text": "window seat, please \u2014 \"quiet\""}}]},
        "You're booked for four.",
    ])
    session = await make_backend(cascade, standin.base_url).open_session()
    events = await run_turn(session, TurnRequest(audio=speech_16k("A table for four, please."),
                                                 tools=(BOOK_TOOL,)))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [
        ("book_table", {"people": 4}), ("note", {"text": "window seat, please \u2014 \"quiet\""})]
    assert len({c.call_id for c in calls}) == 2
    assert said(events) == "Let me book that." and events[-1] == EndOfTurn()
    tools = standin.requests[0]["tools"]
    assert tools == [{"type": "function", "function": BOOK_TOOL}]

    results = tuple(ToolResult(call_id=c.call_id, name=c.name, result={"ok": True})
                    for c in calls)
    events = await run_turn(session, TurnRequest(audio=None, tool_results=results,
                                                 tools=(BOOK_TOOL,)))
    assert said(events) == "You're booked for four."
    messages = standin.requests[1]["messages"]  # the stand-in checked the tool sequence
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in messages[3:]] == [c.call_id for c in calls]
    assert messages[2]["content"] == "Let me book that."


def llama_cpp_tool_chunks(name: str, pieces: list[str]) -> list[str]:
    """A forced tool call as llama-cpp-python 0.3 streams it: the whole name and the same
    id in every fragment, a null content, legacy function_call beside tool_calls."""
    chunks = [{"role": "assistant", "content": None, "function_call": None, "tool_calls": None}]
    for piece in pieces:
        call = {"name": name, "arguments": piece}
        chunks.append({"role": None, "content": None, "function_call": call, "tool_calls": [
            {"index": 0, "id": f"call__0_{name}_cmpl-1", "type": "function", "function": call}]})
    return [json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                        "model": "chat-model", "choices": [
                            {"index": 0, "finish_reason": None, "logprobs": None,
                             "delta": delta}]}) for delta in chunks] + ["[DONE]"]


async def test_tool_calls_as_llama_cpp_streams_them(cascade, standin):
    standin.replies.append({"raw": llama_cpp_tool_chunks("book_table", ['{"peo', 'ple": ', '4}'])})
    backend = make_backend(cascade, standin.base_url, tool_choice="book_table")
    session = await backend.open_session()
    events = await run_turn(session, TurnRequest(audio=speech_16k("A table for four, please."),
                                                 tools=(BOOK_TOOL,)))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("book_table", {"people": 4})]
    assert calls[0].call_id == "call__0_book_table_cmpl-1" and events[-1] == EndOfTurn()
    assert standin.requests[0]["tool_choice"] == {"type": "function",
                                                  "function": {"name": "book_table"}}
    # Forced only where the caller spoke and the function is offered.
    results = (ToolResult(call_id=calls[0].call_id, name="book_table", result={"ok": True}),)
    standin.replies.append("Booked.")
    await run_turn(session, TurnRequest(audio=None, tool_results=results, tools=(BOOK_TOOL,)))
    assert "tool_choice" not in standin.requests[1]


async def test_barge_in_closes_the_stream_and_keeps_what_was_heard(cascade, standin):
    standin.token_delay_s = 0.1
    standin.replies.append("Our menu changes every week. " + "We have many dishes. " * 20)
    session = await make_backend(cascade, standin.base_url).open_session()
    turn = session.respond(TurnRequest(audio=None))
    async for event in turn:
        if isinstance(event, AudioChunk):
            break
    await asyncio.wait_for(session.cancel(), 1)
    rest = [event async for event in turn]
    assert not [e for e in rest if isinstance(e, (TextDelta, AudioChunk))], rest
    for _ in range(20):  # the server saw the client go and stopped generating
        if standin.aborted:
            break
        await asyncio.sleep(0.05)
    assert standin.aborted == 1 and standin.completed == 0
    await session.truncate("Our menu changes")
    standin.token_delay_s = 0
    standin.replies.append("Sorry, go ahead.")
    events = await run_turn(session, TurnRequest(audio=speech_16k("Is there fish?")))
    check_turn(events)
    history = standin.requests[-1]["messages"][1:]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert history[1]["content"] == "Our menu changes"  # only what the caller heard


async def test_a_cancel_before_the_request_sends_nothing(cascade, standin):
    session = await make_backend(cascade, standin.base_url).open_session()
    turn = session.respond(TurnRequest(audio=speech_16k("Can I book a table for two?")))
    assert isinstance(await anext(turn), CallerText)
    await session.cancel()
    assert [event async for event in turn] == []
    assert standin.requests == []
    check_turn(await run_turn(session, TurnRequest(audio=speech_16k("Hello?"))))


async def test_a_pause_mended_by_the_slot_replaces_the_unanswered_turn(cascade, standin):
    """The slot drops a reply the caller never heard when they go on talking, and sends
    the whole turn again: the model sees it once."""
    session = await make_backend(cascade, standin.base_url).open_session()
    first = speech_16k("I would like")
    turn = session.respond(TurnRequest(audio=first))
    await anext(turn)
    await session.cancel()
    _ = [event async for event in turn]
    whole = first + speech_16k("a table for two.")
    check_turn(await run_turn(session, TurnRequest(audio=whole)))
    users = [m for m in standin.requests[-1]["messages"] if m["role"] == "user"]
    assert len(users) == 1 and "table for two" in words(users[0]["content"])


@pytest.mark.parametrize("fault", ["slow first token", "down", "garbage", "http 500",
                                   "empty", "stall", "not json content"])
async def test_a_failing_server_ends_the_turn_with_an_error(cascade, standin, fault):
    url = standin.base_url
    if fault == "slow first token":
        standin.first_token_delay_s = 5
    elif fault == "down":
        url = f"http://127.0.0.1:{free_port()}/v1"
    elif fault == "garbage":
        standin.replies.append({"raw": ["<html>502 Bad Gateway</html>"]})
    elif fault == "http 500":
        standin.replies.append({"status": 500, "message": "CUDA out of memory"})
    elif fault == "empty":
        standin.replies.append("")
    elif fault == "stall":
        standin.replies.append({"raw": [
            json.dumps({"id": "x", "object": "chat.completion.chunk", "created": 0,
                        "model": "chat-model", "choices": [{"index": 0, "delta": {
                            "content": "One moment. Let me"}, "finish_reason": None}]}),
            "{}"]})
        standin.token_delay_s = 3
    elif fault == "not json content":
        standin.replies.append({"raw": [json.dumps({"id": "x", "object": "chat.completion.chunk",
                                                    "created": 0, "model": "chat-model",
                                                    "choices": [{"index": 0, "delta": {
                                                        "content": {"a": 1}}}]})]})
    session = await make_backend(cascade, url, first_token_timeout_s=1.0).open_session()
    started = time.monotonic()
    events = await run_turn(session, TurnRequest(audio=speech_16k("What time do you open?")))
    elapsed = time.monotonic() - started
    assert isinstance(events[-1], EndOfTurn) and events[-1].error, events
    assert elapsed < 4, f"{fault}: took {elapsed:.1f} s to fail"
    assert isinstance(events[0], CallerText) and "open" in words(events[0].text)
    if fault == "stall":  # what streamed before the stall was spoken
        assert said(events) == "One moment."
    else:
        assert not [e for e in events if isinstance(e, AudioChunk)]
    # The session goes on once the server answers again.
    standin.first_token_delay_s = standin.token_delay_s = 0
    standin.replies.clear()
    standin.replies.append("We open at noon.")
    if fault != "down":
        check_turn(await run_turn(session, TurnRequest(audio=speech_16k("Hello?"))))


def test_history_drops_tool_calls_without_results():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": None},
        {"role": "tool", "tool_call_id": "c9", "content": "{}"},
    ]
    assert well_formed(messages) == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "b"}]


async def test_a_tool_call_moves_a_yaml_flow(cascade, standin):
    """The restaurant flow, unchanged: its node's instructions and tools go out, the model's
    tool call moves it, and the model speaks on from the next node in the same turn."""
    standin.replies.extend([
        "Hello, thanks for calling Luigi's. Would you like to reserve a table?",
        {"name": "reserve", "arguments": {}},
        "Great. For how many people?",
    ])
    backend = make_backend(cascade, standin.base_url)
    run = FlowRun(flow=load_flow(EXAMPLES / "restaurant.yaml"), today=date(2026, 11, 25))
    session = FlowSession(backend=backend, session=await backend.open_session(), run=run)
    events = await run_turn(session, TurnRequest(
        audio=None, instructions="What you remember about this caller: - Name: Ada"))
    check_turn(events)
    system = standin.requests[0]["messages"][0]["content"]
    assert "host at Luigi's" in system and "Name: Ada" in system
    assert {t["function"]["name"] for t in standin.requests[0]["tools"]} == {
        "reserve", "hours", "talk_to_human", "repeat", "goodbye"}

    events = await run_turn(session, TurnRequest(audio=speech_16k("I would like a table.")))
    check_turn(events)
    assert run.path == ["greet", "party"]
    assert said(events) == "Great. For how many people?"
    follow_up = standin.requests[2]
    assert "Collect: party_size, date, time" in follow_up["messages"][0]["content"]
    assert "fill_slots" in {t["function"]["name"] for t in follow_up["tools"]}
    tool = follow_up["messages"][-1]
    assert tool["role"] == "tool" and json.loads(tool["content"])["node"] == "party"
    assert not [e for e in events if isinstance(e, ToolCall)]  # tool calls stay in the flow


async def test_a_dead_server_hands_the_turn_to_the_flow_policy(cascade, standin):
    """What a call does when the chat server dies: the caller hears the apology and the
    flow, understood by the flow policy, answers the same turn and the rest of the call."""
    standin.replies.append("Hello, thanks for calling Luigi's. Would you like a table?")
    backend = make_backend(cascade, standin.base_url)
    run = FlowRun(flow=load_flow(EXAMPLES / "restaurant.yaml"), today=date(2026, 11, 25))
    flow = FlowSession(backend=backend, session=await backend.open_session(), run=run)

    async def open_fallback():
        return await cascade.open_session(policy=FlowPolicy(run=run))

    session = FallbackSession(primary=flow, fallback=cascade, speak=cascade.synthesize,
                              open_fallback=open_fallback)
    check_turn(await run_turn(session, TurnRequest(audio=None)))
    await standin.stop()
    events = await run_turn(session, TurnRequest(audio=speech_16k("I would like to book a table.")))
    check_turn(events)
    texts = [e.text for e in events if isinstance(e, TextDelta)]
    assert texts[0] == FAILURE_APOLOGY
    assert run.path == ["greet", "party"]  # the flow policy understood the caller
    assert "how many people" in said(events).lower()
    events = await run_turn(session, TurnRequest(audio=speech_16k("Four people.")))
    check_turn(events)
    assert run.slots.get("party_size") == 4
    await standin.serve()  # the fixture stops it again


def standin_process(tmp_path, script: dict) -> tuple[subprocess.Popen, str]:
    """The stand-in in a process of its own, once it answers; returns it and its API URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_standin", "--port", str(port), "--model",
         "chat-model", "--script", json.dumps(script)],
        cwd=ROOT, stdout=(tmp_path / "standin.log").open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            httpx.get(f"{url}/models", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the stand-in did not start")


async def test_a_server_killed_mid_reply_fails_the_turn_at_once(cascade, tmp_path):
    script = {"token_delay_s": 0.2, "replies": ["Let me check that for you. " * 10]}
    process, url = await asyncio.to_thread(standin_process, tmp_path, script)
    try:
        session = await make_backend(cascade, url, first_token_timeout_s=5).open_session()
        events = []
        killed_at = None
        async for event in session.respond(TurnRequest(audio=None)):
            events.append(event)
            if isinstance(event, AudioChunk) and killed_at is None:
                os.kill(process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
        assert killed_at is not None
        assert isinstance(events[-1], EndOfTurn) and events[-1].error
        assert time.monotonic() - killed_at < 2  # a reset connection, not a timeout
        assert said(events).startswith("Let me check that for you.")
    finally:
        process.kill()
        process.wait()


def test_settings_make_the_backend(tmp_path):
    from callwright.agent.backends.cascade import EmbeddedCascade
    from callwright.agent.backends.registry import BackendContext, create_backend
    from callwright.settings import Settings

    cascade = EmbeddedCascade(host=None, policy_factory=None)
    settings = Settings(AUDIO_LLM_BACKEND="llm", LLM_URL="http://127.0.0.1:9/v1",
                        LLM_MODEL="m", LLM_API_KEY="sk-secret", LLM_FIRST_TOKEN_TIMEOUT="30",
                        MODEL_TIMEOUT_SECONDS="20", LLM_TOOL_CHOICE="auto",
                        CALLWRIGHT_DATA_DIR=str(tmp_path))
    backend = create_backend("llm", BackendContext(settings=settings, cascade=cascade))
    assert isinstance(backend, ChatLLMBackend) and backend.capabilities.tools
    assert backend.first_token_timeout_s < 20  # else the slot would give up on the call
    assert backend.tool_choice == "auto" and backend.client.api_key == "sk-secret"
    assert "sk-secret" not in repr(settings)
    with pytest.raises(ValueError, match="LLM_URL"):
        create_backend("llm", BackendContext(settings=Settings(), cascade=cascade))


def test_a_local_model_is_named_clearly_when_missing(tmp_path):
    from callwright.local_llm import LlamaServer, LocalLLMError, resolve_gguf

    with pytest.raises(LocalLLMError, match="no GGUF model file"):
        resolve_gguf(str(tmp_path / "nothing.gguf"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_gguf(str(gguf)) == gguf
    server = LlamaServer(model_path=gguf, alias="m")
    command = server.command()
    assert command[1:3] == ["-m", "llama_cpp.server"] and "127.0.0.1" in command
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
