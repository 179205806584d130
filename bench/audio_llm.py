"""Per audio-LLM backend: time to first audio chunk and audio seconds per wall second.

Runs every backend available here in one process, on the same caller turns:
the embedded cascade, the tiny random Qwen2.5-Omni through a real model worker, and
the OpenAI-compatible backend against the local stand-in (Piper speaks its text).
The cascade is the baseline for the ratios.

    python bench/audio_llm.py [--turns N]
    python bench/audio_llm.py --full-size --device cuda --turns 20   # on a GPU

`--full-size` builds Qwen2.5-Omni with the real 7B layer sizes and random bf16
weights in-process (nothing downloaded) and reports first audio packet p50/p90 of
the serving path, which for this model is the whole thinker + talker + token2wav.

`--fac` times Fun-Audio-Chat's backend on upstream's classes at tiny sizes with random
weights (tests/test_funaudiochat_upstream.py), so it runs in the environment that
`make fac-test` builds:

    FAC_SOURCE_DIR=/opt/fac/src PYTHONPATH=. build/fac-venv/bin/python bench/audio_llm.py --fac
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from callwright.agent.backend import AudioChunk, AudioLLM, TurnRequest

LINES = ["What time do you open on Sunday?", "Can I book a table for two?",
         "My name is Alice.", "No thanks, goodbye."]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def measure(backend: AudioLLM, turns: list[bytes | None]) -> dict:
    session = await backend.open_session()
    first, rates = [], []
    try:
        for audio in turns:
            started = time.perf_counter()
            first_at, audio_s = None, 0.0
            async for event in session.respond(TurnRequest(audio=audio)):
                if isinstance(event, AudioChunk):
                    first_at = first_at or time.perf_counter()
                    audio_s += len(event.audio) / 2 / event.sample_rate
            wall = time.perf_counter() - started
            if first_at is not None:
                first.append((first_at - started) * 1000)
                rates.append(audio_s / wall)
    finally:
        await session.close()
    return {"first_ms": first, "rate": rates}


def report(name: str, result: dict, baseline: dict | None) -> None:
    first, rate = result["first_ms"], result["rate"]
    line = (f"{name:<22} first audio p50 {pct(first, .5):7.0f} ms  p90 {pct(first, .9):7.0f} ms"
            f"   audio s / wall s {statistics.mean(rate):6.2f}")
    if baseline and baseline is not result:
        line += (f"   (x{pct(first, .5) / pct(baseline['first_ms'], .5):.2f} first audio, "
                 f"x{statistics.mean(rate) / statistics.mean(baseline['rate']):.2f} rate "
                 "vs embedded)")
    print(line, flush=True)


async def local(turns: int) -> None:
    from callwright.agent import models
    from callwright.agent.backends.cascade import EmbeddedCascade
    from callwright.agent.backends.openai_compat import OpenAICompatibleBackend
    from callwright.agent.backends.qwen_omni_random import save_tiny
    from callwright.agent.backends.worker_pool import WorkerPool
    from callwright.agent.model_host import ModelHost
    from callwright.agent.policy import Receptionist
    from tests.openai_standin import OpenAIStandIn
    from tests.support import (
        speech_16k,  # espeak-ng; not in Fun-Audio-Chat's environment
        tiny_omni_worker,
    )

    audio = [None] + [speech_16k(LINES[i % len(LINES)]) for i in range(turns)]
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-audio-llm-"))
    cascade = EmbeddedCascade(
        host=ModelHost(paths=models.resolve(), processes=0), policy_factory=Receptionist
    )
    await cascade.load()
    worker = tiny_omni_worker(tmp, save_tiny(tmp / "tiny-omni"))
    standin = OpenAIStandIn()
    await standin.serve()
    try:
        pool = WorkerPool(urls=[worker.url])
        await pool.load()
        openai = OpenAICompatibleBackend(base_url=standin.base_url, model=standin.model,
                                         speak=cascade.synthesize)
        baseline = await measure(cascade, audio)
        report("embedded cascade", baseline, None)
        report("qwen-omni tiny worker", await measure(pool, audio), baseline)
        report("openai stand-in+piper", await measure(openai, audio), baseline)
    finally:
        worker.stop()
        await standin.stop()


async def full_size(turns: int, device: str) -> None:
    import torch
    from transformers import Qwen2_5OmniForConditionalGeneration

    from callwright.agent.backends.qwen_omni import QwenOmniBackend
    from callwright.agent.backends.qwen_omni_random import (
        full_size_config,
        save_tiny,
        speaker_map,
        tiny_tokenizer,
    )
    from tests.support import speech_16k

    started = time.perf_counter()
    config = full_size_config()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen2_5OmniForConditionalGeneration(config).eval()
    torch.set_default_dtype(torch.float32)
    model.token2wav.float()
    model.speaker_map = speaker_map(config)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"full-size random Qwen2.5-Omni: {params:.2f} B parameters on {device}, built in "
          f"{time.perf_counter() - started:.0f}s", flush=True)
    # The tiny checkpoint's tokenizer and features, with ids that exist in the big vocab.
    tmp = save_tiny(Path(tempfile.mkdtemp(prefix="cw-bench-omni-")))
    backend = QwenOmniBackend(model_path=tmp, device=device, max_text_tokens=40,
                              max_speech_codes=150)
    backend.model = model
    backend.tokenizer = tiny_tokenizer()
    from transformers import WhisperFeatureExtractor

    backend.features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000)
    backend._speaker = next(iter(model.speaker_map))
    talker = config.talker_config
    backend.talker_eos = [talker.tts_codec_pad_token_id, talker.tts_codec_end_token_id]
    audio = [speech_16k(LINES[i % len(LINES)]) for i in range(turns + 1)]
    result = await measure(backend, audio)
    result = {k: v[1:] for k, v in result.items()}  # the first turn warms CUDA kernels
    report(f"qwen-omni 7B-size {device}", result, None)
    print("(random weights: 40 text tokens and 150 speech codes per turn, bounded)")


async def fun_audio_chat(turns: int) -> None:
    """Tiny Fun-Audio-Chat with a tiny CosyVoice3 on CPU: the worker's path, not its speed."""
    import numpy as np

    from callwright.agent.backends.funaudiochat import FunAudioChatBackend, FunAudioChatPaths
    from tests.test_funaudiochat_upstream import SOURCE, save_tiny_fun_audio_chat, vocoder

    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-fac-"))
    started = time.perf_counter()
    backend = FunAudioChatBackend(
        paths=FunAudioChatPaths(source_dir=SOURCE, model_dir=save_tiny_fun_audio_chat(tmp),
                                cosyvoice_dir=tmp, speaker_path=tmp),
        device="cpu", dtype="float32", max_text_tokens=40, vocoder=vocoder())
    await backend.load()
    print(f"tiny Fun-Audio-Chat + CosyVoice3 built and loaded in "
          f"{time.perf_counter() - started:.1f}s", flush=True)
    rng = np.random.default_rng(0)
    audio = [(rng.standard_normal(16000 * 2) * 3000).astype(np.int16).tobytes()
             for _ in range(turns + 1)]
    result = await measure(backend, audio)
    result = {k: v[1:] for k, v in result.items()}  # the first turn warms up
    report("fun-audio-chat tiny cpu", result, None)
    print("(random weights: 40 generation steps per turn, 5 speech codes a step; "
          "token2wav every 15 codes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--full-size", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fac", action="store_true",
                        help="tiny Fun-Audio-Chat on upstream's classes (its own venv)")
    args = parser.parse_args()
    if args.fac:
        asyncio.run(fun_audio_chat(args.turns))
    elif args.full_size:
        asyncio.run(full_size(args.turns, args.device))
    else:
        asyncio.run(local(args.turns))
