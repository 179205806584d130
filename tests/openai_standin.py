"""A local stand-in for an OpenAI-compatible chat server (vLLM's role), strict about the format.

Follows OpenAI's documented Chat Completions streaming: `data: {chat.completion.chunk}`
server-sent events, `delta.content` text, `delta.tool_calls` fragments keyed by index,
a last chunk with `finish_reason`, then `data: [DONE]`. Audio arrives as `input_audio`
content parts (base64 WAV). Replies are scripted; by default it says how much audio it
heard, so tests can tell the audio really arrived.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import wave
from collections import deque

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from telephony.local_server import LocalServer


def _error(message: str, status: int = 400) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": None}}
    return JSONResponse(body, status_code=status)


def _audio_seconds(part: dict) -> float:
    audio = part.get("input_audio")
    if not isinstance(audio, dict) or audio.get("format") not in ("wav", "mp3"):
        raise ValueError("input_audio needs {data, format: wav|mp3}")
    raw = base64.b64decode(audio["data"], validate=True)
    with wave.open(io.BytesIO(raw)) as w:
        return w.getnframes() / w.getframerate()


class OpenAIStandIn(LocalServer):
    def __init__(self, *, model: str = "fun-audio-chat", token_delay_s: float = 0.0):
        self.model = model
        self.token_delay_s = token_delay_s
        self.replies: deque[str | dict] = deque()  # str: text; dict: {"name", "arguments"}
        self.requests: list[dict] = []
        self.completed = 0
        self.aborted = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": self.model, "object": "model",
                                                "created": 0, "owned_by": "standin"}]}

        @app.post("/v1/chat/completions")
        async def completions(request: Request):
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return _error("body is not JSON")
            if body.get("model") != self.model:
                return _error(f"The model `{body.get('model')}` does not exist.", 404)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return _error("messages must be a non-empty list")
            heard = 0.0
            for message in messages:
                if message.get("role") not in ("system", "user", "assistant", "tool"):
                    return _error(f"bad role {message.get('role')!r}")
                content = message.get("content")
                if isinstance(content, list):
                    for part in content:
                        if part.get("type") == "input_audio":
                            try:
                                heard = _audio_seconds(part)
                            except (ValueError, wave.Error, KeyError) as exc:
                                return _error(f"bad input_audio: {exc}")
                        elif part.get("type") != "text":
                            return _error(f"unsupported content part {part.get('type')!r}")
                elif not isinstance(content, str):
                    return _error("content must be a string or a list of parts")
            if body.get("stream") is not True:
                return _error("this stand-in only streams")
            self.requests.append(body)
            reply = self.replies.popleft() if self.replies else (
                f"I heard {heard:.1f} seconds of audio. How can I help you?")
            return StreamingResponse(self._stream(reply), media_type="text/event-stream")

        return app

    async def _stream(self, reply: str | dict):
        base = {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.model}

        def event(delta: dict, finish: str | None = None) -> str:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        try:
            yield event({"role": "assistant", "content": ""})
            if isinstance(reply, dict):
                args = json.dumps(reply.get("arguments", {}))
                opening = {"index": 0, "id": "call_standin1", "type": "function",
                           "function": {"name": reply["name"], "arguments": ""}}
                yield event({"tool_calls": [opening]})
                for i in range(0, len(args), 8):
                    yield event({"tool_calls": [{"index": 0,
                                                 "function": {"arguments": args[i:i + 8]}}]})
                yield event({}, "tool_calls")
            else:
                for i, word in enumerate(reply.split(" ")):
                    await asyncio.sleep(self.token_delay_s)
                    yield event({"content": word if i == 0 else " " + word})
                yield event({}, "stop")
            yield "data: [DONE]\n\n"
            self.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted += 1
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
