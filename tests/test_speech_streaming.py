"""The model-agnostic parts of the speech-model backends, with small fakes of a model.

`FakeSpeechModel.generate` behaves like Fun-Audio-Chat's: the streamer first gets the
prompt (2-D), then per step a 1-D text token and a (1, 5) group of speech codes; it
consults the stopping criteria after every step. `FakeVocoder` returns 960 samples
(40 ms at 24 kHz) per new code, as CosyVoice3 does at 25 codes a second.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.backend import AudioChunk, TextDelta, ToolCall, TurnRequest
from agent.backends.speech_turn import SpeechTurnResult, stream_speech_turn
from agent.backends.streaming import (
    CancelCriterion,
    GenerationThread,
    TextDecoder,
    TokenStreamer,
    WordChunker,
)
from agent.backends.turns import BoundedHistory, cap_input, extract_tool_calls
from agent.backends.vocoder import CodeWindow

BOS, EOS = 16, 17  # speech control codes, as in the tiny Fun-Audio-Chat config
WORDS = ["<|audio_bos|>", "Hello", " there", ",", " how", " can", " I", " help", "?",
         "<|im_end|>"]


class FakeSpeechModel:
    def __init__(self, *, text: list[str] = WORDS, groups: int = 12, eos_at: int | None = None):
        self.vocab = list(dict.fromkeys(text))
        self.text = [self.vocab.index(t) for t in text]
        self.groups = groups
        self.eos_at = eos_at
        self.steps = 0
        self.step_s = 0.002

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def generate(self, streamer: TokenStreamer, cancel: CancelCriterion) -> None:
        ids = torch.zeros(1, 7, dtype=torch.long)
        streamer.put(ids)  # the prompt
        for step in range(max(len(self.text), self.groups)):
            time.sleep(self.step_s)  # a decoding step takes time
            self.steps += 1
            if step < len(self.text):
                streamer.put(torch.tensor([self.text[step]]))
            if step < self.groups:
                group = [(step * 5 + k) % BOS for k in range(5)]
                if step == 0:
                    group[0] = BOS  # control codes are dropped, not vocoded
                if step == self.eos_at:
                    group[2] = EOS
                streamer.put(torch.tensor([group]))
            ids = torch.cat([ids, torch.zeros(1, 1, dtype=torch.long)], dim=1)
            if cancel(ids, None).all():
                break
        streamer.end()


class FakeVocoder:
    sample_rate = 24_000

    def __init__(self) -> None:
        self.resets = 0
        self.done = 0  # codes turned into audio in the current window

    def push(self, codes: list[int], offset: int, finalize: bool) -> np.ndarray:
        assert offset == self.done, "the window must not skip or repeat codes"
        end = len(codes) if finalize else offset + 15
        self.done = end
        return np.full(960 * (end - offset), 0.25, dtype=np.float32)

    def reset(self) -> None:
        self.resets += 1
        self.done = 0


async def run(model: FakeSpeechModel, *, cancel_after: int | None = None, vocoder=None):
    cancel = CancelCriterion()
    vocoder = vocoder or FakeVocoder()
    result = SpeechTurnResult()
    thread = GenerationThread(lambda emit: model.generate(TokenStreamer(emit), cancel))
    events = []
    async for event in stream_speech_turn(
        thread=thread, cancel=cancel, decode=model.decode, markers=("<|audio_bos|>",
        "<|im_end|>"), speech_bos=BOS, speech_eos=EOS, window=CodeWindow(vocoder),
        sample_rate=24_000, result=result,
    ):
        events.append(event)
        if cancel_after is not None and len(events) == cancel_after:
            cancel.set()
            await thread.join()
    return events, result, cancel


async def test_text_and_audio_stream_interleaved_in_order():
    model = FakeSpeechModel(groups=12)
    events, result, _ = await run(model)
    text = " ".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Hello there, how can I help?"  # markers stripped, words intact
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    assert all(c.sample_rate == 24_000 and len(c.audio) <= 2 * 4800 for c in chunks)
    # 12 groups of 5, less the one control code: every valid code becomes 40 ms of audio.
    assert result.codes == 59
    assert sum(len(c.audio) for c in chunks) == 59 * 960 * 2
    kinds = [type(e) for e in events]
    # Audio started while text was still streaming, not at the end of the turn.
    assert kinds.index(AudioChunk) < max(i for i, k in enumerate(kinds) if k is TextDelta)
    assert result.text == "Hello there, how can I help?"


async def test_speech_eos_ends_the_audio():
    events, result, _ = await run(FakeSpeechModel(groups=12, eos_at=3))
    assert result.codes == 4 * 5 - 2  # the control code and the EOS are dropped
    assert sum(len(e.audio) for e in events if isinstance(e, AudioChunk)) == 18 * 960 * 2


async def test_cancel_stops_within_one_step_and_nothing_follows():
    model = FakeSpeechModel(text=WORDS * 20, groups=200)
    events, _, cancel = await run(model, cancel_after=3)
    assert len(events) == 3
    assert cancel.steps_after_cancel <= 1
    assert model.steps < 200  # it stopped, instead of running on for nobody


async def test_tool_calls_are_held_back_from_speech_and_reported():
    reply = ["Sure", ".", ' <tool_call>{"name": "book_table", ', '"arguments": {"people": 2}}',
             "</tool_call>", "<|im_end|>"]
    events, result, _ = await run(FakeSpeechModel(text=reply, groups=3))
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Sure."]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("book_table", {"people": 2})]
    assert result.text == "Sure."


def test_code_window_hop_lookahead_and_reset():
    vocoder = FakeVocoder()
    window = CodeWindow(vocoder, window_reset=30)
    assert window.push(list(range(17))) == []  # 15 + 3 look-ahead not there yet
    assert [len(a) for a in window.push([1])] == [15 * 960]
    assert [len(a) for a in window.push([1] * 15)] == [15 * 960]  # offset 30: window reset
    assert vocoder.resets == 1
    assert len(window.finish()) == 3 * 960
    assert window.finish() is None


def test_text_decoder_waits_for_whole_characters_and_words():
    pieces = {1: b"caf", 2: b"\xc3", 3: b"\xa9 ok", 4: b" <|im_end|>"}
    decoder = TextDecoder(lambda ids: b"".join(pieces[i] for i in ids).decode(errors="replace"),
                          ("<|im_end|>",))
    words = WordChunker()
    out = [words.push(decoder.push([i])) for i in (1, 2, 3, 4)]
    assert out == ["", "", "café", "ok"] and words.flush() == ""


def test_input_cap_and_bounded_history():
    audio = bytes(range(256)) * (16000 * 2 * 40 // 256)
    capped = cap_input(audio)
    assert len(capped) == 30 * 16000 * 2 and capped == audio[-len(capped):]
    history = BoundedHistory(max_turns=2)
    for i in range(3):
        history.add(caller_audio=b"x", agent_text=f"reply {i}")
    history.truncate_last("rep")
    assert [t.agent_text for t in history] == ["reply 1", "rep"]


def test_tool_call_parsing_survives_bad_json():
    text, calls = extract_tool_calls('a <tool_call>{"name": 1}</tool_call> b '
                                     '<tool_call>{oops}</tool_call>')
    assert calls == [] and text.startswith("a")


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory) -> Path:
    from agent.backends.qwen_omni_random import save_tiny

    return save_tiny(tmp_path_factory.mktemp("omni"))


async def test_qwen_omni_caps_input_and_cancels_within_a_step(tiny_omni):
    from agent.backends.qwen_omni import QwenOmniBackend

    backend = QwenOmniBackend(model_path=tiny_omni, max_text_tokens=40, max_speech_codes=40)
    await backend.load()
    session = await backend.open_session()
    with pytest.raises(Exception, match="one conversation"):
        await backend.open_session()
    history = BoundedHistory(max_turns=1)
    audio_id = backend.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    tokens = {s: int((backend.build_inputs(TurnRequest(audio=bytes(32000 * s)), history)
                      ["input_ids"] == audio_id).sum()) for s in (2, 30, 40)}
    assert tokens == {2: 50, 30: 750, 40: 750}  # 25 per second, capped at 30 s
    turn = session.respond(TurnRequest(audio=bytes(32000)))
    await anext(turn)
    await session.cancel()
    assert session._cancel.steps_after_cancel <= 1
    assert [e async for e in turn] == []
    await session.close()
    assert await backend.open_session()  # closing freed the model for the next call
