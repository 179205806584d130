"""Per-turn limits a speech model needs: input caps, bounded history, tool-call parsing."""

from __future__ import annotations

import json
import re
import uuid
from collections import deque
from dataclasses import dataclass

from callwright.agent.backend import INPUT_SAMPLE_RATE, ToolCall, TurnRequest

MAX_INPUT_S = 30.0  # Whisper-style encoders see 30 s; longer clips are silently zero-filled
OPENING_PROMPT = "(The caller has just connected. Greet them briefly.)"
SILENCE_PROMPT = "(The caller has said nothing for a while.)"


def turn_prompt(request: TurnRequest) -> str | None:
    """What to tell a model of a turn without the caller's speech: keys pressed, a silence,
    an answering machine, or the call's start. None for a turn of speech.

    Without it a model hears every such turn as the call's start and greets again.
    """
    if request.dtmf:
        return f"(The caller pressed the keys {' '.join(request.dtmf)}.)"
    if request.silence:
        return SILENCE_PROMPT
    if request.answered_by:
        return (f"(Answering-machine detection says: {request.answered_by}. If it is a "
                "machine, leave a short message.)")
    return OPENING_PROMPT if request.audio is None else None


def cap_input(pcm16k: bytes, *, max_s: float = MAX_INPUT_S) -> bytes:
    """Keep the last `max_s` seconds: the end of a long turn is what needs answering."""
    limit = int(max_s * INPUT_SAMPLE_RATE) * 2
    return pcm16k[-limit:] if len(pcm16k) > limit else pcm16k


@dataclass(kw_only=True)
class Exchange:
    """One past exchange: the caller's audio, or for a turn without it what the model was
    told instead (`turn_prompt`), and the reply."""

    caller_audio: bytes | None  # 16 kHz int16, capped
    agent_text: str
    caller_text: str = ""


class BoundedHistory:
    """The last `max_turns` exchanges, re-sent as audio and text on each turn."""

    def __init__(self, *, max_turns: int):
        self._turns: deque[Exchange] = deque(maxlen=max_turns)

    def add(self, *, caller_audio: bytes | None, agent_text: str, caller_text: str = "") -> None:
        """Append an exchange; the oldest beyond `max_turns` is dropped."""
        self._turns.append(
            Exchange(caller_audio=caller_audio, agent_text=agent_text, caller_text=caller_text)
        )

    def truncate_last(self, heard_text: str) -> None:
        """Barge-in: the model should remember saying only what was heard."""
        if self._turns:
            self._turns[-1].agent_text = heard_text

    def __iter__(self):
        return iter(list(self._turns))

    def __len__(self) -> int:
        return len(self._turns)


_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def extract_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Qwen-style `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks, removed."""
    calls = []
    for match in _TOOL_CALL.finditer(text):
        try:
            body = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            arguments = body.get("arguments") or {}
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    arguments = {"raw": arguments}
            calls.append(ToolCall(call_id=f"call_{uuid.uuid4().hex[:12]}", name=body["name"],
                                  arguments=arguments))
    return _TOOL_CALL.sub("", text).strip(), calls


def tools_prompt(tools: tuple[dict, ...]) -> str:
    """Tool schemas for the system prompt, in the Qwen/Fun-Audio-Chat convention."""
    if not tools:
        return ""
    listed = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n"
        f"<tools>\n{listed}\n</tools>\n\nFor each function call, return a json object with "
        'function name and arguments within <tool_call></tool_call> tags:\n<tool_call>\n'
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )
