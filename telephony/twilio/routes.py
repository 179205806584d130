"""Twilio voice webhook, Media Stream websocket, and the status callbacks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.websockets import WebSocketState
from loguru import logger
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from callwright.agent.frames import is_machine
from callwright.logs import call_context
from callwright.memory.models import Call
from callwright.memory.store import CallStore
from callwright.metrics import Metrics
from callwright.telephony.handler import CallHandler
from callwright.telephony.lines import CallRelay, Lines
from callwright.telephony.numbers import mask_number
from callwright.telephony.twilio import tokens
from callwright.telephony.twilio.control import TwilioCallControl
from callwright.telephony.twilio.rest import TwilioAccount, hang_up
from callwright.telephony.twilio.serializer import (
    INVALID_PAYLOAD,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    UNSUPPORTED_DATA,
    BadMessage,
    TwilioMediaStreamSerializer,
    describe,
    parse_message,
)
from callwright.telephony.twilio.transport import TwilioWebsocketTransport

TWILIO_SAMPLE_RATE = 8000
INTERNAL_ERROR = 1011
# What a refused stream is told in its close frame; the log has the details. Fixed words,
# so nothing a caller sent is echoed back (a close reason holds at most 123 bytes).
CLOSE_REASONS = {UNSUPPORTED_DATA: "binary frame", INVALID_PAYLOAD: "not JSON",
                 POLICY_VIOLATION: "no valid start event", MESSAGE_TOO_BIG: "message too big",
                 INTERNAL_ERROR: "internal error"}
START_TIMEOUT_S = 10.0
FINISH_RETRY_S = 120.0  # how long a call's final state waits for an absent database
BUSY_MESSAGE = "All our lines are busy right now. Please call again later. Goodbye."
TERMINAL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}


@dataclass(frozen=True, kw_only=True)
class TwilioConfig:
    """What the Twilio routes need: public URLs, the account, stream-token and message limits.

    Attributes:
        account: The Twilio account; its auth token checks webhook and stream signatures.
        signing_key: The HMAC key of the one-time stream tokens.
        token_ttl_s: How long a stream token is valid after the voice webhook issues it.
        max_message_bytes: The largest Media Streams message accepted.
        transfer_allow: Glob patterns of E.164 numbers a call may be transferred to;
            empty allows none.
    """

    public_url: str  # https://host[:port], exactly as configured in Twilio
    stream_url: str  # wss://host/twilio/stream
    account: TwilioAccount
    signing_key: bytes
    token_ttl_s: float
    max_message_bytes: int
    transfer_allow: tuple[str, ...] = ()
    voicemail_action: str = "speak"  # "speak" (leave the opening as a message) or "hangup"


def create_router(
    *,
    config: TwilioConfig,
    store: CallStore,
    handler: CallHandler,
    lines: Lines,
    metrics: Metrics | None = None,
    relay: CallRelay | None = None,
) -> APIRouter:
    """Router under `/twilio`: `POST /voice`, `POST /status`, `POST /amd` and `/stream`.

    Webhooks must carry a valid Twilio signature for `config.public_url` (403 otherwise).
    `/voice` admits the call through `lines` (busy TwiML when all are in use), stores it
    and answers with stream TwiML carrying a one-time token; the `/stream` websocket
    spends that token, runs the call through `handler` and stores how it ended. What
    is admitted, refused, rejected and ended is counted in `metrics`; what is logged
    about a call carries its SID (`call_context`). With several workers, `relay` takes an
    `/amd` result to the worker running the call's stream.
    """
    router = APIRouter(prefix="/twilio", tags=["twilio"])
    metrics = metrics or Metrics()
    validator = RequestValidator(config.account.auth_token)
    live: dict[str, TwilioCallControl] = {}  # call SID -> its control, while streaming

    async def signed_form(request: Request) -> dict[str, str]:
        form = await request.form()
        params = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        url = config.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        endpoint = request.url.path.rsplit("/", 1)[-1]
        if not validator.validate(url, params, request.headers.get("X-Twilio-Signature", "")):
            logger.warning(f"{request.url.path}: bad signature for {url}")
            metrics.twilio_rejected.labels(endpoint, "signature").inc()
            raise HTTPException(status_code=403, detail="invalid Twilio signature")
        if not params.get("CallSid", "").startswith("CA"):
            metrics.twilio_rejected.labels(endpoint, "no_call_sid").inc()
            raise HTTPException(status_code=400, detail="CallSid is missing")
        return params

    @router.post("/voice")
    async def voice(request: Request) -> Response:
        """Twilio's voice webhook: admit, store and connect the call's stream, or refuse."""
        params = await signed_form(request)
        with call_context(call_sid=params["CallSid"]):
            return await answer(params)

    async def answer(params: dict[str, str]) -> Response:
        call_sid = params["CallSid"]
        answered_by = params.get("AnsweredBy")
        existing = await store.call_by_sid(call_sid)
        placed_by_us = existing is not None and existing.direction == "outbound" and (
            existing.token_nonce is None and existing.ended_at is None
        )
        if existing is not None and not placed_by_us:  # a retried or replayed webhook
            logger.warning(f"call {call_sid}: webhook for a call already answered")
            metrics.twilio_rejected.labels("voice", "duplicate").inc()
            raise HTTPException(status_code=409, detail="call already exists")
        if lines.draining and lines.shared:
            # Stopping, and other workers share the lines: the balancer gives it to one.
            logger.info(f"call {call_sid}: draining; passing it to another worker")
            raise HTTPException(status_code=503, detail="draining",
                                headers={"Retry-After": "1"})
        if not await lines.admit(call_sid):
            logger.warning(f"call {call_sid}: all {lines.max_calls} lines busy"
                           f"{' (draining)' if lines.draining else ''}; refusing politely")
            metrics.calls_refused.labels("twilio", "draining" if lines.draining else "busy").inc()
            return _twiml(_busy())
        metrics.calls_admitted.labels("twilio").inc()
        if answered_by and is_machine(answered_by) and config.voicemail_action == "hangup":
            await lines.release(call_sid)  # no stream will come
            logger.info(f"call {call_sid}: answered by {answered_by}; hanging up")
            await _store_finish(store, call_sid, existing, params, "voicemail")
            return _twiml(_hangup())
        token, issued = tokens.issue(config.signing_key, call_sid, config.token_ttl_s)
        if existing is None:
            try:
                call_id = await store.create_call(
                    call_sid=call_sid, transport="twilio", account_sid=params.get("AccountSid"),
                    from_number=params.get("From"), to_number=params.get("To"),
                    token_nonce=issued.nonce,
                    direction="outbound" if params.get("Direction", "").startswith("outbound")
                    else "inbound",
                )
            except Exception as exc:  # the same webhook twice at once: the first keeps the line
                logger.warning(f"call {call_sid}: not created ({exc.__class__.__name__})")
                raise HTTPException(status_code=409, detail="call already exists") from None
        else:
            call_id = existing.id
            await store.update_call(call_id, token_nonce=issued.nonce, status="ringing")
        if answered_by:
            await store.update_call(call_id, answered_by=answered_by[:32])
        who = params.get("To") if placed_by_us else params.get("From")
        logger.info(f"call {call_sid}: answering {mask_number(who)}"
                    f"{f' (answered by {answered_by})' if answered_by else ''}")
        response = VoiceResponse()
        connect = Connect()
        stream = connect.stream(url=config.stream_url)
        stream.parameter(name="token", value=token)
        if answered_by:
            stream.parameter(name="answeredBy", value=answered_by)
        response.append(connect)
        return _twiml(response)

    @router.post("/status")
    async def status(request: Request) -> Response:
        """Twilio's call status callback: closes calls whose stream never closed them."""
        params = await signed_form(request)
        with call_context(call_sid=params["CallSid"]):
            return await status_changed(params)

    async def status_changed(params: dict[str, str]) -> Response:
        call_sid, call_status = params["CallSid"], params.get("CallStatus", "")
        if call_status not in TERMINAL_STATUSES:
            return Response(status_code=204)
        if call_sid in live:
            return Response(status_code=204)  # the stream is still up; it closes the call
        call = await store.call_by_sid(call_sid)
        if call is not None and call.status == "in-progress" and call.worker != store.worker:
            return Response(status_code=204)  # its stream runs on another worker
        if call is not None and call.ended_at is None:
            await lines.release(call_sid)
            logger.info(f"call {call_sid}: closed by status callback ({call_status})")
            await store.finish_call(call.id, status=call_status[:16],
                                    reason=f"twilio-{call_status}")
        return Response(status_code=204)

    @router.post("/amd")
    async def amd(request: Request) -> Response:
        """Asynchronous answering-machine detection: the result arrives mid-call."""
        params = await signed_form(request)
        call_sid, answered_by = params["CallSid"], params.get("AnsweredBy", "unknown")
        with call_context(call_sid=call_sid):
            call = await store.call_by_sid(call_sid)
            if call is not None:
                await store.update_call(call.id, answered_by=answered_by[:32])
            if call_sid in live:
                await tell_answered(call_sid, {"answered_by": answered_by})
            elif relay is not None and call is not None and call.ended_at is None:
                try:  # its stream runs on another worker
                    await relay.relay(call_sid, {"answered_by": answered_by})
                except Exception as exc:  # Redis away: stored, but the call is not told
                    logger.warning(f"answering-machine result not relayed ({exc!r})")
            logger.info(f"call {call_sid}: answered by {answered_by}")
        return Response(status_code=204)

    async def tell_answered(call_sid: str, event: dict) -> None:
        """Tell the call's pipeline who answered, if its stream runs here."""
        answered_by = event.get("answered_by")
        if (control := live.get(call_sid)) is None or not isinstance(answered_by, str):
            return
        hang_up_now = is_machine(answered_by) and config.voicemail_action == "hangup"
        with call_context(call_sid=call_sid):
            await control.answered(answered_by, end_call=hang_up_now)

    if relay is not None:
        relay.on_call_event(tell_answered)

    @router.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        """Twilio's Media Stream for one call; whatever arrives, it ends with a close code."""
        signature = websocket.headers.get("x-twilio-signature", "")
        if not validator.validate(config.stream_url, {}, signature):
            logger.warning("media stream: bad or missing signature on the upgrade")
            metrics.twilio_rejected.labels("stream", "signature").inc()
            await websocket.close(code=POLICY_VIOLATION)  # before accept: HTTP 403
            return
        await websocket.accept()
        try:
            await serve_stream(websocket)
        except Exception:
            # Whatever breaks, the far end hears a close code, not a dropped connection.
            logger.exception(f"media stream: failed; closing with {INTERNAL_ERROR}")
            await _close(websocket, INTERNAL_ERROR)

    async def serve_stream(websocket: WebSocket) -> None:
        """Check the `start` event and its token, then run the call on this stream."""
        try:
            start = await asyncio.wait_for(
                _read_start(websocket, config.max_message_bytes), START_TIMEOUT_S
            )
        except BadMessage as exc:
            logger.warning(f"media stream: refused before start: {exc.why}; "
                           f"closing with {exc.code}")
            metrics.twilio_rejected.labels("stream", "protocol").inc()
            await _close(websocket, exc.code)
            return
        except TimeoutError:
            logger.warning(f"media stream: no start within {START_TIMEOUT_S:.0f} s; "
                           f"closing with {POLICY_VIOLATION}")
            metrics.twilio_rejected.labels("stream", "no_start").inc()
            await _close(websocket, POLICY_VIOLATION)
            return
        except WebSocketDisconnect as exc:  # the peer left, or the websocket layer refused
            logger.warning(f"media stream: closed before start (code {exc.code})")
            return
        call_sid, stream_sid = start["callSid"], start["streamSid"]
        params = start.get("customParameters")
        params = params if isinstance(params, dict) else {}
        try:
            if not isinstance(params.get("token"), str | None):
                raise tokens.TokenError("stream token is not a string")
            token = tokens.verify(config.signing_key, params.get("token"))
            if token.call_sid != call_sid:
                raise tokens.TokenError("stream token was issued for another call")
        except tokens.TokenError as exc:
            logger.warning(f"call {call_sid[:40]}: refused stream: {exc}; "
                           f"closing with {POLICY_VIOLATION}")
            metrics.twilio_rejected.labels("stream", "token").inc()
            await _close(websocket, POLICY_VIOLATION, str(exc))
            return
        call_id = await store.claim_stream(call_sid=call_sid, nonce=token.nonce,
                                           stream_sid=stream_sid)
        if call_id is None:
            logger.warning(f"call {call_sid}: refused stream: token already used; "
                           f"closing with {POLICY_VIOLATION}")
            metrics.twilio_rejected.labels("stream", "token_used").inc()
            await _close(websocket, POLICY_VIOLATION, "stream token already used")
            return
        with call_context(call_sid=call_sid, call_id=call_id):
            await run_stream(websocket, call_sid=call_sid, stream_sid=stream_sid,
                             call_id=call_id, params=params)

    async def run_stream(
        websocket: WebSocket, *, call_sid: str, stream_sid: str, call_id: int, params: dict
    ) -> None:
        """Run the call on its accepted stream, then store how it ended."""
        serializer = TwilioMediaStreamSerializer(
            stream_sid=stream_sid, call_sid=call_sid, max_message_bytes=config.max_message_bytes
        )
        transport = TwilioWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                # Twilio buffers what it is sent: 100 ms messages cost the event loop a
                # fifth of what 20 ms ones do, and keep up under load.
                audio_out_10ms_chunks=10,
                serializer=serializer,
            ),
        )
        dropped = asyncio.Event()

        @transport.event_handler("on_client_disconnected")
        async def _on_disconnected(_transport, _ws):
            dropped.set()

        answered_by = params.get("answeredBy")
        answered_by = answered_by if isinstance(answered_by, str) and answered_by else None
        control = TwilioCallControl(account=config.account, call_sid=call_sid,
                                    transfer_allow=config.transfer_allow)
        call = await store.call_by_sid(call_sid)
        # What a dialled call was placed with: its flow and variables.
        flow, variables = (call.flow_name, call.variables) if call is not None else (None, None)
        live[call_sid] = control
        lines.connected(call_sid)
        logger.info(f"call {call_sid}: stream {stream_sid} started")
        status, reason = "completed", "agent-hangup"
        try:
            await handler.run_call(transport=transport, call_id=call_id,
                                   sample_rate=TWILIO_SAMPLE_RATE, control=[control],
                                   flow=flow, answered_by=answered_by,
                                   variables=variables, call_sid=call_sid)
        except Exception:
            logger.exception(f"call {call_sid}: pipeline failed")
            status, reason = "failed", "pipeline-error"
        finally:
            live.pop(call_sid, None)
            await lines.release(call_sid)
        if lines.cutting_off:
            status, reason = "interrupted", "server-stopped"
        elif control.transferred_to:
            reason = "transferred"
        elif serializer.stopped:
            reason = "caller-hangup"
        elif dropped.is_set():
            status, reason = "failed", "stream-dropped"
        else:
            if control.left_machine:
                reason = "voicemail"
            await hang_up(config.account, call_sid)
        metrics.calls_ended.labels("twilio", status, reason).inc()
        await _finish(store, call_id, status=status, reason=reason,
                      transferred_to=control.transferred_to)
        logger.info(f"call {call_sid}: ended ({reason})")

    return router


