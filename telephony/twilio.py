"""Twilio voice webhook and Media Stream websocket."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from memory.store import CallStore
from telephony import tokens
from telephony.handler import CallHandler
from telephony.twilio_rest import hang_up
from telephony.twilio_serializer import TwilioMediaStreamSerializer

TWILIO_SAMPLE_RATE = 8000
POLICY_VIOLATION = 1008
START_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class TwilioConfig:
    public_url: str  # https://host[:port], exactly as configured in Twilio
    stream_url: str  # wss://host/twilio/stream
    account_sid: str
    auth_token: str
    api_base_url: str
    signing_key: bytes
    token_ttl_s: float
    max_message_bytes: int


def mask_number(number: str | None) -> str:
    return f"…{number[-4:]}" if number and len(number) > 4 else "?"


def create_router(*, config: TwilioConfig, store: CallStore, handler: CallHandler) -> APIRouter:
    router = APIRouter(prefix="/twilio", tags=["twilio"])
    validator = RequestValidator(config.auth_token)

    @router.post("/voice")
    async def voice(request: Request) -> Response:
        form = await request.form()
        params = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        url = config.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        signature = request.headers.get("X-Twilio-Signature", "")
        if not validator.validate(url, params, signature):
            logger.warning(f"voice webhook: bad signature for {url}")
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        call_sid = params.get("CallSid", "")
        if not call_sid.startswith("CA"):
            raise HTTPException(status_code=400, detail="CallSid is missing")
        token, issued = tokens.issue(config.signing_key, call_sid, config.token_ttl_s)
        try:
            await store.create_call(
                call_sid=call_sid,
                transport="twilio",
                account_sid=params.get("AccountSid"),
                from_number=params.get("From"),
                to_number=params.get("To"),
                token_nonce=issued.nonce,
            )
        except Exception as exc:  # a retried webhook for a call we already answered
            logger.warning(f"call {call_sid}: not created ({exc.__class__.__name__})")
            raise HTTPException(status_code=409, detail="call already exists") from None
        logger.info(f"call {call_sid}: answering {mask_number(params.get('From'))}")
        response = VoiceResponse()
        connect = Connect()
        connect.stream(url=config.stream_url).parameter(name="token", value=token)
        response.append(connect)
        return Response(content=str(response), media_type="application/xml")

    @router.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        signature = websocket.headers.get("x-twilio-signature", "")
        if not validator.validate(config.stream_url, {}, signature):
            logger.warning("media stream: bad or missing signature on the upgrade")
            await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await websocket.accept()
        try:
            start = await asyncio.wait_for(_read_start(websocket), START_TIMEOUT_S)
        except (TimeoutError, ValueError, KeyError, WebSocketDisconnect) as exc:
            logger.warning(f"media stream: no valid start ({exc!r}); closing")
            await _close(websocket, "no valid start event")
            return
        call_sid, stream_sid = start["callSid"], start["streamSid"]
        params = start.get("customParameters") or {}
        try:
            token = tokens.verify(config.signing_key, params.get("token"))
            if token.call_sid != call_sid:
                raise tokens.TokenError("stream token was issued for another call")
        except tokens.TokenError as exc:
            logger.warning(f"call {call_sid}: refused stream: {exc}")
            await _close(websocket, str(exc))
            return
        call_id = await store.claim_stream(call_sid=call_sid, nonce=token.nonce,
                                           stream_sid=stream_sid)
        if call_id is None:
            logger.warning(f"call {call_sid}: refused stream: token already used")
            await _close(websocket, "stream token already used")
            return

        serializer = TwilioMediaStreamSerializer(
            stream_sid=stream_sid, call_sid=call_sid, max_message_bytes=config.max_message_bytes
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                audio_out_10ms_chunks=2,
                serializer=serializer,
            ),
        )
        dropped = asyncio.Event()

        @transport.event_handler("on_client_disconnected")
        async def _on_disconnected(_transport, _ws):
            dropped.set()

        logger.info(f"call {call_sid}: stream {stream_sid} started")
        status, reason = "completed", "agent-hangup"
        try:
            await handler.run_call(
                transport=transport, call_id=call_id, sample_rate=TWILIO_SAMPLE_RATE
            )
        except Exception:
            logger.exception(f"call {call_sid}: pipeline failed")
            status, reason = "failed", "pipeline-error"
        if serializer.stopped:
            reason = "caller-hangup"
        elif dropped.is_set():
            status, reason = "failed", "stream-dropped"
        else:
            await hang_up(
                account_sid=config.account_sid,
                auth_token=config.auth_token,
                base_url=config.api_base_url,
                call_sid=call_sid,
            )
        await store.finish_call(call_id, status=status, reason=reason)
        logger.info(f"call {call_sid}: ended ({reason})")

    return router


async def _read_start(websocket: WebSocket) -> dict:
    """Read `connected` then `start`; anything else first is a protocol error."""
    while True:
        text = await websocket.receive_text()
        message = json.loads(text)
        if not isinstance(message, dict):
            raise ValueError("message is not an object")
        event = message.get("event")
        if event == "connected":
            continue
        start = message.get("start")
        if event != "start" or not isinstance(start, dict):
            raise ValueError(f"expected start, got {str(event)[:40]!r}")
        if not all(isinstance(start.get(k), str) for k in ("callSid", "streamSid")):
            raise ValueError("start without callSid/streamSid")
        return start


async def _close(websocket: WebSocket, reason: str) -> None:
    try:
        await websocket.close(code=POLICY_VIOLATION, reason=reason[:120])
    except RuntimeError:
        pass  # already closed by the peer
