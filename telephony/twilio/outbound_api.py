"""`POST /api/calls/outbound`: place a call, behind the API's bearer tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, StringConstraints, field_validator

from callwright.memory.store import CallStore
from callwright.telephony.twilio.outbound import Dialer, DialRefused

VariableName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
VariableValue = Annotated[str, StringConstraints(max_length=500)] | int | float | bool
# What memory recall and answering-machine detection set; a dialler cannot fake them.
RESERVED_VARIABLES = frozenset({"number", "known", "last_summary", "memories", "answered_by"})


class OutboundCall(BaseModel):
    """The body of `POST /api/calls/outbound`; reserved variable names are refused.

    Attributes:
        flow: The flow to run, by name; None runs the default flow.
    """

    to: str = Field(pattern=r"^\+[1-9][0-9]{6,14}$", description="E.164 number")
    flow: str | None = Field(None, max_length=128)
    variables: dict[VariableName, VariableValue] = Field(
        default_factory=dict, max_length=32,
        description="Flows read them as `caller.<name>` (an appointment's day, a name).",
    )

    @field_validator("variables")
    @classmethod
    def _not_reserved(cls, variables: dict) -> dict:
        if taken := sorted(RESERVED_VARIABLES & variables.keys()):
            raise ValueError(f"reserved variable names: {', '.join(taken)}")
        return variables


class PlacedCall(BaseModel):
    """A placed call: its id in the call store and Twilio's call SID."""

    id: int
    call_sid: str


def create_router(*, store: CallStore, dialer: Dialer) -> APIRouter:
    """Router for `POST /api/calls/outbound`, which places a call through `dialer`.

    Every route requires a bearer token that `store.api_token_valid` accepts (401
    otherwise); a refused call is answered with its `DialRefused.status`.
    """
    bearer = HTTPBearer(auto_error=False)

    async def authorised(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> None:
        if credentials is None or not await store.api_token_valid(credentials.credentials):
            raise HTTPException(status_code=401, detail="a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(authorised)])

    @router.post("/calls/outbound", response_model=PlacedCall, status_code=201)
    async def place(body: OutboundCall) -> PlacedCall:
        try:
            call_id, call_sid = await dialer.dial(body.to, flow=body.flow,
                                                   variables=body.variables)
        except DialRefused as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from None
        return PlacedCall(id=call_id, call_sid=call_sid)

    return router
