"""Browser calls over WebRTC: SDP signalling and the life of each call, on pipecat's SmallWebRTC.

`POST /webrtc/offer` takes the browser's SDP offer and answers it; `PATCH /webrtc/offer`
adds the candidates a browser trickles afterwards. Each offer becomes a Call row
(transport "webrtc") and, once ICE and DTLS are up, runs through the same call handler
as a phone call. Offers allocate UDP ports and DTLS state, so they are capped per
server and rate-limited per client IP, bodies are size-limited, and a call ends when
it never connects or when nobody has spoken for a while.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiortc.sdp import SessionDescription, candidate_from_sdp
from fastapi import APIRouter, HTTPException, Request
from loguru import logger
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pydantic import AliasChoices, BaseModel, Field, ValidationError

from callwright.logs import call_context
from callwright.memory.store import CallStore
from callwright.metrics import Metrics
from callwright.telephony.call_events import CallEventsObserver
from callwright.telephony.handler import CallHandler
from callwright.telephony.webrtc.ice import rtc_ice_servers
from callwright.telephony.webrtc.transport import CallWebRTCTransport

OUTPUT_SAMPLE_RATE = 48_000  # Opus runs at 48 kHz; anything else is resampled again by aiortc
DEFAULT_FLOW = "default"


@dataclass(frozen=True, kw_only=True)
class WebRTCConfig:
    """Limits and settings of browser calls.

    Attributes:
        max_sessions: Browser calls held at once; further offers are refused (503).
        offers_per_minute: New offers allowed per client IP in any minute (429 beyond).
        connect_timeout_s: How long ICE and DTLS may take before the call is given up.
        idle_timeout_s: A connected call ends after this long without anyone speaking.
        max_offer_bytes: The largest request body accepted by `/webrtc/offer` (400 beyond).
        flows_dir: Where the flows a caller may pick are (`*.yaml`, `*.yml`).
    """

    ice_servers: list[dict]  # [{"urls": ..., "username": ..., "credential": ...}]
    max_sessions: int
    offers_per_minute: int
    connect_timeout_s: float
    idle_timeout_s: float
    max_offer_bytes: int
    flows_dir: Path


class OfferRequest(BaseModel):
    """pipecat's SmallWebRTC offer body (`SmallWebRTCRequest`), validated."""

    sdp: str = Field(min_length=1)
    type: Literal["offer"]
    pc_id: str | None = None
    restart_pc: bool = False
    request_data: dict | None = Field(
        None, validation_alias=AliasChoices("request_data", "requestData")
    )


class CandidateIn(BaseModel):
    """One ICE candidate a browser trickled.

    Attributes:
        sdp_mid: The media stream identification tag of the candidate's m-line.
        sdp_mline_index: The index of the candidate's m-line in the SDP.
    """

    candidate: str  # "" marks the end of candidates
    sdp_mid: str | None = None
    sdp_mline_index: int | None = None


class PatchRequest(BaseModel):
    """pipecat's `SmallWebRTCPatchRequest`, validated."""

    pc_id: str
    candidates: list[CandidateIn] = Field(max_length=64)


class OfferError(Exception):
    """A refused offer or candidate request.

    Attributes:
        status: The HTTP status to answer with.
        detail: What was wrong, for the browser.
    """

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def list_flows(flows_dir: Path) -> list[str]:
    """Flow names the caller may pick: "default" (the server's), then the files in `flows_dir`."""
    if not flows_dir.is_dir():
        return [DEFAULT_FLOW]
    names = {p.stem for p in flows_dir.iterdir() if p.suffix in (".yaml", ".yml")}
    return [DEFAULT_FLOW, *sorted(names - {DEFAULT_FLOW})]


