"""The FastAPI application: Twilio endpoints, the JSON API, and their shared services."""

from __future__ import annotations

import asyncio
import functools
import gc
from collections.abc import Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from loguru import logger

from callwright import logs
from callwright.admin import api, site
from callwright.agent import analyzers, models
from callwright.agent.backends.cascade import EmbeddedCascade
from callwright.agent.backends.registry import BackendContext, create_backend
from callwright.agent.backends.worker_pool import WorkerPool
from callwright.agent.fallback import SlotFallback
from callwright.agent.model_host import ModelHost
from callwright.agent.pipeline import PipelineStep
from callwright.agent.policy import Receptionist
from callwright.calls import CallRunner
from callwright.cluster import Cluster, close_calls_of_dead_workers
from callwright.flows.runtime import FlowRuntime
from callwright.memory.db import create_engine, migrate
from callwright.memory.lifecycle import CallMemory
from callwright.memory.store import CallStore
from callwright.memory.writer import TurnWriter
from callwright.metrics import Metrics
from callwright.metrics import create_router as metrics_router
from callwright.outbox import WebhookConfig, WebhookDispatcher
from callwright.settings import Settings
from callwright.telephony.lines import Lines
from callwright.telephony.twilio import outbound_api
from callwright.telephony.twilio import rest as twilio_rest
from callwright.telephony.twilio import routes as twilio
from callwright.telephony.twilio.outbound import Dialer, OutboundConfig
from callwright.telephony.twilio.rest import TwilioAccount
from callwright.telephony.webrtc import call_page, ice
from callwright.telephony.webrtc import routes as webrtc
from callwright.tracing import create_tracer
from callwright.watchdog import LoopWatchdog


