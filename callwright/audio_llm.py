"""Picks the slot's audio LLM from settings; the embedded cascade is always the fallback."""

from __future__ import annotations

from loguru import logger

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
    if settings.audio_llm_backend == "llm":
        return create_chat_llm(settings, cascade)
    if settings.audio_llm_backend == "scripted":
        from agent.scripted import ScriptedReplies

        return ScriptedReplies(voice=cascade)
    return cascade


def create_chat_llm(settings: Settings, cascade: EmbeddedCascade) -> AudioLLM:
    """Whisper, a text chat model, Piper; with LLM_LOCAL, a llama.cpp server we start."""
    from agent.backends.chat_llm import ChatLLMBackend

    url, model, hooks = settings.llm_url, settings.llm_model, {}
    if settings.llm_local:
        from callwright.local_llm import LlamaServer, PromptTokens, resolve_gguf

        gguf = resolve_gguf(settings.llm_local)
        server = LlamaServer(
            model_path=gguf, alias=model or gguf.stem, chat_format=settings.llm_local_chat_format,
            context=settings.llm_local_context, log_path=settings.data_dir / "llama-server.log",
            restart=True,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        url, model = server.base_url, server.alias
        hooks = {"on_load": server.start, "on_close": server.stop,
                 "count_prompt": PromptTokens(gguf)}
    timeout = settings.llm_first_token_timeout_s
    if timeout >= settings.model_timeout_s:
        # Past MODEL_TIMEOUT_SECONDS the slot gives up on the call, not just the turn.
        timeout = settings.model_timeout_s / 2
        logger.warning(f"LLM_FIRST_TOKEN_TIMEOUT must be below MODEL_TIMEOUT_SECONDS "
                       f"({settings.model_timeout_s:g}); using {timeout:g} s")
    key = settings.llm_api_key
    return ChatLLMBackend(
        base_url=url, model=model, api_key=key.get_secret_value() if key else None,
        transcribe=cascade.transcribe, speak=cascade.synthesize, first_token_timeout_s=timeout,
        max_tokens=settings.llm_max_tokens, temperature=settings.llm_temperature,
        seed=settings.llm_seed, tool_choice=settings.llm_tool_choice or None,
        persona=settings.llm_instructions, **hooks,
    )
