"""Qwen2.5-Omni (classes in transformers) as an audio LLM: speech in, text and speech out.

Loads from a local checkpoint directory only (`local_files_only=True`). Text streams
token by token from the thinker. Audio does not stream in transformers: the talker
starts when the thinker ends and token2wav renders the whole utterance at once, so
the waveform is cut into 200 ms chunks when it is ready. Cancel stops the thinker
and talker after the current decoding step (a `StoppingCriteria`) and abandons
token2wav before its next diffusion step (a forward pre-hook).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from loguru import logger

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    BackendBusy,
    Capabilities,
    EndOfTurn,
    Event,
    TextDelta,
    TurnRequest,
)
from callwright.agent.backends.streaming import (
    CancelCriterion,
    GenerationThread,
    TextDecoder,
    TextTokens,
    TokenStreamer,
    WordChunker,
    float_to_pcm16,
    pcm16_to_float,
    pcm_chunks,
)
from callwright.agent.backends.turns import BoundedHistory, cap_input, turn_prompt

OUTPUT_SAMPLE_RATE = 24_000
# Qwen2.5-Omni only speaks with this exact system prompt (model card); flow
# instructions follow it.
SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech."
)
_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|audio_bos|>", "<|audio_eos|>")


def audio_token_count(valid_mel_frames: int) -> int:
    """`<|AUDIO|>` placeholders for a clip: the encoder halves the frames twice (25/s)."""
    return ((valid_mel_frames - 1) // 2 + 1 - 2) // 2 + 1


class QwenOmniBackend(AudioLLM):
    """Qwen2.5-Omni from a local checkpoint; one conversation at a time.

    Args:
        model_path: The checkpoint directory (config.json, weights, spk_dict.pt).
        device: Torch device for the model.
        dtype: A torch dtype name for the weights, or "auto".
        speaker: The voice, a key of the checkpoint's speaker map; by default its first.
        max_text_tokens: Bound on the thinker's tokens per reply.
        max_speech_codes: Bound on the talker's codes per reply.
        history_turns: Past exchanges re-sent each turn.
    """

    name = "qwen-omni"
    capabilities = Capabilities(live_instructions=True, truncation=True)

    def __init__(
        self,
        *,
        model_path: Path,
        device: str = "cpu",
        dtype: str = "auto",
        speaker: str | None = None,
        max_text_tokens: int = 256,
        max_speech_codes: int = 2048,
        history_turns: int = 4,
    ):
        self._path = Path(model_path)
        self._device = device
        self._dtype = dtype
        self._speaker = speaker
        self.max_text_tokens = max_text_tokens
        self.max_speech_codes = max_speech_codes
        self.history_turns = history_turns
        self.model = None
        self.tokenizer = None
        self.features = None
        self._session: QwenOmniSession | None = None
        self.cancel: CancelCriterion | None = None  # the turn in progress

    async def load(self) -> None:
        """Load the model, tokenizer and feature extractor off the event loop, and hook the
        turn's cancel into the talker and token2wav.

        Raises:
            FileNotFoundError: No config.json at `model_path`, or no speakers for audio output.
        """
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import (
            AutoTokenizer,
            Qwen2_5OmniForConditionalGeneration,
            WhisperFeatureExtractor,
        )

        if not (self._path / "config.json").is_file():
            raise FileNotFoundError(f"no Qwen2.5-Omni checkpoint at {self._path} (config.json)")
        started = time.perf_counter()
        logger.info(f"Loading Qwen2.5-Omni from {self._path} on {self._device}")
        dtype = self._dtype if self._dtype == "auto" else getattr(torch, self._dtype)
        self.model = Qwen2_5OmniForConditionalGeneration.from_pretrained(
            self._path, local_files_only=True, dtype=dtype
        ).to(self._device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self._path, local_files_only=True)
        self.features = WhisperFeatureExtractor.from_pretrained(self._path, local_files_only=True)
        if not self.model.speaker_map:
            raise FileNotFoundError(f"{self._path}: no speakers (spk_dict.pt) for audio output")
        self._speaker = self._speaker or next(iter(self.model.speaker_map))
        # Between the thinker and the talker, and between diffusion steps, there is no
        # stopping hook: a pre-hook abandons the stage once the turn is cancelled.
        self.model.talker.register_forward_pre_hook(self._check_cancel)
        self.model.token2wav.code2wav_dit_model.register_forward_pre_hook(self._check_cancel)
        talker = self.model.config.talker_config
        self.talker_eos = [talker.tts_codec_pad_token_id, talker.tts_codec_end_token_id]
        params = sum(p.numel() for p in self.model.parameters()) / 1e6
        logger.info(f"Qwen2.5-Omni ready ({params:.1f} M parameters, voice {self._speaker}) "
                    f"in {time.perf_counter() - started:.1f}s")

    def _check_cancel(self, *_args) -> None:
        if self.cancel is not None:
            self.cancel.check()

    async def open_session(self) -> AudioLLMSession:
        """The one conversation this instance serves.

        Raises:
            RuntimeError: `load()` was not awaited.
            BackendBusy: A session is open already (until it is closed).
        """
        if self.model is None:
            raise RuntimeError("QwenOmniBackend.load() was not awaited")
        if self._session is not None:
            raise BackendBusy("this Qwen2.5-Omni instance serves one conversation at a time")
        self._session = QwenOmniSession(backend=self)
        return self._session

    def release(self, session: QwenOmniSession) -> None:
        """Free the instance for a new session if `session` is the one it serves (its `close()`)."""
        if self._session is session:
            self._session = None

    def build_inputs(self, request: TurnRequest, history: BoundedHistory) -> dict:
        """Token ids and Whisper features for the prompt: system, past turns, this turn."""
        clips = [cap_input(x.caller_audio) for x in history if x.caller_audio]
        audio = cap_input(request.audio) if request.audio else None
        if audio:
            clips.append(audio)
        feats = None
        counts: list[int] = []
        if clips:
            feats = self.features(
                [pcm16_to_float(c) for c in clips], sampling_rate=16_000,
                padding="max_length", return_attention_mask=True, return_tensors="pt",
            )
            counts = [audio_token_count(int(n)) for n in feats["attention_mask"].sum(-1)]
        clip_tokens = iter(counts)

        def user(has_audio: bool, text: str) -> str:
            body = f"<|audio_bos|>{'<|AUDIO|>' * next(clip_tokens)}<|audio_eos|>" if has_audio \
                else text
            return f"<|im_start|>user\n{body}<|im_end|>\n"

        system = SYSTEM_PROMPT + (f"\n\n{request.instructions}" if request.instructions else "")
        prompt = f"<|im_start|>system\n{system}<|im_end|>\n"
        for past in history:
            prompt += user(bool(past.caller_audio), past.caller_text)
            prompt += f"<|im_start|>assistant\n{past.agent_text}<|im_end|>\n"
        prompt += user(audio is not None, turn_prompt(request) or "") + "<|im_start|>assistant\n"
        encoded = self.tokenizer(prompt, return_tensors="pt")
        inputs = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask}
        if feats is not None:
            inputs["input_features"] = feats["input_features"]
            inputs["feature_attention_mask"] = feats["attention_mask"]
        device = self.model.device
        return {k: v.to(device) for k, v in inputs.items()}

    def generate(self, inputs: dict, cancel: CancelCriterion, emit) -> object:
        """Runs in the generation thread: text streams through `emit`, audio is returned."""
        import torch

        self.cancel = cancel
        try:
            with torch.inference_mode():
                _, wav = self.model.generate(
                    **inputs, speaker=self._speaker,
                    thinker_max_new_tokens=self.max_text_tokens,
                    talker_max_new_tokens=self.max_speech_codes,
                    talker_eos_token_id=self.talker_eos,
                    # token2wav fails on an empty code sequence; one DiT block is 12 codes.
                    talker_min_new_tokens=12,
                    thinker_streamer=TokenStreamer(emit),
                    thinker_stopping_criteria=[cancel], talker_stopping_criteria=[cancel],
                )
        finally:
            self.cancel = None
        cancel.check()
        return wav.float().cpu().numpy().reshape(-1)

    async def close(self) -> None:
        """Drop the reference to the model, so that it can be freed."""
        self.model = None


class QwenOmniSession(AudioLLMSession):
    """One conversation: its bounded history and the turn in progress."""

    def __init__(self, *, backend: QwenOmniBackend):
        self._backend = backend
        self._history = BoundedHistory(max_turns=backend.history_turns)
        self._cancel: CancelCriterion | None = None
        self._thread: GenerationThread | None = None

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Generate one turn: text streams in whole words as the thinker writes it; the audio
        follows once token2wav has rendered the whole reply, in 200 ms chunks."""
        backend = self._backend
        inputs = await asyncio.to_thread(backend.build_inputs, request, self._history)
        cancel = self._cancel = CancelCriterion()
        decoder = TextDecoder(
            lambda ids: backend.tokenizer.decode(ids, skip_special_tokens=True), _MARKERS
        )
        words = WordChunker()
        self._thread = GenerationThread(lambda emit: backend.generate(inputs, cancel, emit))
        try:
            async for item in self._thread.events():
                if cancel.is_set:
                    return
                if isinstance(item, TextTokens) and (text := words.push(decoder.push(item.ids))):
                    yield TextDelta(text=text)
            if cancel.is_set:
                return
            if rest := words.flush():
                yield TextDelta(text=rest)
            self._history.add(caller_audio=cap_input(request.audio) if request.audio else None,
                              agent_text=decoder.text.strip(),
                              caller_text=turn_prompt(request) or "")
            pcm = float_to_pcm16(self._thread.result)
            for chunk in pcm_chunks(pcm, sample_rate=OUTPUT_SAMPLE_RATE):
                if cancel.is_set:
                    return
                yield AudioChunk(audio=chunk, sample_rate=OUTPUT_SAMPLE_RATE)
            yield EndOfTurn()
        finally:
            cancel.set()  # the consumer went away: stop generating for nobody

    async def cancel(self) -> None:
        """Stop generation at its next decoding step or stage, and wait until the thread has
        stopped."""
        if self._cancel is not None:
            self._cancel.set()
        if self._thread is not None:
            await self._thread.join()

    async def truncate(self, heard_text: str) -> None:
        """Keep only `heard_text` as the last reply in the history."""
        self._history.truncate_last(heard_text)

    async def close(self) -> None:
        """Cancel any turn and free the instance for the next session."""
        await self.cancel()
        self._backend.release(self)
