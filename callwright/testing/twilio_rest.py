"""A local stand-in for the part of Twilio's REST API callwright uses, strict about shapes.

It implements, as Twilio documents them, with HTTP Basic auth (account SID and auth
token), form bodies and JSON call resources back:

- `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`: create a call. `To` and `From`
  are required (E.164), and exactly one of `Url`, `Twiml` or `ApplicationSid`; callback
  URLs must be absolute http(s) URLs; `MachineDetection`, `AsyncAmd` and
  `StatusCallbackEvent` take only their documented values.
- `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`: update a call
  (`Status=completed|canceled`, or new `Twiml`/`Url`).

Anything else is refused the way Twilio refuses it (401 20003, 404 20404, 400 21xxx).
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from callwright.testing.local_server import LocalServer

_CALL = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls/(CA[0-9a-f]{32})\.json$")
_CALLS = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls\.json$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_MACHINE_DETECTION = {"Enable", "DetectMessageEnd"}
_STATUS_EVENTS = {"initiated", "ringing", "answered", "completed"}


@dataclass(kw_only=True)
class RestRequest:
    """One request the stand-in received, recorded before it was checked.

    Attributes:
        method: The HTTP method.
        path: The URL path.
        form: The form parameters, one value per name (`lists` has every value).
    """

    method: str
    path: str
    form: dict[str, str]
    lists: dict[str, list[str]] = field(default_factory=dict)  # repeated parameters
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass(kw_only=True)
class TwilioRestStandIn(LocalServer):
    """Twilio's call-creating and -updating REST API, served locally (see the module docstring).

    Start it with `serve()` and set the server's `twilio_api_base_url` to its `base_url`.

    Attributes:
        account_sid: The account it serves; its Basic auth user.
        auth_token: Its Basic auth password.
        requests: Every request received, in order, refused ones included.
    """

    account_sid: str
    auth_token: str
    requests: list[RestRequest] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # SIDs of calls placed

    def app(self) -> FastAPI:
        """The API: create and update calls as Twilio does, refuse anything else as Twilio does."""
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE", "PUT"])
        async def handle(request: Request, path: str):
            raw = await request.form()
            form = {k: v for k, v in raw.items() if isinstance(v, str)}
            lists = {k: [v for v in raw.getlist(k) if isinstance(v, str)] for k in raw}
            self.requests.append(RestRequest(method=request.method, path="/" + path, form=form,
                                             lists=lists))
            expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
            if request.headers.get("authorization") != f"Basic {expected}":
                return _error(401, 20003, "Authenticate")
            create = _CALLS.match("/" + path)
            if create and request.method == "POST" and create.group(1) == self.account_sid:
                return self._create(form, lists)
            match = _CALL.match("/" + path)
            if request.method != "POST" or not match or match.group(1) != self.account_sid:
                return _error(404, 20404, "The requested resource was not found")
            if form.get("Status") not in (None, "completed", "canceled") or not form:
                return _error(400, 21220, f"Invalid call update: {form}")
            if "Twiml" in form and not form["Twiml"].startswith("<?xml"):
                return _error(400, 21220, "Twiml is not a TwiML document")
            return JSONResponse({"sid": match.group(2), "account_sid": self.account_sid,
                                 "status": form.get("Status", "in-progress")})

        return app

    def _create(self, form: dict[str, str], lists: dict[str, list[str]]) -> JSONResponse:
        for name in ("To", "From"):
            if not _E164.match(form.get(name, "")):
                return _error(400, 21201 if name == "To" else 21213, f"Invalid {name} number")
        sources = [k for k in ("Url", "Twiml", "ApplicationSid") if form.get(k)]
        if len(sources) != 1:
            return _error(400, 21205, "Exactly one of Url, Twiml, ApplicationSid is required")
        for name in ("Url", "StatusCallback", "AsyncAmdStatusCallback"):
            if name in form and not _URL.match(form[name]):
                return _error(400, 21205, f"{name} is not a valid URL")
        for name in ("Method", "StatusCallbackMethod", "AsyncAmdStatusCallbackMethod"):
            if form.get(name, "POST") not in ("GET", "POST"):
                return _error(400, 21205, f"{name} must be GET or POST")
        if form.get("MachineDetection", "Enable") not in _MACHINE_DETECTION:
            return _error(400, 21205, "MachineDetection must be Enable or DetectMessageEnd")
        if form.get("AsyncAmd", "false") not in ("true", "false"):
            return _error(400, 21205, "AsyncAmd must be true or false")
        if not set(lists.get("StatusCallbackEvent", [])) <= _STATUS_EVENTS:
            return _error(400, 21205, "Unknown StatusCallbackEvent")
        call_sid = "CA" + secrets.token_hex(16)
        self.created.append(call_sid)
        return JSONResponse(status_code=201, content={
            "sid": call_sid, "account_sid": self.account_sid, "to": form["To"],
            "from": form["From"], "status": "queued", "direction": "outbound-api",
            "api_version": "2010-04-01",
        })

    @property
    def base_url(self) -> str:
        """Where it is served, `http://127.0.0.1:<port>`; valid after `serve()`."""
        return f"http://127.0.0.1:{self.port}"

    def hang_ups(self) -> list[str]:
        """The paths of all requests received that set `Status=completed` (hang a call up)."""
        return [r.path for r in self.requests if r.form.get("Status") == "completed"]


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)
