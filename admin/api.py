"""JSON API over stored calls, behind bearer tokens made by `callwright token create`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from callwright.memory.callers import CallerStore
from callwright.memory.store import CallStore


class TurnOut(BaseModel):
    """A call's turn in the JSON API (fields as in `Turn`)."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    speaker: str
    speaker_label: str | None
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool
    planned_text: str | None
    latency_ms: int | None
    timings: dict | None
    llm_first_token_ms: int | None
    llm_tokens_in: int | None
    llm_tokens_out: int | None
    emotion: str | None  # caller turns: neutral, positive, frustrated or sad
    arousal: float | None
    valence: float | None


class CallOut(BaseModel):
    """A call in the JSON API's list (fields as in `Call`)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    call_sid: str
    stream_sid: str | None
    transport: str
    from_number: str | None
    to_number: str | None
    status: str
    end_reason: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    recording_path: str | None
    flow_name: str | None
    flow_version: str | None
    direction: str | None
    answered_by: str | None  # Twilio's answering-machine detection, on outbound calls
    transferred_to: str | None
    outcome: str | None  # resolved, transferred, abandoned, voicemail, failed or the flow's
    worker: str | None  # the server process that ran it (WORKER_ID)


class CallDetail(CallOut):
    """A call with its flow path, slots, variables, summary and turns."""

    flow_path: list | None
    slots: dict | None
    variables: dict | None  # what the dialler passed with an outbound call
    summary: str | None
    turns: list[TurnOut]


class MemoryOut(BaseModel):
    """A memory in a caller's profile (fields as in `Memory`, without its embedding)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    text: str
    value: dict | None
    source_call_id: int | None
    created_at: datetime
    expires_at: datetime | None
    confidence: float


class CallerOut(BaseModel):
    """A caller's profile and everything remembered about them."""

    number: str
    name: str | None
    language: str | None
    first_seen: datetime
    last_seen: datetime
    call_ids: list[int]
    last_summary: str | None
    memories: list[MemoryOut]


def create_router(*, store: CallStore, callers: CallerStore | None = None) -> APIRouter:
    """Router for the JSON API under `/api`: calls and, with `callers`, callers' profiles.

    Routes: `GET /calls`, `GET /calls/{call_id}`, and `GET /callers/{number}` when `callers`
    is given. Each requires a bearer token that `store.api_token_valid` accepts (401
    otherwise).
    """
    bearer = HTTPBearer(auto_error=False)

    async def authorised(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if credentials is None or not await store.api_token_valid(credentials.credentials):
            raise HTTPException(
                status_code=401,
                detail="a valid bearer token is required (callwright token create)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(authorised)])

    @router.get("/calls", response_model=list[CallOut])
    async def list_calls(
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0),
        call_sid: str | None = None,
    ):
        return await store.list_calls(limit=limit, offset=offset, call_sid=call_sid)

    @router.get("/calls/{call_id}", response_model=CallDetail)
    async def get_call(call_id: int):
        call = await store.get_call(call_id)
        if call is None:
            raise HTTPException(status_code=404, detail="no such call")
        return call

    if callers is not None:

        @router.get("/callers/{number}", response_model=CallerOut)
        async def get_caller(number: str):
            """A caller by phone number, in any format (URL-encode the `+` as %2B)."""
            profile = await callers.profile(number)
            if profile is None:
                raise HTTPException(status_code=404, detail="no such caller")
            caller = profile.caller
            return CallerOut(
                number=caller.number, name=caller.name, language=caller.language,
                first_seen=caller.first_seen, last_seen=caller.last_seen,
                call_ids=profile.call_ids, last_summary=profile.last_summary,
                memories=[MemoryOut.model_validate(m) for m in profile.memories],
            )

    return router