def create_app(
    settings: Settings | None = None, *, steps: Sequence[PipelineStep] = ()
) -> FastAPI:
    """The whole server as one ASGI app: Twilio webhooks and media streams, WebRTC calls,
    the JSON API and the admin site, with the models loaded at start-up.

    Args:
        settings: defaults to `Settings()`, read from the environment and `.env`.
        steps: your own processors, built per call, placed after the audio-LLM slot
            (see `PipelineStep`).
    """
    settings = settings or Settings()
    metrics = Metrics()
    tracer = create_tracer(endpoint=settings.otel_endpoint,
                           service_name=settings.otel_service_name)
    engine = create_engine(settings.sqlalchemy_url)
    cluster = None
    if settings.redis_url:
        if not settings.secret_key:
            raise ValueError("REDIS_URL is set (several workers) but CALLWRIGHT_SECRET_KEY is "
                             "not: every worker must sign stream tokens with the same key; "
                             "issue one with: python -c \"import secrets; "
                             "print(secrets.token_urlsafe(32))\"")
        cluster = Cluster(url=settings.redis_url, worker=settings.worker_name,
                          max_calls=settings.max_calls_total, lease_s=settings.worker_lease_s)
    store = CallStore(engine, worker=settings.worker_name, changes=cluster)
    writer = TurnWriter(store)
    memory = CallMemory(engine=engine, turns=writer, settings=settings.memory)
    webhooks = None  # every call's end to the business's URLs, from an outbox in the database
    if (webhook_config := WebhookConfig.from_settings(settings)) is not None:
        webhooks = WebhookDispatcher(engine, config=webhook_config, worker=store.worker,
                                     settle=memory.settle_call, metrics=metrics)
        store.end_hooks.append(webhooks.enqueue)
    paths = models.resolve(
        whisper_dir=settings.whisper_model_dir,
        piper_voice=settings.piper_voice_path,
        smart_turn=settings.smart_turn_model_path,
    )
    host = ModelHost(
        paths=paths, processes=settings.model_processes, beam_size=settings.whisper_beam_size,
        voice_prints=settings.speaker_labels,
        process_setup=functools.partial(logs.configure, settings.log_level,
                                        settings.log_format),
    )
    cascade = EmbeddedCascade(host=host, policy_factory=Receptionist)
    backend = create_backend(settings.audio_llm_backend,
                             BackendContext(settings=settings, cascade=cascade))
    flows = FlowRuntime(
        directory=settings.flows_dir, default_flow=settings.default_flow, store=store,
        on_action_failed=lambda kind: metrics.flow_action_failures.labels(kind).inc(),
    )
    runner = CallRunner(
        backend=backend,
        fallback=None if backend is cascade else cascade,
        models=host,
        writer=writer,
        store=store,
        turn_taking=settings.turn_taking(),
        memory=memory,
        flows=flows,
        data_dir=settings.data_dir,
        record_calls=settings.record_calls,
        read_emotion=settings.caller_emotion,
        model_timeout_s=settings.model_timeout_s,
        steps=steps,
        metrics=metrics,
        tracer=tracer,
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
    webrtc_calls = webrtc.WebRTCCalls(config=webrtc_config, store=store, handler=runner,
                                      metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        models_loading = asyncio.ensure_future(cascade.load())  # model processes, meanwhile:
        await migrate(engine)
        # With several workers, only this one's calls are its own to close.
        mine = None if cluster is None else {store.worker}
        if interrupted := await store.interrupt_unfinished(workers=mine):
            logger.warning(f"{interrupted} calls left open by the last run marked interrupted")
        if cluster is not None:
            await cluster.start()
            tasks.add(asyncio.create_task(close_calls_of_dead_workers(cluster, store)))
        if webhooks is not None:
            webhooks.start()  # pending deliveries of the last run go out too
        await asyncio.to_thread(analyzers.warm, silero=paths.silero_vad)
        await asyncio.to_thread(twilio_rest.preload)
        await flows.load()
        await models_loading
        if backend is not cascade:
            await backend.load()
        audio, rate = await asyncio.to_thread(cascade.synthesize, settings.fallback_text)
        runner.fallback = SlotFallback(
            text=settings.fallback_text, audio=audio, sample_rate=rate,
            transfer_to=settings.fallback_transfer_to or None,
        )
        writer.start()
        await memory.start()
        # What is loaded by now lives as long as the server: full collections need not walk
        # it again (one took the event loop for 361 ms mid-call, under 25 calls).
        gc.collect()
        gc.freeze()
        watchdog.start()
        logger.info(f"Twilio voice webhook: {settings.base_url}/twilio/voice")
        logger.info(f"Twilio media stream:  {settings.stream_url}")
        logger.info(f"API:                  {settings.base_url}/api/calls")
        logger.info(f"Call from a browser:  http://{settings.host}:{settings.port}/")
        logger.info(f"Admin site:           {settings.base_url}/admin/")
        yield
        for task in tasks:
            task.cancel()
        if cluster is not None:
            await cluster.close()
        await watchdog.stop()
        await memory.close()
        await webrtc_calls.close()
        await writer.close()
        if webhooks is not None:
            await webhooks.close()  # what is unsent stays pending in the database
        if backend is not cascade:
            await backend.close()
        await cascade.close()
        await asyncio.to_thread(host.close)
        await engine.dispose()
        if tracer:
            await asyncio.to_thread(tracer.shutdown)  # export the last calls' spans

    watchdog = LoopWatchdog(on_lag=metrics.observe_loop_lag)
    tasks: set[asyncio.Task] = set()
    app = FastAPI(title="callwright", lifespan=lifespan)
    app.state.store = store
    app.state.runner = runner
    account = TwilioAccount(account_sid=settings.twilio_sid, auth_token=settings.twilio_token,
                            base_url=settings.twilio_api_base_url)
    lines = Lines(max_calls=settings.max_calls, active=lambda: runner.active,
                  pending_ttl_s=settings.stream_token_ttl_s, shared=cluster)
    app.state.lines = lines
    app.state.metrics = metrics
    pool = backend if isinstance(backend, WorkerPool) else None
    metrics.watch(calls_active=lambda: runner.active, lines=lines, models=host,
                  writers=[writer, memory.writer], watchdog=watchdog,
                  model_workers=pool.state_counts if pool else None)
    app.include_router(
        twilio.create_router(
            config=twilio.TwilioConfig(
                public_url=settings.base_url,
                stream_url=settings.stream_url,
                account=account,
                signing_key=settings.signing_key,
                token_ttl_s=settings.stream_token_ttl_s,
                max_message_bytes=settings.max_message_bytes,
                transfer_allow=tuple(settings.transfer_allow),
                voicemail_action=settings.voicemail_action,
            ),
            store=store,
            handler=runner,
            lines=lines,
            metrics=metrics,
            relay=cluster,
        )
    )
    dialer = Dialer(config=OutboundConfig(
        from_number=settings.twilio_from_number,
        allow=tuple(settings.outbound_allow),
        calls_per_minute=settings.outbound_calls_per_minute,
        voice_url=f"{settings.base_url}/twilio/voice",
        status_url=f"{settings.base_url}/twilio/status",
        amd_url=f"{settings.base_url}/twilio/amd",
        machine_detection=settings.machine_detection,
        async_amd=settings.async_amd,
    ), account=account, store=store)
    app.include_router(api.create_router(store=store, callers=memory.callers))
    app.include_router(outbound_api.create_router(store=store, dialer=dialer))
    app.include_router(webrtc.create_router(calls=webrtc_calls, config=webrtc_config))
    app.include_router(call_page.create_router())
    app.include_router(metrics_router(
        metrics=metrics,
        token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
    ))
    app.mount("/admin", site.create_site(
        engine=engine, data_dir=settings.data_dir,
        secure_cookies=settings.base_url.startswith("https://"), changes=store.changes,
        on_webhook_replay=webhooks.wake if webhooks else None,
    ))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        # 503 while draining: a balancer's or Kubernetes' readiness check sends no new calls.
        return JSONResponse(status_code=503 if lines.draining else 200, content={
            "status": "draining" if lines.draining else "ok", "worker": store.worker,
            "active_calls": runner.active,
            "webrtc_sessions": webrtc_calls.active,
            "worst_loop_lag_ms": round(watchdog.worst_lag_ms), "loop_stalls": watchdog.stalls,
            "loop_lag_ms": {"p50": round(watchdog.recent_lag_ms(0.5), 1),
                            "p99": round(watchdog.recent_lag_ms(0.99), 1)},
            **({"model_workers": pool.workers} if pool else {}),
        })

    return app
