"""The call page at `/`: talk to the agent from a browser. Its assets are served from here."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).with_name("static")
ASSETS = {"call.js": "text/javascript", "call.css": "text/css"}


def create_router() -> APIRouter:
    """Router for the browser call page: `GET /`, and its assets at `/call/static/{name}`."""
    router = APIRouter(tags=["call page"])

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "call.html", media_type="text/html")

    @router.get("/call/static/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    return router
