"""Fun-Audio-Chat's backend on upstream's own classes at tiny sizes, with random weights.

Runs where the upstream source imports: in the separate environment that
`make fac-test FAC_SRC=/path/to/Fun-Audio-Chat` builds (README, "Fun-Audio-Chat with real
weights"); elsewhere the module is skipped, saying why. Nothing is downloaded: the model
is `FunAudioChatForConditionalGeneration` built from a tiny `FunAudioChatConfig`, saved
and loaded back through `FunAudioChatBackend.load()`, and the vocoder is CosyVoice3's
`CosyVoice3Model` around a tiny `CausalMaskedDiffWithDiT` flow and `CausalHiFTGenerator`
(the classes and layout of `cosyvoice3.yaml`, smaller). Random weights say nothing of
quality or latency; they do run every call the worker makes, with upstream's code.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

SOURCE = Path(os.environ.get("FAC_SOURCE_DIR", "")) if os.environ.get("FAC_SOURCE_DIR") else None
if SOURCE is not None:  # the three paths upstream's utils/cosyvoice_detokenizer.py adds
    cosyvoice_src = SOURCE / "third_party" / "CosyVoice"
    for path in (cosyvoice_src / "third_party" / "Matcha-TTS", cosyvoice_src, SOURCE):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
try:
    import torch
    from cosyvoice.cli.model import CosyVoice3Model
    from cosyvoice.flow.DiT.dit import DiT
    from cosyvoice.flow.flow import CausalMaskedDiffWithDiT
    from cosyvoice.flow.flow_matching import CausalConditionalCFM
    from cosyvoice.hifigan.f0_predictor import CausalConvRNNF0Predictor
    from cosyvoice.hifigan.generator import CausalHiFTGenerator
    from cosyvoice.transformer.upsample_encoder import PreLookaheadLayer
    from funaudiochat.configuration_funaudiochat import FunAudioChatConfig
    from funaudiochat.modeling_funaudiochat import FunAudioChatForConditionalGeneration
    from funaudiochat.processing_funaudiochat import FunAudioChatProcessor
    from funaudiochat.register import register_funaudiochat
    from omegaconf import DictConfig
except ImportError as exc:
    pytest.skip(f"Fun-Audio-Chat's upstream source does not import here ({exc}); "
                "`make fac-test FAC_SRC=...` builds its environment and runs this file",
                allow_module_level=True)

from callwright.agent.backend import AudioChunk, EndOfTurn, TextDelta, TurnRequest  # noqa: E402
from callwright.agent.backends.funaudiochat import (  # noqa: E402
    CosyVoiceVocoder,
    FunAudioChatBackend,
    FunAudioChatPaths,
)
from callwright.agent.backends.turns import BoundedHistory  # noqa: E402
from callwright.agent.backends.vocoder import CodeWindow  # noqa: E402

SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|AUDIO|>", "<|audio_bos|>",
           "<|audio_eos|>", "<|audio_pad|>", "<|sil|>"]
# Enough words that a random model rarely samples <|im_end|> at once.
WORDS = ["[UNK]", "system", "user", "assistant", "hello", "there", "how", "can", "I", "help",
         "?", ".", ","] + [f"w{i}" for i in range(107)]
SPEECH_CODES = 6561  # CosyVoice3's vocabulary; 6561 and 6562 are bos and eos, as upstream


def _tokenizers():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    def word_level(vocab: dict[str, int], **special) -> PreTrainedTokenizerFast:
        model = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", **special)

    text = word_level({w: i for i, w in enumerate(WORDS + SPECIAL)},
                      eos_token="<|im_end|>", pad_token="<|endoftext|>")
    text.add_special_tokens({"additional_special_tokens": SPECIAL})
    speech_vocab = {f"<|s_{i}|>": i for i in range(SPEECH_CODES + 2)}
    speech_vocab |= {"<|audio_pad|>": SPEECH_CODES + 2, "[UNK]": SPEECH_CODES + 3}
    speech = word_level(speech_vocab, pad_token="<|audio_pad|>", audio_group_size=5)
    speech.add_special_tokens({"additional_special_tokens": ["<|audio_pad|>"]})
    return text, speech


def save_tiny_fun_audio_chat(directory: Path) -> Path:
    """A tiny random `FunAudioChatForConditionalGeneration` and its processor, saved."""
    from transformers import WhisperFeatureExtractor

    register_funaudiochat()
    text, speech = _tokenizers()
    ids = {t: text.convert_tokens_to_ids(t) for t in SPECIAL}
    config = FunAudioChatConfig(
        audio_config=dict(
            num_mel_bins=128, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
            d_model=64, output_dim=64, codebook_size=SPEECH_CODES + 4,
            bos_token_id=SPEECH_CODES, eos_token_id=SPEECH_CODES + 1,
            pad_token_id=speech.pad_token_id, group_size=5, continuous_features_mode="replace",
            crq_transformer_config=dict(
                model_type="qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                vocab_size=SPEECH_CODES + 4)),
        text_config=dict(
            model_type="qwen3", vocab_size=len(text), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            audio_bos_index=ids["<|audio_bos|>"], audio_eos_index=ids["<|audio_eos|>"],
            sil_index=ids["<|sil|>"]),
        audio_token_index=ids["<|AUDIO|>"],
    )
    torch.manual_seed(0)
    FunAudioChatForConditionalGeneration(config).save_pretrained(directory)
    FunAudioChatProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=128, sampling_rate=16000),
        speech_tokenizer=speech, tokenizer=text,
    ).save_pretrained(directory)
    return directory


def tiny_cosyvoice3() -> CosyVoice3Model:
    """CosyVoice3's token2wav path as `cosyvoice3.yaml` lays it out, at tiny sizes.

    The rates are the real ones (25 codes/s, 2 mel frames a code, HiFT upsampling 8x5x3
    with hop 4: 480 samples a frame), so each code is 40 ms of 24 kHz audio.
    """
    torch.manual_seed(0)
    cfm = DictConfig({"sigma_min": 1e-06, "solver": "euler", "t_scheduler": "cosine",
                      "training_cfg_rate": 0.2, "inference_cfg_rate": 0.7,
                      "reg_loss_type": "l1"})
    flow = CausalMaskedDiffWithDiT(
        input_size=80, output_size=80, spk_embed_dim=192, output_type="mel",
        vocab_size=SPEECH_CODES, input_frame_rate=25, only_mask_loss=True, token_mel_ratio=2,
        pre_lookahead_len=3,
        pre_lookahead_layer=PreLookaheadLayer(in_channels=80, channels=32, pre_lookahead_len=3),
        decoder=CausalConditionalCFM(
            in_channels=240, n_spks=1, spk_emb_dim=80, cfm_params=cfm,
            estimator=DiT(dim=32, depth=1, heads=2, dim_head=16, ff_mult=2, mel_dim=80,
                          mu_dim=80, spk_dim=80, out_channels=80, static_chunk_size=50,
                          num_decoding_left_chunks=-1)))
    hift = CausalHiFTGenerator(
        in_channels=80, base_channels=16, nb_harmonics=8, sampling_rate=24000, nsf_alpha=0.1,
        nsf_sigma=0.003, nsf_voiced_threshold=10, upsample_rates=[8, 5, 3],
        upsample_kernel_sizes=[16, 11, 7], istft_params={"n_fft": 16, "hop_len": 4},
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
        source_resblock_kernel_sizes=[7, 7, 11],
        source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], lrelu_slope=0.1,
        audio_limit=0.99, conv_pre_look_right=4,
        f0_predictor=CausalConvRNNF0Predictor(num_class=1, in_channels=80, cond_channels=16))
    return CosyVoice3Model(None, flow.eval(), hift.eval(), False)


class RecordingVocoder:
    """Passes through to the real vocoder and records each call."""

    def __init__(self, inner: CosyVoiceVocoder):
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.calls: list[tuple[int, int, bool, int]] = []  # codes, offset, finalize, samples

    def push(self, codes: list[int], offset: int, finalize: bool) -> np.ndarray:
        audio = self.inner.push(codes, offset, finalize)
        self.calls.append((len(codes), offset, finalize, len(audio)))
        return audio

    def reset(self) -> None:
        self.inner.reset()


def vocoder() -> CosyVoiceVocoder:
    return CosyVoiceVocoder(model=tiny_cosyvoice3(), speaker=torch.randn(1, 192), device="cpu")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_fun_audio_chat(tmp_path_factory.mktemp("tiny-fun-audio-chat"))


@pytest.fixture
async def backend(model_dir, tmp_path):
    import funaudiochat

    source = SOURCE or Path(funaudiochat.__file__).parent.parent
    recording = RecordingVocoder(vocoder())
    fac = FunAudioChatBackend(
        paths=FunAudioChatPaths(source_dir=source, model_dir=model_dir,
                                cosyvoice_dir=tmp_path, speaker_path=tmp_path),
        device="cpu", dtype="float32", max_text_tokens=40, vocoder=recording)
    await fac.load()  # AutoConfig/AutoProcessor/AutoModelForSeq2SeqLM, as on a GPU host
    return fac


def speech(seconds: float) -> bytes:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(int(16000 * seconds)) * 3000).astype(np.int16).tobytes()


@pytest.mark.parametrize("n", [18, 150, 700])
def test_token2wav_renders_every_code_once_40_ms_each(n):
    """CosyVoice's own token2wav behind the window: exactly one hop of audio per step."""
    recording = RecordingVocoder(vocoder())
    window = CodeWindow(recording)
    codes = [int(c) for c in np.random.default_rng(n).integers(0, SPEECH_CODES, n)]
    audio = [a for i in range(0, n, 5) for a in window.push(codes[i:i + 5])]
    audio.append(window.finish())
    total = sum(len(a) for a in audio if a is not None)
    # Past 600 codes the HiFT cache is dropped with 8 mel frames (4 codes) held back in it,
    # as upstream's server drops it; below that nothing is lost or repeated.
    assert total == (n - (4 if n >= 600 else 0)) * 960
    assert recording.inner._model.flow.decoder.estimator.static_chunk_size == 1500
    steps = [c for c in recording.calls if not c[2]]
    assert all(codes_ == offset + 18 for codes_, offset, _, _ in steps)
    # Each step after the first gives one hop: 15 codes, 0.6 s (the first holds back
    # HiFT's 8 frames of look-ahead, which later calls release).
    first = [c for c in steps if c[1] == 0][:1]
    assert first and first[0][3] == 15 * 960 - 8 * 480
    assert {samples for _, offset, _, samples in steps[1:14]} <= {15 * 960}


