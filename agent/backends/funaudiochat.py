"""Fun-Audio-Chat-8B as an audio LLM, hosted by a model worker in its own environment.

Its code needs transformers >=4.52.3,<4.54 (README, "Audio LLM backends"), so it runs
as `callwright model-server --backend funaudiochat` in a separate venv. Everything
model-agnostic (streaming, code windowing, cancel, caps, history) lives in
`speech_turn`, `vocoder`, `streaming` and `turns`, tested with fakes; this module is the
thin part that only runs where the `funaudiochat` package imports.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger

from callwright.agent.backend import (
    AudioLLM,
    AudioLLMSession,
    BackendBusy,
    Capabilities,
    EndOfTurn,
    Event,
    TurnRequest,
)
from callwright.agent.backends.speech_turn import SpeechTurnResult, stream_speech_turn
from callwright.agent.backends.streaming import (
    CancelCriterion,
    GenerationThread,
    TokenStreamer,
    pcm16_to_float,
)
from callwright.agent.backends.turns import (
    BoundedHistory,
    cap_input,
    tools_prompt,
    turn_prompt,
)
from callwright.agent.backends.vocoder import CodeWindow, Vocoder

if TYPE_CHECKING:  # torch is imported where the worker runs, not at import time
    import torch

SAMPLE_RATE = 24_000
HISTORY_TURNS = 8  # as the reference demo; every past caller clip is re-encoded each turn
# The speech-and-text ("S2M") system prompt the model was trained with.
S2M_PROMPT = (
    "You are asked to generate both text and speech tokens at the same time. "
    "You are a helpful voice assistant on a phone call; keep answers short and spoken."
)
MARKERS = ("<|audio_bos|>", "<|audio_eos|>", "<|sil|>", "<|im_end|>", "<|endoftext|>")
# Fun-Audio-Chat's `utils/constant.py` (commit 8ba984b), as its web-demo server sets them
# (`web_demo/server/server.py`, `GlobalModelManager.initialize`). The model's own default
# has force_text_abos False: then speech starts only if it samples <|audio_bos|> itself.
SP_GEN_KWARGS = {
    "text_greedy": False,
    "only_crq_sampling": True,
    "disable_speech": False,
    "force_text_abos": True,
}
SAMPLING_KWARGS = {  # DEFAULT_S2M_GEN_KWARGS less max_new_tokens and the token ids
    "do_sample": True,
    "temperature": 0.8,
    "top_p": 0.9,
    "top_k": 0,
    "num_beams": 1,
    "repetition_penalty": 1.2,
    "length_penalty": 1.0,
}
# CosyVoice3's flow runs non-streaming (full attention over the window) on every call, as
# upstream's `tts_infer_streaming`; upstream's `get_audio_detokenizer` also sets the DiT's
# static_chunk_size to 2 x its default hop of 750 codes, which only matters when streaming.
FLOW_STATIC_CHUNK_SIZE = 2 * 25 * 30
DEFAULT_SPEAKER = "中文女"  # the voice upstream uses from utils/new_spk2info.pt


def import_error() -> str | None:
    """Why the Fun-Audio-Chat package cannot be used here, or None when it can."""
    try:
        import funaudiochat.register  # noqa: F401
    except Exception as exc:  # ImportError, or a transformers version it rejects
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True, kw_only=True)
class FunAudioChatPaths:
    """Where the worker finds Fun-Audio-Chat's code, weights, vocoder and voice."""

    source_dir: Path  # checkout of github.com/FunAudioLLM/Fun-Audio-Chat (has funaudiochat/)
    model_dir: Path  # Fun-Audio-Chat-8B
    cosyvoice_dir: Path  # Fun-CosyVoice3-0.5B-2512
    speaker_path: Path  # a 192-d CAM++ x-vector saved with torch.save

    @classmethod
    def checked(cls, **paths: Path | None) -> FunAudioChatPaths:
        """The paths, once every one is given and exists.

        Raises:
            FileNotFoundError: Naming each path that is None or missing.
        """
        missing = [f"{k} ({p})" for k, p in paths.items() if p is None or not Path(p).exists()]
        if missing:
            raise FileNotFoundError("Fun-Audio-Chat needs these local paths: " + ", ".join(missing))
        return cls(**{k: Path(p) for k, p in paths.items()})


