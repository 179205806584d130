"""An OpenAI-compatible chat server that hears audio and answers in text, spoken by Piper.

This is how to scale past one GPU box: for example vLLM serving Fun-Audio-Chat's
speech-in → text-out path (`vllm serve <model>`) behind a load balancer. Each turn
posts the caller's audio as an `input_audio` content part to `/chat/completions`
with `stream=True`; text deltas are spoken sentence by sentence as they arrive, and
streamed `tool_calls` are reassembled into `ToolCall`s.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

from loguru import logger

from callwright.agent.backend import (
    INPUT_SAMPLE_RATE,
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    Capabilities,
    EndOfTurn,
    Event,
    TextDelta,
    ToolCall,
    TurnRequest,
)
from callwright.agent.backends.turns import BoundedHistory, cap_input, turn_prompt

DEFAULT_INSTRUCTIONS = (
    "You are a friendly phone assistant. Answer in one to three short spoken sentences, "
    "with no lists or markup."
)
_SENTENCE_END = re.compile(r"[.!?](?=\s)")


def wav_base64(pcm16k: bytes) -> str:
    """`pcm16k` (16 kHz int16 mono) as a base64 WAV file, for an `input_audio` content part."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(INPUT_SAMPLE_RATE)
        w.writeframes(pcm16k)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def openai_tools(tools: tuple[dict, ...]) -> list[dict]:
    """Accept both bare function schemas and OpenAI's {"type": "function", ...} wrapping."""
    return [t if t.get("type") == "function" else {"type": "function", "function": t}
            for t in tools]


class SentenceBuffer:
    """Collects streamed text and releases complete sentences, to speak them early."""

    def __init__(self) -> None:
        self._text = ""

    def push(self, text: str) -> list[str]:
        """Add streamed `text`; returns the sentences it completed (ending in `.`, `!` or `?`
        before whitespace), whitespace collapsed."""
        self._text += text
        sentences = []
        while match := _SENTENCE_END.search(self._text):
            sentence, self._text = self._text[: match.end()], self._text[match.end():]
            if sentence.strip():
                sentences.append(" ".join(sentence.split()))
        return sentences

    def flush(self) -> list[str]:
        """Release what is left (whitespace collapsed) and empty the buffer."""
        rest, self._text = " ".join(self._text.split()), ""
        return [rest] if rest else []


class OpenAICompatibleBackend(AudioLLM):
    """A chat server that hears the caller's audio and answers in text, spoken by `speak`.

    Args:
        base_url: The API root of the server.
        model: The model name the server serves.
        speak: Blocking TTS: text to (int16 audio, sample rate).
        api_key: Bearer key; local servers usually need none.
        max_tokens: Cap on one reply.
        timeout_s: The HTTP client's timeout.
        history_turns: Past exchanges re-sent each turn, as audio and text.

    Raises:
        ValueError: `base_url` or `model` is empty.
    """

    name = "openai"
    capabilities = Capabilities(live_instructions=True, tools=True, truncation=True)

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        speak: Callable[[str], tuple[bytes, int]],
        api_key: str | None = None,
        max_tokens: int = 256,
        timeout_s: float = 30.0,
        history_turns: int = 4,
    ):
        if not base_url or not model:
            raise ValueError("the openai backend needs AUDIO_LLM_OPENAI_URL and "
                             "AUDIO_LLM_OPENAI_MODEL")
        from openai import AsyncOpenAI

        # Local servers (vLLM) usually need no key, but the client insists on one.
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed",
                                  timeout=timeout_s, max_retries=0)
        self.model = model
        self.speak = speak  # blocking TTS: text -> (int16 pcm, sample rate)
        self.max_tokens = max_tokens
        self.history_turns = history_turns

    async def load(self) -> None:
        """Check that the server answers and lists the model; logs, never raises."""
        await check_server(self.client, self.model, what="OpenAI-compatible")

    async def open_session(self) -> AudioLLMSession:
        """A new `OpenAISession`; this backend never refuses one."""
        return OpenAISession(backend=self)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.close()


