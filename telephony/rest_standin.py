"""A local stand-in for the part of Twilio's REST API callwright uses, strict about shapes.

It implements `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` as Twilio
documents it: HTTP Basic auth with the account SID and auth token, a form body, and
a JSON call resource back. Anything else is refused the way Twilio refuses it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

_CALL = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls/(CA[0-9a-f]{32})\.json$")


@dataclass(kw_only=True)
class RestRequest:
    method: str
    path: str
    form: dict[str, str]


@dataclass(kw_only=True)
class TwilioRestStandIn:
    account_sid: str
    auth_token: str
    requests: list[RestRequest] = field(default_factory=list)
    port: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE", "PUT"])
        async def handle(request: Request, path: str):
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
            self.requests.append(RestRequest(method=request.method, path="/" + path, form=form))
            expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {expected}":
                return _error(401, 20003, "Authenticate")
            match = _CALL.match("/" + path)
            if request.method != "POST" or not match or match.group(1) != self.account_sid:
                return _error(404, 20404, "The requested resource was not found")
            if form.get("Status") not in (None, "completed", "canceled") or not form:
                return _error(400, 21220, f"Invalid call update: {form}")
            return JSONResponse({"sid": match.group(2), "account_sid": self.account_sid,
                                 "status": form.get("Status", "in-progress")})

        return app

    async def serve(self) -> None:
        """Start on a free loopback port."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hang_ups(self) -> list[str]:
        return [r.path for r in self.requests if r.form.get("Status") == "completed"]


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)