def load_speaker(path: Path, name: str = DEFAULT_SPEAKER) -> torch.Tensor:
    """A 192-d CAM++ x-vector as a (1, 192) tensor.

    Args:
        path: Either a tensor saved with `torch.save`, or a speaker table shaped like
            upstream's `utils/new_spk2info.pt` (`{name: {"embedding": tensor}}`).
        name: The speaker to take from a table.
    """
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict):
        if name not in loaded:
            raise KeyError(f"speaker {name!r} is not in {path} (has {', '.join(loaded)})")
        loaded = loaded[name]["embedding"]
    return loaded.float().reshape(1, -1)


class CosyVoiceVocoder:
    """CosyVoice3's token2wav (flow matching + HiFT) behind the `Vocoder` interface.

    Calls it as Fun-Audio-Chat's `utils/cosyvoice_detokenizer.py` (commit 8ba984b) does:
    `CosyVoice3(model_dir, load_trt=False, load_vllm=False, fp16=False)`, no prompt
    tokens or features, `stream=False`, and one HiFT cache entry per utterance.

    Args:
        model: A `CosyVoice3Model` (`CosyVoice3(...).model`); only its flow and HiFT run.
        speaker: The (1, 192) x-vector.
        device: Where the inputs are made; CosyVoice3Model moves them to its own device.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, *, model: Any, speaker: torch.Tensor, device: str):
        import torch

        self._torch = torch
        self._model = model
        self._model.flow.decoder.estimator.static_chunk_size = FLOW_STATIC_CHUNK_SIZE
        self._speaker = speaker.to(device)
        self._device = device
        self._uuid = ""
        self.reset()

    @classmethod
    def load(cls, *, model_dir: Path, speaker_path: Path, device: str) -> CosyVoiceVocoder:
        """CosyVoice3 from its directory, as upstream's `get_audio_detokenizer` loads it.

        Args:
            model_dir: Fun-CosyVoice3-0.5B-2512 (CosyVoice3() loads all of it; see README).
            speaker_path: See `load_speaker`.
            device: The CUDA device (made current for CosyVoice3, which loads onto the
                current one) or "cpu".
        """
        import torch
        from cosyvoice.cli.cosyvoice import CosyVoice3

        if torch.device(device).type == "cuda" and torch.device(device).index is not None:
            # CosyVoice3Model places itself on the current CUDA device, as upstream's TTS
            # process does after torch.cuda.set_device(tts_gpu); keep it beside the model.
            torch.cuda.set_device(torch.device(device))
        # CosyVoice3's constructor (CosyVoice 2db78e7, cosyvoice/cli/cosyvoice.py:191) takes
        # model_dir, load_trt, load_vllm, fp16, trt_concurrent; there is no load_jit.
        model = CosyVoice3(str(model_dir), load_trt=False, load_vllm=False, fp16=False).model
        return cls(model=model, speaker=load_speaker(speaker_path), device=device)

    def reset(self) -> None:
        """Drop the utterance's HiFT cache and start a new one."""
        self._model.hift_cache_dict.pop(self._uuid, None)
        self._uuid = uuid.uuid4().hex  # a per-utterance key for HiFT's cache
        self._model.hift_cache_dict[self._uuid] = None

    def push(self, codes: list[int], offset: int, finalize: bool) -> np.ndarray:
        """See `agent.backends.vocoder.Vocoder.push`."""
        torch = self._torch
        with torch.inference_mode():
            speech = self._model.token2wav(
                token=torch.tensor([codes], dtype=torch.int32, device=self._device),
                prompt_token=torch.zeros(1, 0, dtype=torch.int32, device=self._device),
                prompt_feat=torch.zeros(1, 0, 80, device=self._device),
                embedding=self._speaker, token_offset=offset, uuid=self._uuid,
                stream=False, finalize=finalize, speed=1.0,
            )
        return speech.float().cpu().numpy().reshape(-1)