async def test_a_turn_streams_audio_in_windows_while_generating(backend):
    session = await backend.open_session()
    events = [e async for e in session.respond(TurnRequest(audio=speech(2)))]
    await session.close()
    assert isinstance(events[-1], EndOfTurn) and events[-1].error is None
    chunks = [e for e in events if isinstance(e, AudioChunk)]
    calls = backend.vocoder.calls
    assert len([c for c in calls if not c[2]]) >= 2, calls  # windows, not one render at the end
    assert all(c.sample_rate == 24_000 for c in chunks)
    assert sum(len(c.audio) for c in chunks) == 2 * sum(c[3] for c in calls)
    kinds = [type(e) for e in events]
    first_audio = kinds.index(AudioChunk)
    assert any(k is TextDelta for k in kinds[first_audio:]), "audio came only at the end"


async def test_cancel_lands_within_one_step_and_nothing_follows(backend):
    session = await backend.open_session()
    turn = session.respond(TurnRequest(audio=speech(2)))
    async for event in turn:
        if isinstance(event, AudioChunk):
            break
    await asyncio.wait_for(session.cancel(), timeout=30)
    assert session._cancel.steps_after_cancel <= 1
    assert [e async for e in turn] == []
    events = [e async for e in session.respond(TurnRequest(audio=speech(1)))]
    assert isinstance(events[-1], EndOfTurn)  # the session goes on
    await session.close()


