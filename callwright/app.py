"""The FastAPI application: Twilio endpoints, the JSON API, and their shared services."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from loguru import logger

from admin import api, site
from agent import models, speakers
from agent.cascade import EmbeddedCascade
from agent.policy import Receptionist
from callwright.calls import CallRunner
from callwright.settings import Settings
from memory.db import create_engine, migrate
from memory.store import CallStore
from memory.writer import TurnWriter
from telephony import call_page, ice, twilio, webrtc


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
    backend = EmbeddedCascade(
        models=paths, policy_factory=Receptionist, beam_size=settings.whisper_beam_size
    )
    runner = CallRunner(
        backend=backend,
        models=paths,
        writer=writer,
        turn_taking=settings.turn_taking(),
    )

    webrtc_config = webrtc.WebRTCConfig(
        ice_servers=[server.as_dict() for server in settings.webrtc_ice_servers],
        max_sessions=settings.webrtc_max_sessions,
        offers_per_minute=settings.webrtc_offers_per_minute,
        connect_timeout_s=settings.webrtc_connect_timeout_s,
        idle_timeout_s=settings.webrtc_idle_timeout_s,
        max_offer_bytes=settings.webrtc_max_offer_bytes,
        flows_dir=settings.flows_dir,
    )
    if settings.webrtc_loopback_candidates:
        ice.add_loopback_candidate()
    webrtc_calls = webrtc.WebRTCCalls(config=webrtc_config, store=store, handler=runner)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await migrate(engine)
        await backend.load()
        if settings.speaker_labels:
            await asyncio.to_thread(speakers.load_encoder)
        writer.start()
        logger.info(f"Twilio voice webhook: {settings.base_url}/twilio/voice")
        logger.info(f"Twilio media stream:  {settings.stream_url}")
        logger.info(f"API:                  {settings.base_url}/api/calls")
        logger.info(f"Call from a browser:  http://{settings.host}:{settings.port}/")
        logger.info(f"Admin site:           {settings.base_url}/admin/")
        yield
        await webrtc_calls.close()
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
    app.include_router(webrtc.create_router(calls=webrtc_calls, config=webrtc_config))
    app.include_router(call_page.create_router())
    app.mount("/admin", site.create_site(
        engine=engine, data_dir=settings.data_dir,
        secure_cookies=settings.base_url.startswith("https://"),
    ))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {
            "status": "ok", "active_calls": runner.active, "webrtc_sessions": webrtc_calls.active
        }

    return app
