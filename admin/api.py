"""JSON API over stored calls, behind bearer tokens made by `callwright token create`."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict

from memory.store import CallStore


class TurnOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    speaker: str
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool
    planned_text: str | None
    latency_ms: int | None
    timings: dict | None


class CallOut(BaseModel):
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


class CallDetail(CallOut):
    turns: list[TurnOut]


def create_router(*, store: CallStore) -> APIRouter:
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

    return router
