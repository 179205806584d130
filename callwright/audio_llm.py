"""Picks the slot's audio LLM from settings; the embedded cascade is always the fallback."""

from __future__ import annotations

from agent.backend import AudioLLM
from agent.cascade import EmbeddedCascade
from callwright.settings import Settings


def create_audio_llm(settings: Settings, cascade: EmbeddedCascade) -> AudioLLM:
    if settings.audio_llm_backend == "workers":
        from agent.workers.client import WorkerPool

        return WorkerPool(urls=settings.audio_llm_worker_urls)
    if settings.audio_llm_backend == "openai":
        from agent.backends.openai_compat import OpenAICompatibleBackend

        key = settings.audio_llm_openai_api_key
        return OpenAICompatibleBackend(
            base_url=settings.audio_llm_openai_url, model=settings.audio_llm_openai_model,
            api_key=key.get_secret_value() if key else None, speak=cascade.synthesize,
        )
    if settings.audio_llm_backend == "scripted":
        from agent.scripted import ScriptedReplies

        return ScriptedReplies(voice=cascade)
    return cascade