class FunAudioChatBackend(AudioLLM):
    """Fun-Audio-Chat-8B with CosyVoice3 as its vocoder; one conversation at a time.

    Args:
        paths: Local code and weights (`FunAudioChatPaths.checked`).
        device: Torch device for the model.
        max_text_tokens: Bound on a turn's generation steps (one text token each).
        dtype: The model's weights (bfloat16 as upstream loads them).
        vocoder: A vocoder to use instead of loading CosyVoice3 from `paths` (tests).
    """

    name = "funaudiochat"
    # Tool calls are only validated by its authors in speech-to-text mode: experimental.
    capabilities = Capabilities(live_instructions=True, truncation=True, tools=True)

    def __init__(self, *, paths: FunAudioChatPaths, device: str = "cuda:0",
                 max_text_tokens: int = 256, dtype: str = "bfloat16",
                 vocoder: Vocoder | None = None):
        self.paths = paths
        self.device = device
        self.max_text_tokens = max_text_tokens
        self.dtype = dtype
        self.model = self.processor = None
        self.vocoder = vocoder
        self._session: FunAudioChatSession | None = None

    async def load(self) -> None:
        """Load Fun-Audio-Chat and, unless a vocoder was given, CosyVoice3, off the event loop.

        Raises:
            RuntimeError: The `funaudiochat` package does not import from `paths.source_dir`.
        """
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch

        started = time.perf_counter()
        # The same three paths upstream's utils/cosyvoice_detokenizer.py puts on sys.path:
        # the checkout, its CosyVoice submodule and that one's Matcha-TTS submodule.
        cosyvoice = self.paths.source_dir / "third_party" / "CosyVoice"
        for path in (cosyvoice / "third_party" / "Matcha-TTS", cosyvoice, self.paths.source_dir):
            if str(path) not in sys.path:
                sys.path.insert(0, str(path))
        if why := import_error():
            raise RuntimeError(f"cannot import funaudiochat from {self.paths.source_dir}: {why}")
        from funaudiochat.register import register_funaudiochat
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoProcessor

        register_funaudiochat()
        path = self.paths.model_dir
        logger.info(f"Loading Fun-Audio-Chat from {path} on {self.device}")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(
            path, config=config, torch_dtype=getattr(torch, self.dtype), local_files_only=True,
        ).to(self.device).eval()
        self.speech_bos = config.audio_config.bos_token_id
        self.speech_eos = config.audio_config.eos_token_id
        if self.vocoder is None:
            logger.info(f"Loading CosyVoice3 from {self.paths.cosyvoice_dir}")
            self.vocoder = CosyVoiceVocoder.load(model_dir=self.paths.cosyvoice_dir,
                                                 speaker_path=self.paths.speaker_path,
                                                 device=self.device)
        logger.info(f"Fun-Audio-Chat ready in {time.perf_counter() - started:.1f}s")

    async def open_session(self) -> AudioLLMSession:
        """The one conversation this instance serves.

        Raises:
            RuntimeError: `load()` was not awaited.
            BackendBusy: A session is open already (until it is closed).
        """
        if self.model is None:
            raise RuntimeError("FunAudioChatBackend.load() was not awaited")
        if self._session is not None:  # per-call state lives on the model: one at a time
            raise BackendBusy("this Fun-Audio-Chat instance serves one conversation at a time")
        self._session = FunAudioChatSession(backend=self)
        return self._session

    def release(self, session: FunAudioChatSession) -> None:
        """Free the instance for a new session if `session` is the one it serves (its `close()`)."""
        if self._session is session:
            self._session = None

    def build_inputs(self, request: TurnRequest, history: BoundedHistory) -> dict:
        """The processor's tensors for one turn, on the model's device; blocking.

        The prompt is the S2M system prompt (plus instructions and tool schemas), the
        history's caller clips and replies, then this turn's clip (or the opening prompt).
        """
        clip = "<|audio_bos|><|AUDIO|><|audio_eos|>"
        system = S2M_PROMPT + (f"\n\n{request.instructions}" if request.instructions else "")
        conversation = [{"role": "system", "content": system + tools_prompt(request.tools)}]
        audios = []
        for past in history:
            if past.caller_audio:
                audios.append(pcm16_to_float(past.caller_audio))
            conversation += [
                {"role": "user", "content": clip if past.caller_audio else past.caller_text},
                {"role": "assistant", "content": past.agent_text},
            ]
        if request.audio:
            audios.append(pcm16_to_float(cap_input(request.audio)))
        turn = clip if request.audio else turn_prompt(request)
        conversation.append({"role": "user", "content": turn})
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True,
                                                  tokenize=False)
        # No token_type_ids, as upstream asks (examples/infer_s2s.py): generate() rejects them.
        inputs = self.processor(text=text, audio=audios or None, return_tensors="pt",
                                return_token_type_ids=False)
        return {k: v.to(self.device) if hasattr(v, "to") else v for k, v in inputs.items()}

    def decode_text(self, ids: list[int]) -> str:
        """The reply's text without special tokens, as upstream decodes it for history.

        `skip_special_tokens=True` as in examples/infer_s2s.py: a sampled `<|AUDIO|>` kept
        in the history would add a placeholder with no audio behind it, and the processor
        refuses the next turn ("Found 7 <|AUDIO|> tokens ... but received 6 audios").
        """
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True)

    def generation_kwargs(self) -> dict:
        """`generate()` arguments as upstream's web-demo server sets them.

        Sampling from `DEFAULT_S2M_GEN_KWARGS`; eos `<|im_end|>` and pad `<|endoftext|>`
        (151645 and 151643 there, looked up here); `<|sil|>` banned right after
        `<|audio_bos|>` (its `bad_words_ids`). `max_new_tokens` is ours: a phone reply.
        """
        tokenizer = self.processor.tokenizer
        ids = {t: tokenizer.convert_tokens_to_ids(t)
               for t in ("<|im_end|>", "<|endoftext|>", "<|audio_bos|>", "<|sil|>")}
        return {
            **SAMPLING_KWARGS, "max_new_tokens": self.max_text_tokens,
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"],
            "bad_words_ids": [[ids["<|audio_bos|>"], ids["<|sil|>"]]],
        }

    def generate(self, inputs: dict, streamer, cancel: CancelCriterion) -> object:
        """Run one turn's `generate()`; returns (text ids, speech ids) as upstream's."""
        import torch

        # Set per turn, not once at load: a model instance serves one session at a time
        # and nothing else may leave it in speech-to-text mode.
        self.model.sp_gen_kwargs = dict(SP_GEN_KWARGS)
        with torch.inference_mode():
            return self.model.generate(
                **inputs, streamer=streamer, stopping_criteria=[cancel],
                **self.generation_kwargs(),
            )


