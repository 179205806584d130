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

from callwright.testing.local_server import LocalServer


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


def _tool_sequence_error(messages: list[dict]) -> str | None:
    """OpenAI's rule: an assistant message's tool calls are each answered by a `tool`
    message right after it, and a `tool` message answers a call just made."""
    open_calls: set[str] = set()
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return f"tool message for {call_id!r}, which no preceding tool call made"
            open_calls.discard(call_id)
            continue
        if open_calls:
            return f"tool calls {sorted(open_calls)} got no tool message"
        if role == "assistant" and message.get("tool_calls"):
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                if not call.get("id") or call.get("type") != "function" or not isinstance(
                        function.get("name"), str) or not isinstance(function.get("arguments"),
                                                                     str):
                    return f"malformed tool call {call!r}"
            open_calls = {call["id"] for call in message["tool_calls"]}
    return None


class OpenAIStandIn(LocalServer):
    """Replies, queued in `replies`, are one of: text (str); a tool call
    (`{"name", "arguments"}`); text then tool calls (`{"text", "tool_calls": [...]}`);
    an HTTP error (`{"status", "message"}`); or raw server-sent event data lines sent as
    they are (`{"raw": [...]}`), for garbage."""

    def __init__(self, *, model: str = "fun-audio-chat", token_delay_s: float = 0.0):
        self.model = model
        self.token_delay_s = token_delay_s
        self.first_token_delay_s = 0.0  # before the first chunk: a slow server
        self.replies: deque[str | dict] = deque()
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []  # each completion's Authorization header
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
                if content is None and message.get("role") == "assistant" and message.get(
                        "tool_calls"):
                    continue  # OpenAI allows a null content beside tool calls
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
            if why := _tool_sequence_error(messages):
                return _error(f"Invalid messages: {why}")
            for tool in body.get("tools") or ():
                if tool.get("type") != "function" or not tool.get("function", {}).get("name"):
                    return _error(f"bad tool {tool!r}")
            if body.get("stream") is not True:
                return _error("this stand-in only streams")
            options = body.get("stream_options")
            if options is not None and not isinstance(options.get("include_usage"), bool):
                return _error("stream_options.include_usage must be a boolean")
            self.requests.append(body)
            self.authorizations.append(request.headers.get("authorization"))
            reply = self.replies.popleft() if self.replies else (
                f"I heard {heard:.1f} seconds of audio. How can I help you?")
            if isinstance(reply, dict) and "status" in reply:
                return _error(reply.get("message", "server error"), reply["status"])
            usage = bool(options and options.get("include_usage"))
            prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
            return StreamingResponse(self._stream(reply, usage=usage, prompt_tokens=prompt),
                                     media_type="text/event-stream")

        return app

    async def _stream(self, reply: str | dict, *, usage: bool = False, prompt_tokens: int = 0):
        base = {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.model}
        sent = 0

        def event(delta: dict, finish: str | None = None) -> str:
            nonlocal sent
            sent += 1 if delta.get("content") or delta.get("tool_calls") else 0
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]}
            if usage:
                chunk["usage"] = None  # as OpenAI: only the last chunk carries usage
            return f"data: {json.dumps(chunk)}\n\n"

        try:
            await asyncio.sleep(self.first_token_delay_s)
            if isinstance(reply, dict) and "raw" in reply:
                for i, line in enumerate(reply["raw"]):
                    if i:
                        await asyncio.sleep(self.token_delay_s)
                    yield f"data: {line}\n\n"
                self.completed += 1
                return
            yield event({"role": "assistant", "content": ""})
            if isinstance(reply, dict) and "name" in reply:
                reply = {"tool_calls": [reply]}
            text = reply if isinstance(reply, str) else reply.get("text", "")
            for i, word in enumerate(text.split(" ") if text else ()):
                await asyncio.sleep(self.token_delay_s)
                yield event({"content": word if i == 0 else " " + word})
            calls = [] if isinstance(reply, str) else reply.get("tool_calls", [])
            for index, call in enumerate(calls):
                args = json.dumps(call.get("arguments", {}))
                opening = {"index": index, "id": f"call_standin{len(self.requests)}_{index}",
                           "type": "function", "function": {"name": call["name"],
                                                            "arguments": ""}}
                yield event({"tool_calls": [opening]})
                for i in range(0, len(args), 8):
                    await asyncio.sleep(self.token_delay_s)
                    yield event({"tool_calls": [{"index": index,
                                                 "function": {"arguments": args[i:i + 8]}}]})
            yield event({}, "tool_calls" if calls else "stop")
            if usage:
                counts = {"prompt_tokens": prompt_tokens, "completion_tokens": sent,
                          "total_tokens": prompt_tokens + sent}
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': counts})}\n\n"
            yield "data: [DONE]\n\n"
            self.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted += 1
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def main() -> None:
    """Serve in a process of its own, so a test can kill it mid-reply."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="fun-audio-chat")
    parser.add_argument("--script", default="{}",
                        help='JSON: {"token_delay_s", "first_token_delay_s", "replies"}')
    args = parser.parse_args()
    script = json.loads(args.script)
    standin = OpenAIStandIn(model=args.model, token_delay_s=script.get("token_delay_s", 0.0))
    standin.first_token_delay_s = script.get("first_token_delay_s", 0.0)
    standin.replies.extend(script.get("replies", []))
    uvicorn.run(standin.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
