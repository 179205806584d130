"""Serves a stand-in's FastAPI app on a free loopback port, inside the running event loop."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI


class LocalServer:
    """Mixed into stand-ins: `serve()` starts `self.app()`, `stop()` ends it."""

    port: int = 0

    def app(self) -> FastAPI:
        """The FastAPI app to serve; a stand-in must override it."""
        raise NotImplementedError

    async def serve(self) -> None:
        """Serve `app()` on a free loopback port (`port`) in this loop; returns once it is up."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app(), log_level="warning"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Tell the server to exit and wait until it has; only after `serve()`."""
        self._server.should_exit = True
        await self._task
