"""The admin site's business-webhook page: dead and recent deliveries, and their replay."""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.admin.accounts import Identity
from callwright.admin.auth import SiteAuth
from callwright.outbox import STATUSES, DeliveryStore, redact_url

RECENT = 50
DEAD_SHOWN = 200


def create_router(*, engine: AsyncEngine, auth: SiteAuth, templates: Jinja2Templates,
                  prefix: str, on_replay: Callable[[], None] | None = None) -> APIRouter:
    """`/webhooks` on the admin site: every signed-in user (supervisors and admins) sees
    the deliveries and may replay them; each view and replay is audited. The site's CSRF
    check covers the replay forms.

    Args:
        engine: The database holding the outbox.
        auth: The site's sessions, roles and audit log.
        templates: The site's templates (`webhooks.html`).
        prefix: Where the site is mounted, for redirects.
        on_replay: Wakes this process's sender after a replay (else it polls).
    """
    deliveries = DeliveryStore(engine)
    router = APIRouter()
    User = Annotated[Identity, Depends(auth.user)]

    @router.get("/webhooks", response_class=HTMLResponse)
    async def webhooks_page(request: Request, me: User,
                            status: Annotated[str, Query(max_length=16)] = "") -> Response:
        if status and status not in STATUSES:
            raise HTTPException(status_code=422,
                                detail=f"status must be one of {', '.join(STATUSES)}")
        dead = await deliveries.listing(status="dead", limit=DEAD_SHOWN)
        recent = await deliveries.listing(status=status or None, limit=RECENT)
        await auth.audit(request, me, "view", "webhook deliveries")
        return templates.TemplateResponse(request, "webhooks.html", {
            "me": me, "dead": dead, "recent": recent, "status": status, "statuses": STATUSES,
            "counts": await deliveries.counts(), "shown_url": redact_url,
        })

    @router.post("/webhooks/{delivery_id}/replay")
    async def replay_one(request: Request, me: User, delivery_id: int) -> Response:
        replayed = await deliveries.replay([delivery_id])
        if not replayed:
            found = await deliveries.get(delivery_id)
            raise HTTPException(status_code=404 if found is None else 409,
                                detail="No such delivery." if found is None
                                else "This delivery is pending already.")
        await _audit(request, me, replayed)
        return _back(prefix)

    @router.post("/webhooks/replay-dead")
    async def replay_dead(request: Request, me: User) -> Response:
        replayed = await deliveries.replay()
        if replayed:
            await _audit(request, me, replayed)
        return _back(prefix)

    async def _audit(request: Request, me: Identity, replayed: list) -> None:
        if on_replay is not None:
            on_replay()
        target = (f"webhook delivery {replayed[0].id}" if len(replayed) == 1
                  else f"{len(replayed)} webhook deliveries")
        await auth.audit(request, me, "change", target, {"replayed": [
            {"id": d.id, "call": d.call_id, "url": redact_url(d.url), "was": d.status,
             "attempts": d.attempts, "last_error": d.last_error} for d in replayed[:50]]})

    return router


def _back(prefix: str) -> Response:
    return RedirectResponse(f"{prefix}/webhooks", status_code=303)
