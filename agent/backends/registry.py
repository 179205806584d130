"""One registry of audio-LLM backends: a name to the factory that builds it.

`AUDIO_LLM_BACKEND` on a server and `callwright model-server --backend` in a model worker
both look names up here, and `register_backend` adds your own::

    @register_backend("echo")
    def echo_backend(context: BackendContext) -> AudioLLM:
        return EchoBackend(voice=context.voice())
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from callwright.agent.backend import AudioLLM

if TYPE_CHECKING:
    from callwright.agent.backends.cascade import EmbeddedCascade
    from callwright.settings import Settings


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Where and how a backend that runs a local checkpoint loads it (model workers)."""

    model_path: Path | None = None
    device: str = "cpu"
    dtype: str = "auto"
    max_text_tokens: int = 256
    max_speech_codes: int = 2048
    # Fun-Audio-Chat: its source checkout, CosyVoice3 and speaker vector.
    fac_source_dir: Path | None = None
    fac_cosyvoice_dir: Path | None = None
    fac_speaker_path: Path | None = None


@dataclass(frozen=True, kw_only=True)
class BackendContext:
    """What a backend factory may use.

    Attributes:
        settings: The server's settings (environment and `.env`).
        cascade: The embedded cascade a server always loads: Whisper, Piper and the fallback.
            None inside a model worker, which loads only its own backend.
        model: Local checkpoint options (`callwright model-server`).
    """

    settings: Settings
    cascade: EmbeddedCascade | None = None
    model: ModelOptions = field(default_factory=ModelOptions)

    def voice(self) -> EmbeddedCascade:
        """The embedded cascade, for backends that borrow its recognition or synthesis."""
        if self.cascade is None:
            raise ValueError("this backend needs the embedded cascade: run it on a server "
                             "(AUDIO_LLM_BACKEND), not in a model worker")
        return self.cascade


BackendFactory = Callable[[BackendContext], AudioLLM]
_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(
    name: str, factory: BackendFactory | None = None
) -> Callable[[BackendFactory], BackendFactory] | BackendFactory:
    """Register `factory` under `name`; used as a decorator when `factory` is omitted.

    A later registration under the same name replaces the earlier one.
    """

    def add(function: BackendFactory) -> BackendFactory:
        _FACTORIES[name] = function
        return function

    return add(factory) if factory is not None else add


def backend_names() -> list[str]:
    """The registered names, sorted."""
    return sorted(_FACTORIES)


def create_backend(name: str, context: BackendContext) -> AudioLLM:
    """Build the backend registered as `name`.

    Raises:
        ValueError: no backend has that name, or the context lacks what it needs.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown audio-LLM backend {name!r}; "
                         f"registered: {', '.join(backend_names())}") from None
    return factory(context)


@register_backend("embedded")
def _embedded(context: BackendContext) -> AudioLLM:
    if context.cascade is not None:
        return context.cascade
    from callwright.agent import models
    from callwright.agent.backends.cascade import EmbeddedCascade
    from callwright.agent.model_host import ModelHost
    from callwright.agent.policy import Receptionist

    return EmbeddedCascade(
        host=ModelHost(paths=models.resolve(), processes=0), policy_factory=Receptionist
    )


@register_backend("scripted")
def _scripted(context: BackendContext) -> AudioLLM:
    from callwright.agent.backends.scripted import ScriptedReplies

    return ScriptedReplies(voice=context.voice())


@register_backend("workers")
def _workers(context: BackendContext) -> AudioLLM:
    from callwright.agent.backends.worker_pool import WorkerPool

    return WorkerPool(urls=context.settings.audio_llm_worker_urls,
                      redis_url=context.settings.redis_url)


@register_backend("openai")
def _openai(context: BackendContext) -> AudioLLM:
    from callwright.agent.backends.openai_compat import OpenAICompatibleBackend

    settings = context.settings
    key = settings.audio_llm_openai_api_key
    return OpenAICompatibleBackend(
        base_url=settings.audio_llm_openai_url, model=settings.audio_llm_openai_model,
        api_key=key.get_secret_value() if key else None, speak=context.voice().synthesize,
    )


@register_backend("llm")
def _chat_llm(context: BackendContext) -> AudioLLM:
    """Whisper, a text chat model, Piper; with LLM_LOCAL, a llama.cpp server we start."""
    from callwright.agent.backends.chat_llm import ChatLLMBackend

    settings, cascade = context.settings, context.voice()
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


@register_backend("qwen-omni")
def _qwen_omni(context: BackendContext) -> AudioLLM:
    from callwright.agent.backends.qwen_omni import QwenOmniBackend

    options = context.model
    if options.model_path is None:
        raise ValueError("qwen-omni needs --model-path (a local Qwen2.5-Omni checkpoint)")
    return QwenOmniBackend(
        model_path=options.model_path, device=options.device, dtype=options.dtype,
        max_text_tokens=options.max_text_tokens, max_speech_codes=options.max_speech_codes,
    )


@register_backend("funaudiochat")
def _fun_audio_chat(context: BackendContext) -> AudioLLM:
    from callwright.agent.backends.funaudiochat import FunAudioChatBackend, FunAudioChatPaths

    options = context.model
    paths = FunAudioChatPaths.checked(
        source_dir=options.fac_source_dir, model_dir=options.model_path,
        cosyvoice_dir=options.fac_cosyvoice_dir, speaker_path=options.fac_speaker_path,
    )
    return FunAudioChatBackend(
        paths=paths, device=options.device, max_text_tokens=options.max_text_tokens,
    )
