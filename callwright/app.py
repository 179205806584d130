"""The FastAPI application: Twilio endpoints, the JSON API, and their shared services."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from loguru import logger

from admin import api
from agent import models
from agent.cascade import EmbeddedCascade
from agent.pipeline import TurnTakingSettings
from agent.policy import Receptionist
from callwright.calls import CallRunner
from callwright.settings import Settings
from flows.runtime import FlowRuntime
from memory.db import create_engine, migrate
from memory.store import CallStore
from memory.writer import TurnWriter
from telephony import twilio


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = create_engine(settings.sqlalchemy_url)
    store = CallStore(engine)
    writer = TurnWriter(store)
    paths = models.resolve(
        whisper_dir=settings.whisper_model_dir,
        piper_voice=settings.piper_voice_path,
        smart_turn=settings.smart_turn_model_path,
    )
    backend = EmbeddedCascade(models=paths, policy_factory=Receptionist)
    flows = None
    if settings.default_flow:
        flows = FlowRuntime(
            directory=settings.flows_dir, default_flow=settings.default_flow, store=store
        )
    runner = CallRunner(
        backend=backend,
        models=paths,
        writer=writer,
        turn_taking=TurnTakingSettings(
            vad_stop_secs=settings.vad_stop_secs, turn_stop_secs=settings.turn_stop_secs
        ),
        flows=flows,
        store=store,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await migrate(engine)
        await backend.load()
        if flows is not None:
            await flows.load()
        writer.start()
        logger.info(f"Twilio voice webhook: {settings.base_url}/twilio/voice")
        logger.info(f"Twilio media stream:  {settings.stream_url}")
        logger.info(f"API:                  {settings.base_url}/api/calls")
        yield
        await writer.close()
        await backend.close()
        await engine.dispose()

    app = FastAPI(title="callwright", lifespan=lifespan)
    app.state.store = store
    app.state.runner = runner
    app.include_router(
        twilio.create_router(
            config=twilio.TwilioConfig(
                public_url=settings.base_url,
                stream_url=settings.stream_url,
                account_sid=settings.twilio_sid,
                auth_token=settings.twilio_token,
                api_base_url=settings.twilio_api_base_url,
                signing_key=settings.signing_key,
                token_ttl_s=settings.stream_token_ttl_s,
                max_message_bytes=settings.max_message_bytes,
            ),
            store=store,
            handler=runner,
        )
    )
    app.include_router(api.create_router(store=store))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok", "active_calls": runner.active}

    return app
