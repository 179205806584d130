"""The supervisors' site under /admin: server-rendered pages over calls, callers and users."""

import csv
import io
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.admin import charts, dashboard, webhooks
from callwright.admin.accounts import AccountStore, Identity
from callwright.admin.auth import (
    SESSION_COOKIE,
    SIGN_IN_CSRF_COOKIE,
    SignInRequired,
    SiteAuth,
    client_ip,
    new_token,
)
from callwright.admin.callers import MEMORY_KINDS, CallerQueries
from callwright.admin.calls import CallFilters, CallQueries
from callwright.admin.filters import register as register_filters
from callwright.admin.live import LiveFeed
from callwright.admin.models import ROLES, TAGS
from callwright.memory.changes import Changes

HERE = Path(__file__).parent
PAGE_SIZE = 25
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_site(*, engine: AsyncEngine, data_dir: Path, secure_cookies: bool,
                prefix: str = "/admin", changes: Changes | None = None,
                on_webhook_replay: Callable[[], None] | None = None) -> FastAPI:
    """The admin site as an app to mount at `prefix` on the main app.

    `changes` (the call store's) wakes the live page's feed as calls change; without it
    the feed polls the database twice a second. `on_webhook_replay` wakes the webhook
    sender when a supervisor replays deliveries.
    """
    accounts = AccountStore(engine)
    auth = SiteAuth(accounts=accounts, secure_cookies=secure_cookies, cookie_path=prefix)
    calls = CallQueries(engine)
    callers = CallerQueries(engine)
    live = LiveFeed(engine, changes=changes, poll_s=0.5 if changes is None else 2.0)
    templates = Jinja2Templates(directory=HERE / "templates")
    register_filters(templates.env)
    templates.env.globals.update(base=prefix, tags=TAGS)
    recordings_root = data_dir.resolve()

    site = FastAPI(title="callwright admin", docs_url=None, redoc_url=None, openapi_url=None,
                   dependencies=[Depends(auth.csrf)])
    site.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    User = Annotated[Identity, Depends(auth.user)]
    Admin = Annotated[Identity, Depends(auth.admin)]
    Filters = Annotated[CallFilters, Query()]

    @site.middleware("http")
    async def security_headers(request: Request, call_next):  # noqa: ANN001, ANN202
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @site.exception_handler(SignInRequired)
    async def sign_in_first(request: Request, _exc: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{prefix}/login?next={quote(target, safe='')}", status_code=303)

    def page(request: Request, name: str, identity: Identity | None, status: int = 200,
             **context) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"me": identity, **context}, status_code=status
        )

    # Sign-in

    @site.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "", error: str = "") -> Response:
        token = request.cookies.get(SIGN_IN_CSRF_COOKIE) or new_token()
        response = page(request, "login.html", None, next=_local(next, prefix), error=error,
                        csrf=token)
        auth.set_cookie(response, SIGN_IN_CSRF_COOKIE, token, max_age=3600)
        return response

    @site.post("/login")
    async def login(request: Request, username: Annotated[str, Form(max_length=64)],
                    password: Annotated[str, Form(max_length=1024)],
                    next: Annotated[str, Form()] = "") -> Response:
        ip = client_ip(request)
        token = request.cookies.get(SIGN_IN_CSRF_COOKIE, "")
        if await accounts.throttled(ip=ip, username=username):
            await accounts.audit(username=username, ip=ip, action="sign-in throttled")
            response = page(request, "login.html", None, status=429, next=next, csrf=token,
                            error="Too many failed sign-ins. Wait 15 minutes and try again.")
            response.headers["Retry-After"] = str(int(accounts.limits.window.total_seconds()))
            return response
        user = await accounts.authenticate(username, password)
        if user is None:
            await accounts.audit(username=username, ip=ip, action="sign-in failed")
            return page(request, "login.html", None, status=401, next=next, csrf=token,
                        error="Wrong username or password.")
        session_token = await accounts.open_session(user, ip=ip)
        await accounts.audit(username=user.username, user_id=user.id, ip=ip, action="sign-in")
        response = RedirectResponse(_local(next, prefix) or f"{prefix}/", status_code=303)
        auth.set_cookie(response, SESSION_COOKIE, session_token,
                        max_age=int(accounts.session_ttl.total_seconds()))
        auth.clear_cookie(response, SIGN_IN_CSRF_COOKIE)
        return response

    @site.post("/logout")
    async def logout(request: Request, me: User) -> Response:
        await accounts.close_session(request.cookies.get(SESSION_COOKIE, ""))
        await auth.audit(request, me, "sign-out")
        response = RedirectResponse(f"{prefix}/login", status_code=303)
        auth.clear_cookie(response, SESSION_COOKIE)
        return response

    # Dashboard

    @site.get("/", response_class=HTMLResponse)
    async def home(request: Request, me: User,
                   days: Annotated[int, Query(ge=1, le=180)] = 14) -> Response:
        stats = await dashboard.overview(engine, days=days)
        labels = [d.day.strftime("%d %b") for d in stats.days]
        figures = {
            "calls": charts.bar_chart("Calls per day", labels, [d.calls for d in stats.days]),
            "duration": charts.line_chart(
                "Average call duration per day", labels,
                {"average": [d.avg_duration_s for d in stats.days]}, unit="s"),
            "latency": charts.line_chart(
                "Voice-to-voice latency per day", labels,
                {"p50": [d.latency_p50_ms for d in stats.days],
                 "p90": [d.latency_p90_ms for d in stats.days]}, unit=" ms"),
            "outcomes": charts.hbar_chart("Outcomes", stats.outcomes),
            "emotions": charts.line_chart(
                "Calls where the caller sounded so, per day", labels,
                {e: [d.emotion_share[e] for d in stats.days] for e in stats.days[0].emotion_share},
                unit="%", bounds=(0.0, 100.0),
            ),
        }
        await auth.audit(request, me, "view", "dashboard")
        return page(request, "dashboard.html", me, stats=stats, figures=figures, days=days)

    # Calls

    @site.get("/calls", response_class=HTMLResponse)
    async def call_list(request: Request, me: User, filters: Filters,
                        page_no: Annotated[int, Query(alias="page", ge=1)] = 1) -> Response:
        result = await calls.list_calls(filters, limit=PAGE_SIZE,
                                        offset=(page_no - 1) * PAGE_SIZE)
        await auth.audit(request, me, "view", "calls list", filters.query_string() or None)
        return page(request, "calls.html", me, result=result, filters=filters,
                    query=filters.query_string(), page_no=page_no,
                    pages=max(1, math.ceil(result.total / PAGE_SIZE)))

    @site.get("/calls/{call_id}", response_class=HTMLResponse)
    async def call_page(request: Request, me: User, call_id: int) -> Response:
        call = await calls.get_call(call_id)
        if call is None:
            raise HTTPException(status_code=404, detail="No such call.")
        await auth.audit(request, me, "view", f"call {call_id}")
        heard = [t for t in call.turns if t.emotion is not None]
        emotion_chart = heard and charts.line_chart(
            "How the caller sounded, turn by turn", [f"{t.start_ms // 1000}s" for t in heard],
            {"arousal": [t.arousal for t in heard], "valence": [t.valence for t in heard]},
            bounds=(-1.0, 1.0),
        )
        return page(request, "call.html", me, call=call, emotion_chart=emotion_chart,
                    annotations=await calls.annotations(call_id),
                    has_recording=_recording(call.recording_path) is not None)

    def _recording(relative: str | None) -> Path | None:
        if not relative:
            return None
        path = (recordings_root / relative).resolve()
        if not path.is_relative_to(recordings_root) or not path.is_file():
            return None
        return path

    @site.get("/calls/{call_id}/recording")
    async def recording(request: Request, me: User, call_id: int) -> Response:
        call = await calls.get_call(call_id)
        path = _recording(call.recording_path) if call else None
        if path is None:
            raise HTTPException(status_code=404, detail="This call has no recording.")
        if request.headers.get("range", "bytes=0-").startswith("bytes=0-"):
            await auth.audit(request, me, "listen", f"call {call_id}")  # not every seek
        return FileResponse(path, media_type="audio/wav", filename=f"call-{call_id}.wav",
                            content_disposition_type="inline")

    @site.post("/calls/{call_id}/annotations")
    async def annotate(request: Request, me: User, call_id: int,
                       turn_id: Annotated[int, Form()], tag: Annotated[str, Form()],
                       note: Annotated[str, Form(max_length=2000)] = "") -> Response:
        if tag not in TAGS:
            raise HTTPException(status_code=422, detail=f"tag must be one of {', '.join(TAGS)}")
        annotation = await calls.annotate(call_id=call_id, turn_id=turn_id, tag=tag,
                                          note=note.strip(), author_id=me.user_id)
        if annotation is None:
            raise HTTPException(status_code=404, detail="No such turn in this call.")
        await auth.audit(request, me, "change", f"call {call_id}",
                         {"annotated_turn": turn_id, "tag": tag, "note": note.strip()})
        return RedirectResponse(f"{prefix}/calls/{call_id}#turn-{turn_id}", status_code=303)

    @site.post("/calls/{call_id}/annotations/{annotation_id}/delete")
    async def unannotate(request: Request, me: User, call_id: int,
                         annotation_id: int) -> Response:
        if not await calls.delete_annotation(call_id=call_id, annotation_id=annotation_id):
            raise HTTPException(status_code=404, detail="No such annotation.")
        await auth.audit(request, me, "change", f"call {call_id}",
                         {"removed_annotation": annotation_id})
        return RedirectResponse(f"{prefix}/calls/{call_id}", status_code=303)

    @site.get("/export.json")
    async def export_json(request: Request, me: User, filters: Filters) -> Response:
        rows = await calls.export(filters)
        await auth.audit(request, me, "export", "calls (json)",
                         {"filters": filters.query_string(), "calls": len(rows)})
        return Response(json.dumps({"exported_at": _now(), "calls": rows}, indent=1),
                        media_type="application/json",
                        headers=_attachment(f"calls-{_stamp()}.json"))

    @site.get("/export.csv")
    async def export_csv(request: Request, me: User, filters: Filters) -> Response:
        rows = await calls.export(filters)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for call in rows:
            head = [call["id"], call["call_sid"], call["started_at"], call["from_number"],
                    call["flow_name"], call["status"], call["end_reason"], call["duration_s"]]
            noted = [(t, a) for t in call["turns"] for a in t["annotations"]]
            for turn, note in noted or [(None, None)]:
                writer.writerow(head + (
                    [turn["seq"], turn["speaker"], turn["start_ms"], turn["text"], note["tag"],
                     note["note"], note["author"], note["created_at"]]
                    if turn else [""] * 8))
        await auth.audit(request, me, "export", "calls (csv)",
                         {"filters": filters.query_string(), "calls": len(rows)})
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers=_attachment(f"calls-{_stamp()}.csv"))

    # Callers and their memories

    @site.get("/callers/{caller_id}", response_class=HTMLResponse)
    async def caller_page(request: Request, me: User, caller_id: int) -> Response:
        found = await callers.get(caller_id)
        if found is None:
            raise HTTPException(status_code=404, detail="No such caller.")
        caller, their_calls, memories = found
        await auth.audit(request, me, "view", f"caller {caller_id}")
        return page(request, "caller.html", me, caller=caller, calls=their_calls,
                    memories=memories, kinds=MEMORY_KINDS)

    @site.post("/callers/{caller_id}/memories/{memory_id}")
    async def correct_memory(request: Request, me: User, caller_id: int, memory_id: int,
                             kind: Annotated[str, Form()],
                             text: Annotated[str, Form(max_length=4000)]) -> Response:
        try:
            changed = await callers.correct_memory(caller_id=caller_id, memory_id=memory_id,
                                                   kind=kind, text=text)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        if changed is None:
            raise HTTPException(status_code=404, detail="No such memory.")
        await auth.audit(request, me, "change", f"memory {memory_id}",
                         {"caller": caller_id, "from": changed[0], "to": changed[1]})
        return RedirectResponse(f"{prefix}/callers/{caller_id}#memory-{memory_id}",
                                status_code=303)

    @site.post("/callers/{caller_id}/memories/{memory_id}/delete")
    async def delete_memory(request: Request, me: User, caller_id: int,
                            memory_id: int) -> Response:
        if not await callers.delete_memory(caller_id=caller_id, memory_id=memory_id):
            raise HTTPException(status_code=404, detail="No such memory.")
        await auth.audit(request, me, "erase", f"memory {memory_id}", {"caller": caller_id})
        return RedirectResponse(f"{prefix}/callers/{caller_id}#memories", status_code=303)

    # Live calls

    @site.get("/live", response_class=HTMLResponse)
    async def live_page(request: Request, me: User) -> Response:
        await auth.audit(request, me, "view", "live calls")
        return page(request, "live.html", me, calls=await live.snapshot())

    @site.get("/live/events", response_class=EventSourceResponse)
    async def live_events(request: Request, me: User):  # noqa: ANN201
        async for event, data in live.follow():
            if await request.is_disconnected():
                return
            yield ServerSentEvent(event=event, data=data)

    # Business webhooks: dead and recent deliveries, replay

    site.include_router(webhooks.create_router(engine=engine, auth=auth, templates=templates,
                                               prefix=prefix, on_replay=on_webhook_replay))

    # Administration

    @site.get("/users", response_class=HTMLResponse)
    async def users_page(request: Request, me: Admin, error: str = "") -> Response:
        await auth.audit(request, me, "view", "users")
        return page(request, "users.html", me, users=await accounts.list_users(), roles=ROLES,
                    error=error)

    @site.post("/users")
    async def add_user(request: Request, me: Admin, username: Annotated[str, Form()],
                       password: Annotated[str, Form()], role: Annotated[str, Form()]) -> Response:
        try:
            await accounts.add_user(username.strip(), password, role=role)
        except ValueError as exc:
            return page(request, "users.html", me, status=422, users=await accounts.list_users(),
                        roles=ROLES, error=str(exc))
        await auth.audit(request, me, "change", f"user {username.strip()}",
                         {"added": True, "role": role})
        return RedirectResponse(f"{prefix}/users", status_code=303)

    @site.post("/users/{user_id}/active")
    async def set_active(request: Request, me: Admin, user_id: int,
                         active: Annotated[bool, Form()]) -> Response:
        if user_id == me.user_id and not active:
            raise HTTPException(status_code=422, detail="You cannot disable yourself.")
        user = await accounts.set_active(user_id, active)
        if user is None:
            raise HTTPException(status_code=404, detail="No such user.")
        await auth.audit(request, me, "change", f"user {user.username}", {"active": active})
        return RedirectResponse(f"{prefix}/users", status_code=303)

    @site.get("/audit", response_class=HTMLResponse)
    async def audit_page(request: Request, me: Admin, q: str = "",
                         page_no: Annotated[int, Query(alias="page", ge=1)] = 1) -> Response:
        entries = await accounts.audit_log(limit=100, offset=(page_no - 1) * 100, query=q)
        return page(request, "audit.html", me, entries=entries, q=q, page_no=page_no)

    @site.exception_handler(HTTPException)
    async def error_page(request: Request, exc: HTTPException) -> Response:
        if "text/html" not in request.headers.get("accept", ""):
            return Response(str(exc.detail), status_code=exc.status_code,
                            media_type="text/plain", headers=exc.headers)
        identity = getattr(request.state, "identity", None)
        return page(request, "error.html", identity, status=exc.status_code,
                    message=exc.detail)

    return site


CSV_COLUMNS = [
    "call_id", "call_sid", "started_at", "from_number", "flow", "status", "end_reason",
    "duration_s", "turn_seq", "speaker", "turn_start_ms", "turn_text", "tag", "note",
    "annotated_by", "annotated_at",
]


def _local(target: str, prefix: str) -> str:
    """Only redirect within the site after sign-in (no open redirects)."""
    return target if target.startswith(prefix + "/") and not target.startswith("//") else ""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}