def check_offer(sdp: str) -> None:
    """Refuse offers pipecat's SmallWebRTC cannot serve, before any UDP port is bound."""
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError(400, "not an SDP offer: it must start with 'v=0'")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:
        raise OfferError(400, f"unparseable SDP offer ({exc.__class__.__name__})") from None
    kinds = [media.kind for media in description.media]
    if "audio" not in kinds:
        raise OfferError(400, "the SDP offer has no audio m-line: a call needs a microphone")
    if kinds[0] != "audio":
        raise OfferError(400, "the first m-line of the SDP offer must be audio")
    audio = description.media[0]
    if audio.direction not in (None, "sendrecv", "sendonly"):
        raise OfferError(400, "the offer's audio m-line does not send: no microphone track")
    if not (audio.ice and audio.ice.usernameFragment and audio.ice.password):
        raise OfferError(400, "the SDP offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if not (audio.dtls and audio.dtls.fingerprints):
        raise OfferError(400, "the SDP offer has no DTLS fingerprint (a=fingerprint)")


class RateLimiter:
    """At most `limit` events per key in any `window_s` seconds."""

    MAX_KEYS = 4096

    def __init__(self, *, limit: int, window_s: float = 60.0):
        self._limit = limit
        self._window_s = window_s
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        """Count an event for `key` and allow it; False (not counted) when over the limit."""
        now = time.monotonic()
        if len(self._events) > self.MAX_KEYS:
            self._events = {k: q for k, q in self._events.items()
                            if q and now - q[-1] < self._window_s}
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= self._window_s:
            events.popleft()
        if len(events) >= self._limit:
            return False
        events.append(now)
        return True


@dataclass(kw_only=True)
class WebRTCCall:
    """One browser call: its peer connection, its stored call, and the task running it.

    Attributes:
        call_sid: A generated `WR...` id in place of a carrier's call SID.
        nonce: The call's one-time stream nonce, spent when the browser connects.
        flow: The flow the caller picked; "default" runs the server's.
        task: The task running the call, once started.
        ended_by: The end reason when the agent did not end the call (the caller hung up,
            nobody spoke, the server shut down).
    """

    connection: SmallWebRTCConnection
    call_id: int
    call_sid: str
    nonce: str
    flow: str
    task: asyncio.Task | None = None
    ended_by: str | None = None


class WebRTCCalls:
    """The peer connections this server holds, by pc_id, and the call running on each.

    Calls admitted, refused and ended are counted in `metrics`.
    """

    def __init__(self, *, config: WebRTCConfig, store: CallStore, handler: CallHandler,
                 metrics: Metrics | None = None):
        self._config = config
        self._store = store
        self._handler = handler
        self._metrics = metrics or Metrics()
        self._limiter = RateLimiter(limit=config.offers_per_minute)
        self._calls: dict[str, WebRTCCall] = {}
        self._ice_servers = rtc_ice_servers(config.ice_servers)

    @property
    def active(self) -> int:
        """Peer connections held now: calls connecting or running."""
        return len(self._calls)

    async def offer(self, request: OfferRequest, *, client_ip: str) -> dict:
        """Answer a browser's SDP offer and start its call in the background.

        Every offer is checked first. One with a `pc_id` renegotiates that running call; a
        new one is rate-limited per `client_ip`, capped at `max_sessions`, stored as a call
        (transport "webrtc") and run once ICE and DTLS are up.

        Returns:
            pipecat's SDP answer (`sdp`, `type`, `pc_id`) and the call's `call_sid`.

        Raises:
            OfferError: 400 for a bad offer or an unknown flow, 404 for an unknown `pc_id`,
                429 over the rate, 503 when every slot is busy or the call cannot be stored.
        """
        check_offer(request.sdp)
        if request.pc_id is not None:
            return await self._renegotiate(request)
        if not self._limiter.allow(client_ip):
            self._metrics.calls_refused.labels("webrtc", "rate_limited").inc()
            raise OfferError(429, "too many call attempts from this address; wait a minute")
        if len(self._calls) >= self._config.max_sessions:
            self._metrics.calls_refused.labels("webrtc", "busy").inc()
            raise OfferError(503, "all browser-call slots are busy; try again shortly")
        flow = (request.request_data or {}).get("flow") or DEFAULT_FLOW
        if flow not in list_flows(self._config.flows_dir):
            raise OfferError(400, f"unknown flow {str(flow)[:60]!r}")

        connection = SmallWebRTCConnection(
            ice_servers=self._ice_servers,
            connection_timeout_secs=int(self._config.connect_timeout_s),
        )
        try:
            await connection.initialize(sdp=request.sdp, type=request.type)
            answer = connection.get_answer()
            if answer is None:
                raise ValueError("no SDP answer was produced")
        except Exception as exc:
            await connection.disconnect()
            logger.warning(f"webrtc offer from {client_ip} refused: {exc!r}")
            raise OfferError(400, f"the SDP offer could not be answered: {exc}") from None

        call_sid = "WR" + secrets.token_hex(16)
        nonce = secrets.token_urlsafe(16)
        try:
            call_id = await self._store.create_call(
                call_sid=call_sid, transport="webrtc", token_nonce=nonce
            )
        except Exception:
            await connection.disconnect()
            logger.exception(f"call {call_sid}: could not be stored")
            raise OfferError(503, "the call could not be stored") from None
        call = WebRTCCall(
            connection=connection, call_id=call_id, call_sid=call_sid, nonce=nonce, flow=flow
        )
        self._calls[connection.pc_id] = call
        self._metrics.calls_admitted.labels("webrtc").inc()
        with call_context(call_sid=call_sid, call_id=call_id):  # the task's log context
            call.task = asyncio.create_task(self._run(call), name=f"webrtc-{call_sid}")
        logger.info(f"call {call_sid}: browser offer from {client_ip} answered (flow {flow})")
        return {**answer, "call_sid": call_sid}

    async def _renegotiate(self, request: OfferRequest) -> dict:
        """A known pc_id: renegotiation or an ICE restart of a running call."""
        call = self._calls.get(request.pc_id or "")
        if call is None:
            raise OfferError(404, "no such peer connection")
        old_id = call.connection.pc_id
        try:
            await call.connection.renegotiate(
                sdp=request.sdp, type=request.type, restart_pc=request.restart_pc
            )
        except Exception as exc:
            raise OfferError(400, f"the SDP offer could not be answered: {exc}") from None
        if call.connection.pc_id != old_id:  # a restart makes a new RTCPeerConnection
            self._calls[call.connection.pc_id] = self._calls.pop(old_id)
        return {**call.connection.get_answer(), "call_sid": call.call_sid}

    async def add_candidates(self, request: PatchRequest) -> None:
        """Add trickled ICE candidates to their peer connection; an empty one ends the candidates.

        Raises:
            OfferError: 404 for an unknown `pc_id`, 400 for a candidate that does not parse
                (those before it are already added).
        """
        call = self._calls.get(request.pc_id)
        if call is None:
            raise OfferError(404, "no such peer connection")
        for c in request.candidates:
            if not c.candidate:
                await call.connection.add_ice_candidate(None)  # end of candidates
                continue
            try:
                candidate = candidate_from_sdp(c.candidate.removeprefix("candidate:"))
            except Exception:
                raise OfferError(400, f"bad ICE candidate {c.candidate[:80]!r}") from None
            candidate.sdpMid = c.sdp_mid
            candidate.sdpMLineIndex = c.sdp_mline_index
            await call.connection.add_ice_candidate(candidate)

    async def _run(self, call: WebRTCCall) -> None:
        status, reason = "failed", "no-connection"
        try:
            if await self._connected(call.connection):
                await self._store.claim_stream(
                    call_sid=call.call_sid, nonce=call.nonce, stream_sid=call.connection.pc_id
                )
                logger.info(f"call {call.call_sid}: browser connected")
                await self._converse(call)
                status, reason = "completed", call.ended_by or "agent-hangup"
            else:
                logger.warning(f"call {call.call_sid}: the browser never connected")
        except Exception:
            logger.exception(f"call {call.call_sid}: pipeline failed")
            status, reason = "failed", "pipeline-error"
        finally:
            self._calls.pop(call.connection.pc_id, None)
            await call.connection.disconnect()
            self._metrics.calls_ended.labels("webrtc", status, reason).inc()
            await self._store.finish_call(call.call_id, status=status, reason=reason)
            logger.info(f"call {call.call_sid}: ended ({reason})")

    async def _connected(self, connection: SmallWebRTCConnection) -> bool:
        """Wait for ICE and DTLS; False if they fail or take longer than the timeout."""
        deadline = time.monotonic() + self._config.connect_timeout_s
        while time.monotonic() < deadline:
            state = connection.pc.connectionState
            if state == "connected":
                return True
            if state in ("failed", "closed"):
                return False
            await asyncio.sleep(0.05)
        return False

    async def _converse(self, call: WebRTCCall) -> None:
        transport = CallWebRTCTransport(
            call.connection,
            TransportParams(audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=2),
        )

        @transport.event_handler("on_client_disconnected")
        async def _on_disconnected(_transport, _connection):
            call.ended_by = call.ended_by or "caller-hangup"

        events = CallEventsObserver(send=call.connection.send_app_message)
        watchdog = asyncio.create_task(self._end_when_idle(call, events))
        try:
            await self._handler.run_call(
                transport=transport,
                call_id=call.call_id,
                sample_rate=OUTPUT_SAMPLE_RATE,
                observers=[events],
                flow=None if call.flow == DEFAULT_FLOW else call.flow,
                call_sid=call.call_sid,
            )
        finally:
            watchdog.cancel()

    async def _end_when_idle(self, call: WebRTCCall, events: CallEventsObserver) -> None:
        while time.monotonic() - events.last_activity < self._config.idle_timeout_s:
            await asyncio.sleep(1.0)
        logger.info(f"call {call.call_sid}: nobody spoke for {self._config.idle_timeout_s:.0f} s")
        call.ended_by = "idle-timeout"
        await call.connection.disconnect()  # the transport reports it, and the call ends

    async def close(self) -> None:
        """Server shutdown: hang up every browser call and wait for them to be stored."""
        calls = list(self._calls.values())
        for call in calls:
            call.ended_by = call.ended_by or "server-shutdown"
            await call.connection.disconnect()
        tasks = [call.task for call in calls if call.task]
        if tasks:
            await asyncio.wait(tasks, timeout=10)


def create_router(*, calls: WebRTCCalls, config: WebRTCConfig) -> APIRouter:
    """Router under `/webrtc`: `GET /config`, `POST /offer` and `PATCH /offer` (candidates).

    Request bodies over `config.max_offer_bytes`, not JSON, or not valid are refused with
    400; an `OfferError` is answered with its status.
    """
    router = APIRouter(prefix="/webrtc", tags=["webrtc"])

    async def read_json(request: Request) -> object:
        limit = config.max_offer_bytes
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > limit:
            raise HTTPException(400, f"request body too large: the limit is {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(400, f"request body too large: the limit is {limit} bytes")
        try:
            return json.loads(body)
        except ValueError:
            raise HTTPException(400, "request body is not JSON") from None

    def parse(model: type[BaseModel], data: object) -> BaseModel:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise HTTPException(400, f"bad request: {problems}") from None

    @router.get("/config")
    async def client_config() -> dict:
        """What the call page needs: ICE servers for the browser, and the flows to pick from."""
        return {"ice_servers": config.ice_servers, "flows": list_flows(config.flows_dir)}

    @router.post("/offer")
    async def offer(request: Request) -> dict:
        body = parse(OfferRequest, await read_json(request))
        client_ip = request.client.host if request.client else "?"
        try:
            return await calls.offer(body, client_ip=client_ip)
        except OfferError as exc:
            raise HTTPException(exc.status, exc.detail) from None

    @router.patch("/offer")
    async def candidates(request: Request) -> dict:
        body = parse(PatchRequest, await read_json(request))
        try:
            await calls.add_candidates(body)
        except OfferError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        return {"status": "ok"}

    return router