async def test_what_was_heard_is_kept_and_history_and_the_30_s_cap_hold(backend):
    session = await backend.open_session()
    events = [e async for e in session.respond(TurnRequest(audio=speech(2)))]
    said = " ".join(e.text for e in events if isinstance(e, TextDelta))
    history = session._history
    assert [t.agent_text for t in history] == [said] and said
    heard = said.split()[0]
    await session.truncate(heard)
    assert [t.agent_text for t in history] == [heard]
    audio_id = backend.processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")

    def placeholders(seconds: float, past: BoundedHistory) -> int:
        inputs = backend.build_inputs(TurnRequest(audio=speech(seconds)), past)
        return int((inputs["input_ids"] == audio_id).sum())

    # 5 placeholders a second of caller audio, capped at 30 s; the past clip is re-sent.
    assert placeholders(2, BoundedHistory(max_turns=8)) == 10
    assert placeholders(40, BoundedHistory(max_turns=8)) == placeholders(30, BoundedHistory(
        max_turns=8)) == 150
    assert placeholders(2, history) == 20
    prompt = backend.processor.tokenizer.decode(
        backend.build_inputs(TurnRequest(audio=speech(2)), history)["input_ids"][0])
    assert f"assistant {heard} <|im_end|>" in prompt  # the agent's turn, as heard
    assert said == heard or said not in prompt
    await session.close()


async def test_special_tokens_in_a_reply_never_reach_the_history(backend):
    tokenizer = backend.processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(["hello", "<|AUDIO|>", "<|audio_pad|>", "there",
                                           "<|im_start|>", "<|im_end|>"])
    said = backend.decode_text(ids)
    assert said.split() == ["hello", "there"]
    history = BoundedHistory(max_turns=8)
    history.add(caller_audio=speech(1), agent_text=said)
    inputs = backend.build_inputs(TurnRequest(audio=speech(1)), history)  # two clips, two
    assert int((inputs["input_ids"] == tokenizer.convert_tokens_to_ids("<|AUDIO|>")).sum()) \
        == 10


async def test_served_by_a_model_worker_with_a_secret(backend):
    from callwright.agent.backends.worker_pool import WorkerPool
    from callwright.agent.workers.server import ModelWorker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "fac-" + "k" * 28
    server = await ModelWorker(backend=backend, secret=secret).serve(host="127.0.0.1",
                                                                     port=port)
    try:
        pool = WorkerPool(urls=[f"ws://127.0.0.1:{port}"], secret=secret)
        await pool.load()
        session = await pool.open_session()
        events = [e async for e in session.respond(TurnRequest(audio=speech(1)))]
        await session.close()
        assert isinstance(events[-1], EndOfTurn) and events[-1].error is None
        assert any(isinstance(e, AudioChunk) for e in events)
    finally:
        server.close()
        await server.wait_closed()
