"""One turn of a model that streams text tokens and speech codes (Fun-Audio-Chat's shape).

`stream_speech_turn` reads a `GenerationThread` whose `generate` streams through a
`TokenStreamer` and stops on a `CancelCriterion`, and turns what streams out into
contract events: whole-word text
deltas, and 24 kHz audio chunks vocoded from the speech codes while generation goes on
(not at the end of the turn). It is model-agnostic, so the Fun-Audio-Chat worker uses
it and tests run it against small fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from callwright.agent.backend import AudioChunk, Event, TextDelta, ToolCall
from callwright.agent.backends.streaming import (
    CancelCriterion,
    GenerationThread,
    SpeechCodes,
    TextDecoder,
    TextTokens,
    WordChunker,
    float_to_pcm16,
    pcm_chunks,
)
from callwright.agent.backends.turns import extract_tool_calls
from callwright.agent.backends.vocoder import CodeWindow

TOOL_CALL_OPEN = "<tool_call>"


@dataclass(kw_only=True)
class SpeechTurnResult:
    """What a streamed speech turn produced, filled in by `stream_speech_turn`."""

    text: str = ""  # everything the model said, tool calls removed
    codes: int = 0  # valid speech codes received
    tool_calls: list[ToolCall] = field(default_factory=list)


async def stream_speech_turn(
    *,
    thread: GenerationThread,
    cancel: CancelCriterion,
    decode: Callable[[list[int]], str],
    markers: tuple[str, ...],
    speech_bos: int,
    speech_eos: int,
    window: CodeWindow,
    sample_rate: int,
    result: SpeechTurnResult,
) -> AsyncIterator[Event]:
    """Yield the turn's text and audio; on return `result` holds the bookkeeping.

    Codes `>= speech_bos` are control codes and are dropped; a group holding
    `speech_eos` ends the speech. After `cancel` is set nothing more is yielded.
    """
    decoder = TextDecoder(decode, markers)
    words = WordChunker()
    speaking = True
    shown = 0  # chars of text released; text from a tool call's opening tag on is held

    def audio_events(blocks) -> list[AudioChunk]:
        return [AudioChunk(audio=chunk, sample_rate=sample_rate)
                for block in blocks if block is not None and len(block)
                for chunk in pcm_chunks(float_to_pcm16(block), sample_rate=sample_rate)]

    try:
        async for item in thread.events():
            if cancel.is_set:
                return
            if isinstance(item, TextTokens):
                decoder.push(item.ids)
                visible = decoder.text.split(TOOL_CALL_OPEN, 1)[0]
                if text := words.push(visible[shown:]):
                    yield TextDelta(text=text)
                shown = len(visible)
            elif isinstance(item, SpeechCodes) and speaking:
                if speech_eos in item.codes:
                    speaking = False
                codes = [c for c in item.codes if 0 <= c < speech_bos]
                result.codes += len(codes)
                # Vocoding runs on a thread too: flow matching must not stall the loop.
                for event in audio_events(await asyncio.to_thread(window.push, codes)):
                    if cancel.is_set:
                        return
                    yield event
        if cancel.is_set:
            return
        if rest := words.flush():
            yield TextDelta(text=rest)
        for event in audio_events([await asyncio.to_thread(window.finish)]):
            if cancel.is_set:
                return
            yield event
        result.text, result.tool_calls = extract_tool_calls(decoder.text)
        for call in result.tool_calls:
            yield call
    finally:
        cancel.set()  # normal end, cancel or an abandoned consumer: generation stops
        await thread.join()
