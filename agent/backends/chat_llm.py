"""Any text chat model as the agent's brain: Whisper hears, the model thinks, Piper speaks.

Each turn the caller's audio is transcribed by the embedded recogniser, the words go to
an OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, Ollama, llama.cpp) with
`stream=True` and the request's tools, and the reply is spoken sentence by sentence as it
streams. Barge-in closes the HTTP stream at once; the conversation keeps only what the
caller heard. A server that is down, slow to its first token or answering garbage ends
the turn with an error, so the slot's fallback speaks and the call goes on.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from loguru import logger

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    CallerText,
    Capabilities,
    EndOfTurn,
    Event,
    ModelUsage,
    TextDelta,
    TurnRequest,
)
from callwright.agent.backends.openai_compat import (
    SentenceBuffer,
    add_tool_call_fragment,
    check_server,
    openai_tools,
    tool_call_of,
    well_formed,
)
from callwright.agent.backends.turns import OPENING_PROMPT, cap_input, turn_prompt
from callwright.agent.transcript import EarlyTranscript

PHONE_STYLE = (
    "This is a phone call: everything you write is spoken aloud to the caller. Answer in one "
    "to three short sentences of plain speech, with no lists, markup or emoji."
)
DEFAULT_ROLE = "You are a friendly phone assistant."
GO_ON_PROMPT = "(The call goes on. Say what your instructions ask you to say now.)"
# Instructions that say who the agent is (a flow's role_message does); else the persona leads.
_NAMES_ROLE = re.compile(r"^\s*(you are|you're)\b", re.I | re.M)
_CLAUSE_END = re.compile(r"[,;:](?=\s)")
FIRST_CLAUSE_WORDS = 4  # a reply's first words go to Piper at a comma once this many
# Markdown a chat model may write that Piper would read out or stumble on.
_MARKUP = re.compile(r"[*_#`~|>]+|\[(?:[^\]]*)\]\((?:[^)]*)\)")


class PhraseBuffer(SentenceBuffer):
    """Sentences, and a reply's opening clause ahead of its sentence: the caller hears the
    first words while the model is still writing the rest of a long first sentence."""

    def first_clause(self) -> list[str]:
        """Release the buffered text up to the first clause end (`,`, `;` or `:` before a space)
        that completes at least `FIRST_CLAUSE_WORDS` words; empty when there is none yet."""
        for match in _CLAUSE_END.finditer(self._text):
            head = self._text[: match.end()]
            if len(head.split()) >= FIRST_CLAUSE_WORDS:
                self._text = self._text[match.end():]
                return [" ".join(head.split())]
        return []


class LLMFailure(RuntimeError):
    """The chat server failed a turn: down, too slow, or answering what is not a reply."""


def spoken(text: str) -> str:
    """Text as Piper should say it: entities decoded, markup removed, whitespace collapsed."""
    return " ".join(_MARKUP.sub(" ", html.unescape(text)).split())


class ChatLLMBackend(AudioLLM):
    """A text chat model behind an OpenAI-compatible API, with the embedded ASR and TTS.

    Args:
        base_url: The API root, e.g. ``https://api.openai.com/v1``.
        model: The model name the server serves.
        transcribe: Blocking ASR, 16 kHz int16 audio to text (the embedded Whisper).
        speak: Blocking TTS, text to (int16 audio, sample rate) (the embedded Piper).
        api_key: Bearer key; local servers usually need none.
        first_token_timeout_s: Longest wait for the first token of a reply, and for any
            later gap in the stream, before the turn fails over.
        max_tokens: Cap on one reply.
        temperature: Sampling temperature; None leaves the server's default.
        seed: Sampling seed, for servers that honour one (reproducible tests).
        history_messages: Past messages re-sent each turn (the instructions always are).
        persona: Who the agent is, put before instructions that do not say (a call
            without a flow gets only what memory recalls).
        tool_choice: OpenAI's `tool_choice` ("auto", "required", "none"), sent with tools;
            or a function's name, which forces that call on turns where the caller spoke
            and it is offered (llama.cpp constrains the call with a grammar then).
        count_prompt: Blocking count of a request's prompt tokens, for servers that report
            no usage while streaming (llama-cpp-python's).
        on_load: Awaited by `load()` first, e.g. to start a local server.
        on_close: Awaited by `close()` last.
    """

    name = "llm"
    capabilities = Capabilities(
        live_instructions=True, tools=True, truncation=True, caller_text=True
    )

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        transcribe: Callable[[bytes], str],
        speak: Callable[[str], tuple[bytes, int]],
        api_key: str | None = None,
        first_token_timeout_s: float = 8.0,
        max_tokens: int = 200,
        temperature: float | None = None,
        seed: int | None = None,
        history_messages: int = 24,
        tool_choice: str | None = None,
        persona: str = DEFAULT_ROLE,
        count_prompt: Callable[[list[dict]], int | None] | None = None,
        on_load: Callable[[], Any] | None = None,
        on_close: Callable[[], Any] | None = None,
    ):
        if not base_url or not model:
            raise ValueError("the llm backend needs LLM_URL and LLM_MODEL (or LLM_LOCAL)")
        from openai import AsyncOpenAI

        # Our own timeouts decide when a turn has failed; the client's only bounds a hang.
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed",
                                  timeout=max(60.0, first_token_timeout_s * 4), max_retries=0)
        self.model = model
        self.transcribe = transcribe
        self.speak = speak
        self.first_token_timeout_s = first_token_timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.history_messages = history_messages
        self.tool_choice = tool_choice
        self.persona = persona
        self.count_prompt = count_prompt
        self._on_load = on_load
        self._on_close = on_close

    async def load(self) -> None:
        """Start what `on_load` starts, then check the server answers and serves the model."""
        if self._on_load is not None:
            await self._on_load()
        await check_server(self.client, self.model, what="Chat model")

    async def open_session(self) -> AudioLLMSession:
        """A new `ChatLLMSession`; this backend never refuses one."""
        return ChatLLMSession(backend=self)

    async def close(self) -> None:
        """Close the HTTP client, then await `on_close`."""
        await self.client.close()
        if self._on_close is not None:
            await self._on_close()


class ChatLLMSession(AudioLLMSession):
    """One call's conversation with the chat model: its messages and the turn in flight."""

    def __init__(self, *, backend: ChatLLMBackend):
        self._backend = backend
        # The conversation as sent: user, assistant (with tool_calls) and tool messages.
        self._messages: list[dict] = []
        self._turn_start = 0  # index in _messages where the slot's current turn began
        self._turn_audio: bytes | None = None
        self._turn_heard = True  # whether the caller heard (or will hear) the last reply
        self._stream = None
        self._cancelled = False
        self._transcript = EarlyTranscript(backend.transcribe)

    # Caller's words ---------------------------------------------------------------------

    async def prepare(self, audio: bytes) -> str | None:
        """Start transcribing `audio`; returns its transcript, which `respond()` reuses for the
        same audio."""
        return await asyncio.shield(self._transcript.start(audio))

    def _caller_message(self, request: TurnRequest, text: str) -> str:
        if request.dtmf or request.silence or request.answered_by:
            return turn_prompt(request)
        if text:
            return text
        return OPENING_PROMPT if not self._messages else GO_ON_PROMPT

    def _begin_turn(self, request: TurnRequest, user_text: str) -> None:
        audio = request.audio
        if (audio is not None and self._turn_audio is not None and not self._turn_heard
                and audio.startswith(self._turn_audio)):
            # The caller only paused: the slot dropped the reply they never heard and this
            # audio holds the earlier words too, so they replace that unanswered turn.
            del self._messages[self._turn_start:]
        self._turn_start = len(self._messages)
        self._turn_audio = audio
        self._turn_heard = False  # until the reply is complete, or `truncate` says
        self._messages.append({"role": "user", "content": user_text})

    # The turn -----------------------------------------------------------------------------

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Add the turn to the conversation and stream the model's reply, spoken as it comes.

        The caller's audio is transcribed first (a turn with no words ends there, unanswered);
        tool results continue the model's own turn. Each request to the model yields a
        `ModelUsage`; a server that fails, times out or sends nothing ends the turn with
        `EndOfTurn(error=...)`.
        """
        self._cancelled = False
        if request.tool_results:
            self._add_tool_results(request)
        else:
            text = ""
            if request.audio is not None:
                text = await asyncio.shield(self._transcript.take(cap_input(request.audio)))
                if self._cancelled:
                    return
                if not text:  # noise, a cough: nothing to answer
                    yield CallerText(text=text)
                    yield EndOfTurn()
                    return
            self._begin_turn(request, self._caller_message(request, text))
            if text or request.dtmf:
                yield CallerText(text=text or f"(keypad) {request.dtmf}")
        async for event in self._complete(request):
            yield event

    def _add_tool_results(self, request: TurnRequest) -> None:
        for result in request.tool_results:
            self._messages.append({"role": "tool", "tool_call_id": result.call_id,
                                   "content": json.dumps(result.result, ensure_ascii=False)})

    def _tool_choice(self, request: TurnRequest, tools: list[dict]) -> str | dict | None:
        choice = self._backend.tool_choice
        if not choice or choice in ("auto", "required", "none"):
            return choice
        caller_spoke = request.audio is not None or request.dtmf
        if caller_spoke and any(t["function"].get("name") == choice for t in tools):
            return {"type": "function", "function": {"name": choice}}
        return None

    def _request_messages(self, request: TurnRequest) -> list[dict]:
        instructions = request.instructions.strip()
        persona = "" if _NAMES_ROLE.search(instructions) else self._backend.persona
        system = "\n\n".join(p for p in (persona, instructions, PHONE_STYLE) if p)
        past = self._messages[:self._turn_start][-self._backend.history_messages:]
        messages = well_formed([*past, *self._messages[self._turn_start:]])
        # No content beside tool calls is left out, not null: llama.cpp refuses a null.
        return [{"role": "system", "content": system},
                *({k: v for k, v in m.items() if k != "content" or v is not None}
                  for m in messages)]

    async def _complete(self, request: TurnRequest) -> AsyncIterator[Event]:
        backend = self._backend
        if self._cancelled:
            return
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = openai_tools(request.tools)
            if choice := self._tool_choice(request, extra["tools"]):
                extra["tool_choice"] = choice
        if backend.temperature is not None:
            extra["temperature"] = backend.temperature
        if backend.seed is not None:
            extra["seed"] = backend.seed
        messages = self._request_messages(request)
        counting = None
        if backend.count_prompt is not None:  # alongside the request, not before it
            counting = asyncio.ensure_future(asyncio.to_thread(backend.count_prompt, messages))
        # The reply goes into the conversation as it is spoken, so a barge-in at any point
        # leaves what was said there for `truncate` to cut to what was heard.
        reply: dict[str, Any] = {"role": "assistant", "content": None}
        self._messages.append(reply)
        sentences = PhraseBuffer()
        said: list[str] = []
        calls: dict[int, dict] = {}
        usage = ModelUsage()
        chunks = 0
        started = time.monotonic()
        first_token: float | None = None
        error: str | None = None
        try:
            stream = await asyncio.wait_for(backend.client.chat.completions.create(
                model=backend.model, messages=messages, stream=True,
                max_tokens=backend.max_tokens, stream_options={"include_usage": True}, **extra,
            ), backend.first_token_timeout_s)
            self._stream = stream
            if self._cancelled:
                return
            chunk_iter = aiter(stream)
            while True:
                budget = backend.first_token_timeout_s
                if first_token is None:
                    budget -= time.monotonic() - started
                try:
                    chunk = await asyncio.wait_for(anext(chunk_iter), max(budget, 0.01))
                except StopAsyncIteration:
                    break
                if self._cancelled:
                    return
                if getattr(chunk, "usage", None) is not None:
                    usage = ModelUsage(tokens_in=chunk.usage.prompt_tokens,
                                       tokens_out=chunk.usage.completion_tokens)
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta is None:
                    continue
                content = delta.content or ""
                if not isinstance(content, str):
                    raise LLMFailure(f"content is not text: {content!r:.80}")
                if content or delta.tool_calls:
                    chunks += 1
                    if first_token is None:
                        first_token = time.monotonic()
                for call in delta.tool_calls or ():
                    add_tool_call_fragment(calls, call)
                phrases = sentences.push(content)
                if not said and not phrases:
                    phrases = sentences.first_clause()
                for sentence in phrases:
                    async for event in self._say(sentence, said, reply):
                        yield event
            for sentence in sentences.flush():
                async for event in self._say(sentence, said, reply):
                    yield event
        except TimeoutError:
            waited = "its first token" if first_token is None else "its next token"
            error = (f"no answer from the chat model for {backend.first_token_timeout_s:g} s "
                     f"waiting for {waited}")
        except Exception as exc:
            if self._cancelled:
                return
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await self._close_stream()
        if self._cancelled:
            return
        tool_calls = [tool_call_of(call) for call in calls.values() if call["name"]]
        if error is None and not said and not tool_calls:
            # Say the flow's words ourselves rather than nothing: small models often send an
            # empty reply once a tool has answered.
            for result in request.tool_results:
                for sentence in _split(result.result.get("say")):
                    async for event in self._say(sentence, said, reply):
                        yield event
            if not said:
                error = "the chat model sent no words and no tool call"
        if usage.tokens_out is None and chunks:  # the server reports no usage: count chunks
            usage = ModelUsage(tokens_out=chunks)
        if usage.tokens_in is None and counting is not None:
            usage = ModelUsage(tokens_in=await counting, tokens_out=usage.tokens_out)
        yield ModelUsage(
            first_token_ms=None if first_token is None else int((first_token - started) * 1000),
            tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
        )
        if error is not None:
            logger.error(f"chat model failed the turn: {error}")
            yield EndOfTurn(error=error)
            return
        if tool_calls:
            reply["tool_calls"] = [
                {"id": c.call_id, "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in tool_calls
            ]
        self._turn_heard = True  # it plays in full unless `truncate` says otherwise
        for call in tool_calls:
            yield call
        yield EndOfTurn()

    async def _say(self, sentence: str, said: list[str], reply: dict) -> AsyncIterator[Event]:
        text = spoken(sentence)
        if not text:
            return
        said.append(text)
        reply["content"] = " ".join(said)
        yield TextDelta(text=text)
        audio, rate = await asyncio.to_thread(self._backend.speak, text)
        if not self._cancelled:
            yield AudioChunk(audio=audio, sample_rate=rate)

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                await stream.close()
            except Exception:  # already broken: nothing more to release
                pass

    # Barge-in ---------------------------------------------------------------------------

    async def cancel(self) -> None:
        """Stop the turn and close the HTTP stream, so the server stops generating."""
        self._cancelled = True
        # Closing the response drops the connection: the server stops generating.
        await self._close_stream()

    async def truncate(self, heard_text: str) -> None:
        """Keep only what the caller heard of this turn's replies, in order."""
        heard = " ".join(heard_text.split())
        self._turn_heard = bool(heard)
        kept: list[dict] = []
        for message in self._messages[self._turn_start:]:
            if message["role"] == "assistant" and message.get("content"):
                content = message["content"]
                if heard.startswith(content):
                    heard = heard[len(content):].lstrip()
                else:
                    content, heard = heard, ""
                message = {**message, "content": content or None}
                if not message["content"] and not message.get("tool_calls"):
                    continue
            kept.append(message)
        self._messages[self._turn_start:] = kept

    async def close(self) -> None:
        """Cancel any turn in progress."""
        await self.cancel()


def _split(text: object) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        return []
    buffer = SentenceBuffer()
    return buffer.push(text + " ") + buffer.flush()