class OpenAISession(AudioLLMSession):
    """One call's conversation: its last exchanges (caller audio, agent text) and the stream
    in flight."""

    def __init__(self, *, backend: OpenAICompatibleBackend):
        self._backend = backend
        self._history = BoundedHistory(max_turns=backend.history_turns)
        self._stream = None
        self._cancelled = False

    def _messages(self, request: TurnRequest, audio: bytes | None) -> list[dict]:
        def user(clip: bytes | None, text: str) -> dict:
            if clip is None:
                return {"role": "user", "content": text}
            part = {"type": "input_audio", "input_audio": {"data": wav_base64(clip),
                                                           "format": "wav"}}
            return {"role": "user", "content": [part]}

        messages = [{"role": "system", "content": request.instructions or DEFAULT_INSTRUCTIONS}]
        for past in self._history:
            messages += [user(past.caller_audio, past.caller_text),
                         {"role": "assistant", "content": past.agent_text}]
        return messages + [user(audio, turn_prompt(request) or "")]

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Send the instructions, the history and this turn's audio (the opening prompt when
        there is none), and speak the streamed reply sentence by sentence, then its tool calls.

        A request that fails ends the turn with `EndOfTurn(error=...)`.
        """
        backend = self._backend
        self._cancelled = False
        audio = cap_input(request.audio) if request.audio else None
        extra = {"tools": openai_tools(request.tools)} if request.tools else {}
        sentences = SentenceBuffer()
        spoken: list[str] = []
        calls: dict[int, dict] = {}
        try:
            self._stream = await backend.client.chat.completions.create(
                model=backend.model, messages=self._messages(request, audio), stream=True,
                max_tokens=backend.max_tokens, **extra,
            )
            async for chunk in self._stream:
                if self._cancelled:
                    return
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta is None:
                    continue
                for call in delta.tool_calls or ():
                    add_tool_call_fragment(calls, call)
                for sentence in sentences.push(delta.content or ""):
                    async for event in self._say(sentence, spoken):
                        yield event
            for sentence in sentences.flush():
                async for event in self._say(sentence, spoken):
                    yield event
        except Exception as exc:
            if self._cancelled:
                return
            logger.error(f"OpenAI-compatible server failed the turn: {type(exc).__name__}: {exc}")
            yield EndOfTurn(error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._stream = None
        if self._cancelled:
            return
        for call in calls.values():
            yield tool_call_of(call)
        self._history.add(caller_audio=audio, agent_text=" ".join(spoken),
                          caller_text=turn_prompt(request) or "")
        yield EndOfTurn()

    async def _say(self, sentence: str, spoken: list[str]) -> AsyncIterator[Event]:
        spoken.append(sentence)
        yield TextDelta(text=sentence)
        audio, rate = await asyncio.to_thread(self._backend.speak, sentence)
        if not self._cancelled:
            yield AudioChunk(audio=audio, sample_rate=rate)

    async def cancel(self) -> None:
        """Stop the turn and close the HTTP stream, so the server stops generating."""
        self._cancelled = True
        if self._stream is not None:
            await self._stream.close()  # drops the HTTP stream: the server stops generating

    async def truncate(self, heard_text: str) -> None:
        """Keep only `heard_text` as the last reply in the history."""
        self._history.truncate_last(heard_text)


async def check_server(client: Any, model: str, *, what: str) -> None:
    """Log whether an OpenAI-compatible server answers and serves `model`; never raises: a
    server that is down only sends calls to the fallback until it answers."""
    try:
        served = [m.id async for m in client.models.list()]
    except Exception as exc:
        logger.warning(f"{what} server {client.base_url} is not answering "
                       f"({type(exc).__name__}); calls fall back until it does")
        return
    if served and model not in served:
        logger.warning(f"{client.base_url} does not list model {model!r} (it serves {served})")
    logger.info(f"{what} backend: {model} at {client.base_url}")


def add_tool_call_fragment(calls: dict[int, dict], call: Any) -> None:
    """Reassemble streamed tool calls: one streamed `tool_calls` delta into `calls` (by index)."""
    entry = calls.setdefault(call.index or 0, {"id": "", "name": "", "args": ""})
    entry["id"] = call.id or entry["id"]
    if call.function:
        # OpenAI names a call in its first fragment; llama.cpp repeats the whole name in
        # every one.
        name = call.function.name or ""
        if name != entry["name"]:
            entry["name"] += name
        entry["args"] += call.function.arguments or ""


def well_formed(messages: list[dict]) -> list[dict]:
    """The messages, minus tool calls that got no result and results with no call: strict
    servers refuse both (a call cut short by barge-in or a history cut leaves them)."""
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    out: list[dict] = []
    open_calls: set[str] = set()
    for message in messages:
        if message["role"] == "assistant" and message.get("tool_calls"):
            calls = [c for c in message["tool_calls"] if c["id"] in answered]
            message = {**message, "tool_calls": calls}
            if not calls:
                del message["tool_calls"]
                if not message.get("content"):
                    continue
            open_calls = {c["id"] for c in calls}
        elif message["role"] == "tool":
            if message.get("tool_call_id") not in open_calls:
                continue
        else:
            open_calls = set()
            if message["role"] == "assistant" and not message.get("content"):
                continue  # a reply cut before its first word
        out.append(message)
    return out


def tool_call_of(call: dict) -> ToolCall:
    """The `ToolCall` of a reassembled streamed call; arguments that are not a JSON object
    are kept under "raw" (not JSON) or "value" (not an object)."""
    try:
        arguments = json.loads(call["args"] or "{}")
    except json.JSONDecodeError:
        arguments = {"raw": call["args"]}
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return ToolCall(call_id=call["id"] or f"call_{uuid.uuid4().hex[:12]}", name=call["name"],
                    arguments=arguments)