class FunAudioChatSession(AudioLLMSession):
    """One conversation: its history, and the turn in progress."""

    def __init__(self, *, backend: FunAudioChatBackend):
        self._backend = backend
        self._history = BoundedHistory(max_turns=HISTORY_TURNS)
        self._cancel: CancelCriterion | None = None
        self._thread: GenerationThread | None = None
        self._cancelled = False

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Generate one turn, streaming whole-word text and audio vocoded as the speech codes
        arrive, then its tool calls; the turn joins the history unless cancelled."""
        backend = self._backend
        self._cancelled = False
        inputs = await asyncio.to_thread(backend.build_inputs, request, self._history)
        cancel = self._cancel = CancelCriterion()
        self._thread = GenerationThread(
            lambda emit: backend.generate(inputs, TokenStreamer(emit), cancel)
        )
        result = SpeechTurnResult()
        async for event in stream_speech_turn(
            thread=self._thread, cancel=cancel, decode=backend.decode_text,
            markers=MARKERS, speech_bos=backend.speech_bos, speech_eos=backend.speech_eos,
            window=CodeWindow(backend.vocoder), sample_rate=SAMPLE_RATE, result=result,
        ):
            yield event
        if self._cancelled:
            return
        self._history.add(caller_audio=cap_input(request.audio) if request.audio else None,
                          agent_text=result.text, caller_text=turn_prompt(request) or "")
        yield EndOfTurn()

    async def cancel(self) -> None:
        """Stop generation after the step in progress and wait for the thread to leave it."""
        self._cancelled = True
        if self._cancel is not None:
            self._cancel.set()
        if self._thread is not None:
            await self._thread.join()  # generate() stops after the step in progress

    async def truncate(self, heard_text: str) -> None:
        """Keep only `heard_text` as the last reply in the history."""
        self._history.truncate_last(heard_text)

    async def close(self) -> None:
        """Cancel any turn and free the instance for the next session."""
        await self.cancel()
        self._backend.release(self)