def _twiml(response: VoiceResponse) -> Response:
    return Response(content=str(response), media_type="application/xml")


def _busy() -> VoiceResponse:
    response = VoiceResponse()
    response.say(BUSY_MESSAGE)
    response.hangup()
    return response


def _hangup() -> VoiceResponse:
    response = VoiceResponse()
    response.hangup()
    return response


async def _store_finish(
    store: CallStore, call_sid: str, existing: Call | None, params: dict[str, str], reason: str
) -> None:
    """A call that ends at the webhook (an answering machine we hang up on)."""
    if existing is None:
        call_id = await store.create_call(
            call_sid=call_sid, transport="twilio", account_sid=params.get("AccountSid"),
            from_number=params.get("From"), to_number=params.get("To"), direction="outbound",
        )
    else:
        call_id = existing.id
    await store.update_call(call_id, answered_by=params.get("AnsweredBy", "")[:32])
    await store.finish_call(call_id, status="completed", reason=reason)


async def _finish(store: CallStore, call_id: int, **fields) -> None:
    """Store how the call ended, waiting out a database that is briefly away."""
    transferred_to = fields.pop("transferred_to", None)
    delay, deadline = 0.5, asyncio.get_running_loop().time() + FINISH_RETRY_S
    while True:
        try:
            if transferred_to:
                await store.update_call(call_id, transferred_to=transferred_to[:64])
            await store.finish_call(call_id, **fields)
            return
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                logger.error(f"call {call_id}: end not stored ({exc!r})")
                return
            logger.warning(f"call {call_id}: storing its end failed ({exc!r}); retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _read_start(websocket: WebSocket, max_bytes: int) -> dict:
    """Read `connected` then `start`; anything else first is refused.

    Raises:
        BadMessage: A message that is not `connected` or a valid `start`, with its close code.
        WebSocketDisconnect: The peer closed, or the websocket layer refused a frame
            (invalid UTF-8: 1007; over its size limit: 1009).
    """
    while True:
        received = await websocket.receive()
        if received["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(received.get("code", 1000), received.get("reason"))
        data = received.get("text")
        message = parse_message(received.get("bytes") or b"" if data is None else data, max_bytes)
        event = message.get("event")
        if event == "connected":
            continue
        start = message.get("start")
        if event != "start" or not isinstance(start, dict):
            raise BadMessage(POLICY_VIOLATION, f"expected start, got {describe(event)}")
        if not all(isinstance(start.get(k), str) for k in ("callSid", "streamSid")):
            raise BadMessage(POLICY_VIOLATION, "start without callSid/streamSid")
        return start


async def _close(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    """Close with `code` unless the connection is already gone."""
    if websocket.client_state != WebSocketState.CONNECTED:
        return  # the peer closed first, or the websocket layer refused the stream
    text = (reason or CLOSE_REASONS.get(code, "")).encode()[:120].decode(errors="ignore")
    try:
        await websocket.close(code=code, reason=text)
    except (RuntimeError, WebSocketDisconnect):
        pass  # closed by the peer meanwhile
