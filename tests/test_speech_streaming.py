"""The model-agnostic parts of the speech-model backends, with small fakes of a model.

`FakeSpeechModel.generate` behaves like Fun-Audio-Chat's: the streamer first gets the
prompt (2-D), then per step a 1-D text token and a (1, 5) group of speech codes; it
consults the stopping criteria after every step. `Token2Wav` is CosyVoice3's `token2wav`
in arithmetic: what it renders and holds back per call, so the window is tested against
what the real one does (960 samples, 40 ms at 24 kHz, per code).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from callwright.agent.backend import AudioChunk, TextDelta, ToolCall, TurnRequest
from callwright.agent.backends.speech_turn import SpeechTurnResult, stream_speech_turn
from callwright.agent.backends.streaming import (
    CancelCriterion,
    GenerationThread,
    TextDecoder,
    TokenStreamer,
    WordChunker,
)
from callwright.agent.backends.turns import BoundedHistory, cap_input, extract_tool_calls
from callwright.agent.backends.vocoder import CodeWindow

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


class Token2Wav:
    """`CosyVoice3Model.token2wav` (CosyVoice 2db78e7, cosyvoice/cli/model.py) with codes as mel.

    Flow (`CausalMaskedDiffWithDiT.inference`): 2 mel frames per code, for all codes but
    the last `pre_lookahead_len` (3) unless finalising; then `mel[token_offset * 2:]`.
    HiFT: the new mel joins the per-uuid cache and the whole cache is re-synthesised
    (480 samples a frame); not finalising, `CausalHiFTGenerator.inference` holds back 8
    frames (3 for the f0 predictor's right context, 4 for `conv_pre_look_right`, 1 cut
    after the iSTFT); the output is what lies past the cache's `speech_offset`. Each
    sample carries its code's value, so repeats and gaps show.
    """

    sample_rate = 24_000
    HELD_FRAMES = 8

    def __init__(self) -> None:
        self.mel: list[int] | None = None  # hift_cache_dict[uuid]["mel"]
        self.speech_offset = 0
        self.calls: list[tuple[int, int, bool]] = []  # (len(codes), offset, finalize)
        self.resets = 0

    def push(self, codes: list[int], offset: int, finalize: bool) -> np.ndarray:
        self.calls.append((len(codes), offset, finalize))
        rendered = codes if finalize else codes[:-3]
        mel = [c for c in rendered for _ in range(2)][offset * 2:]
        self.mel = (self.mel or []) + mel
        frames = len(self.mel) if finalize else max(len(self.mel) - self.HELD_FRAMES, 0)
        speech = np.repeat(np.asarray(self.mel[:frames], dtype=np.float32), 480)
        speech = speech[self.speech_offset:]
        self.speech_offset += len(speech)
        return speech / 8192  # keeps the samples within [-1, 1] for the PCM conversion

    def reset(self) -> None:
        self.resets += 1
        self.mel, self.speech_offset = None, 0


async def run(model: FakeSpeechModel, *, cancel_after: int | None = None, vocoder=None):
    cancel = CancelCriterion()
    vocoder = vocoder or Token2Wav()
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


def vocode(codes: list[int], vocoder: Token2Wav, **window_args) -> np.ndarray:
    """Codes in groups of five, as the speech head emits them, then the end."""
    window = CodeWindow(vocoder, **window_args)
    audio = [a for i in range(0, len(codes), 5) for a in window.push(codes[i:i + 5])]
    audio.append(window.finish())
    return np.concatenate([a for a in audio if a is not None]) * 8192


def test_code_window_hands_token2wav_exactly_one_hop_plus_lookahead():
    vocoder = Token2Wav()
    window = CodeWindow(vocoder)
    assert window.push(list(range(17))) == []  # 15 + 3 look-ahead not there yet
    assert [len(a) for a in window.push([17, 18, 19, 20, 21])] == [15 * 960 - 8 * 480]
    # token2wav renders from the offset to the end less the look-ahead: given the 22 codes
    # it had, it would have rendered 19 codes, 4 of them again in the next call.
    assert vocoder.calls == [(18, 0, False)]
    window.push(list(range(22, 40)))
    assert vocoder.calls == [(18, 0, False), (33, 15, False)]
    assert len(window.finish()) == (40 - 30) * 960 + 8 * 480
    assert vocoder.calls[-1] == (40, 30, True) and window.finish() is None


@pytest.mark.parametrize("n", [1, 3, 17, 18, 19, 33, 60, 150, 450])
def test_vocoded_audio_is_every_code_once_40_ms_each(n):
    codes = list(range(1, n + 1))  # each sample carries its code: repeats and gaps show
    audio = vocode(codes, Token2Wav())
    assert len(audio) == n * 960  # 150 codes: 6.0 s, not 168 codes' worth
    assert np.array_equal(audio, np.repeat(np.asarray(codes, dtype=np.float32), 960))


def test_window_cuts_keep_left_context_and_the_hift_cache():
    vocoder = Token2Wav()
    vocode(list(range(1, 451)), vocoder)  # cuts at 200 and 400 codes
    assert vocoder.resets == 1  # only finish() dropped the HiFT cache
    offsets = [offset for _, offset, _ in vocoder.calls]
    assert offsets[13:15] == [195, 10]  # cut by 200, not at the offset: 10 codes of context


def test_past_24_s_the_hift_reset_skips_only_what_hift_held_back():
    codes = list(range(1, 701))
    vocoder = Token2Wav()
    audio = vocode(codes, vocoder)
    assert vocoder.resets == 2  # at the third cut (600 codes vocoded), as upstream; and the end
    # Upstream drops the cache with 8 mel frames (4 codes, 160 ms) still held back in it.
    kept = codes[:596] + codes[600:]  # the third cut came at 600 codes
    assert np.array_equal(audio, np.repeat(np.asarray(kept, dtype=np.float32), 960))


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
    from callwright.agent.backends.qwen_omni_random import save_tiny

    return save_tiny(tmp_path_factory.mktemp("omni"))


async def test_qwen_omni_caps_input_and_cancels_within_a_step(tiny_omni):
    from callwright.agent.backends.qwen_omni import QwenOmniBackend

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


class StubCosyVoice3:
    """`cosyvoice.cli.cosyvoice.CosyVoice3` with upstream's signatures and no weights.

    The constructor's parameters are those at CosyVoice 2db78e7 (cli/cosyvoice.py:191);
    `model.token2wav` has `CosyVoice3Model.token2wav`'s (cli/model.py:405), keeps its
    HiFT cache in `hift_cache_dict[uuid]` as it does, and renders like `Token2Wav`.
    """

    def __init__(self, model_dir, load_trt=False, load_vllm=False, fp16=False,
                 trt_concurrent=1):
        self.model = StubCosyVoice3Model()


class StubCosyVoice3Model:
    def __init__(self) -> None:
        estimator = type("DiT", (), {"static_chunk_size": 50})()  # cosyvoice3.yaml: 25 x 2
        self.flow = type("Flow", (), {"decoder": type("CFM", (), {"estimator": estimator})()})()
        self.hift_cache_dict: dict = {}
        self.calls: list[dict] = []
        self._renders: dict[str, Token2Wav] = {}

    def token2wav(self, token, prompt_token, prompt_feat, embedding, token_offset, uuid,
                  stream=False, finalize=False, speed=1.0):
        self.calls.append(dict(stream=stream, speed=speed, prompt_token=tuple(prompt_token.shape),
                               prompt_feat=tuple(prompt_feat.shape),
                               embedding=tuple(embedding.shape)))
        if self.hift_cache_dict[uuid] is None:  # KeyError for an unknown uuid, as upstream
            self._renders[uuid] = Token2Wav()
        self.hift_cache_dict[uuid] = "cached"
        audio = self._renders[uuid].push(token[0].tolist(), token_offset, finalize)
        return torch.from_numpy(audio).reshape(1, -1)


@pytest.fixture
def stub_cosyvoice(monkeypatch):
    import sys
    import types

    module = types.ModuleType("cosyvoice.cli.cosyvoice")
    module.CosyVoice3 = StubCosyVoice3
    for name in ("cosyvoice", "cosyvoice.cli"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "cosyvoice.cli.cosyvoice", module)


def test_cosyvoice_vocoder_loads_and_calls_token2wav_as_upstream(stub_cosyvoice, tmp_path):
    from callwright.agent.backends.funaudiochat import CosyVoiceVocoder

    speakers = tmp_path / "spk2info.pt"  # shaped like upstream's utils/new_spk2info.pt
    torch.save({"中文女": {"embedding": torch.randn(1, 192)}}, speakers)
    vocoder = CosyVoiceVocoder.load(model_dir=tmp_path, speaker_path=speakers, device="cpu")
    model = vocoder._model
    assert model.flow.decoder.estimator.static_chunk_size == 1500  # get_audio_detokenizer
    codes = list(range(1, 151))
    assert np.array_equal(vocode(codes, vocoder), np.repeat(np.float32(codes), 960))
    assert {(c["stream"], c["speed"], c["prompt_token"], c["prompt_feat"], c["embedding"])
            for c in model.calls} == {(False, 1.0, (1, 0), (1, 0, 80), (1, 192))}
    assert list(model.hift_cache_dict.values()) == [None]  # the turn's entry went; a fresh one


def test_fun_audio_chat_generates_speech_with_upstream_settings(tmp_path):
    from callwright.agent.backends.funaudiochat import FunAudioChatBackend, FunAudioChatPaths

    class Model:
        # The model's own defaults (modeling_funaudiochat.py:790): no forced <|audio_bos|>.
        sp_gen_kwargs = {"text_greedy": False, "only_crq_sampling": True,
                         "disable_speech": False, "force_text_abos": False}

        def generate(self, **kwargs):
            self.kwargs = kwargs
            return "text ids", "speech ids"

    vocab = {"<|im_end|>": 151645, "<|endoftext|>": 151643, "<|audio_bos|>": 151670,
             "<|sil|>": 151673}
    tokenizer = type("Tokenizer", (), {"convert_tokens_to_ids": staticmethod(vocab.get),
                                       "eos_token_id": 151645})()
    backend = FunAudioChatBackend(paths=FunAudioChatPaths(
        source_dir=tmp_path, model_dir=tmp_path, cosyvoice_dir=tmp_path, speaker_path=tmp_path))
    backend.model, backend.processor = Model(), type("Processor", (), {"tokenizer": tokenizer})()
    cancel = CancelCriterion()
    assert backend.generate({"input_ids": 1}, "streamer", cancel) == ("text ids", "speech ids")
    assert backend.model.sp_gen_kwargs["force_text_abos"] is True
    kwargs = backend.model.kwargs
    assert {k: kwargs[k] for k in ("do_sample", "temperature", "top_p", "top_k",
                                   "repetition_penalty", "eos_token_id", "pad_token_id")} == {
        "do_sample": True, "temperature": 0.8, "top_p": 0.9, "top_k": 0,
        "repetition_penalty": 1.2, "eos_token_id": 151645, "pad_token_id": 151643}
    assert kwargs["bad_words_ids"] == [[151670, 151673]]  # no <|sil|> right after bos
    assert kwargs["stopping_criteria"] == [cancel] and kwargs["streamer"] == "streamer"
    assert kwargs["input_ids"] == 1 and kwargs["max_new_tokens"] == backend.max_text_tokens
