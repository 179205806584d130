"""Live call events for a caller's screen: turns, the agent's state, voice-to-voice latency.

An observer, not a processor: it watches the frames the pipeline already carries
(turn frames from the slot, user-turn frames, the output transport's bot-speaking
frames) and hands small JSON-ready dicts to `send`, e.g. a WebRTC data channel.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipecat.frames.frames import (
    BotSpeakingFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from callwright.agent.frames import AgentTurnFrame, CallerTurnFrame

EVENT_TYPE = "callwright"  # pipecat's own data-channel messages use other types


class CallEventsObserver(BaseObserver):
    """Reports a call's progress; `last_activity` (monotonic) is when anyone last spoke."""

    def __init__(self, *, send: Callable[[dict], None], **kwargs):
        super().__init__(observe_every_push=False, **kwargs)
        self._send = send
        self._speech_end: float | None = None  # wall clock, as VAD frames carry it
        self._state = ""
        self._caller_speaking = False
        self.last_activity = time.monotonic()

    def _emit(self, event: str, **fields) -> None:
        self._send({"type": EVENT_TYPE, "event": event, **fields})

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._emit("state", state=state)

    def _set_caller_speaking(self, active: bool) -> None:
        # The VAD's frames travel both ways, so each change is seen twice.
        if active != self._caller_speaking:
            self._caller_speaking = active
            self._emit("caller-speech", active=active)

    async def on_push_frame(self, data: FramePushed) -> None:
        """Turns one pushed frame into events, and notes speech in `last_activity`.

        Emits `caller-speech` when the VAD's view changes, `state` (listening, thinking,
        speaking), `latency` at the agent's first audio after the caller stopped speaking,
        and `turn` for each finished caller or agent turn.
        """
        frame = data.frame
        if isinstance(
            frame,
            (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame, BotSpeakingFrame),
        ):
            self.last_activity = time.monotonic()
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speech_end = None
            self._set_caller_speaking(True)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speech_end = frame.timestamp - frame.stop_secs
            self._set_caller_speaking(False)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._set_state("listening")
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._set_state("thinking")
        elif isinstance(frame, BotStartedSpeakingFrame):
            self.last_activity = time.monotonic()
            if self._speech_end is not None:
                # From the end of the caller's speech to the agent's first audio
                # handed to the outgoing track.
                self._emit("latency", ms=round((time.time() - self._speech_end) * 1000))
                self._speech_end = None
            self._set_state("speaking")
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.last_activity = time.monotonic()
            self._set_state("listening")
        elif isinstance(frame, CallerTurnFrame):
            self._emit("turn", speaker="caller", text=frame.text, start_ms=frame.start_ms,
                       end_ms=frame.end_ms)
        elif isinstance(frame, AgentTurnFrame):
            self._emit("turn", speaker="agent", text=frame.text, planned_text=frame.planned_text,
                       interrupted=frame.interrupted, start_ms=frame.start_ms,
                       end_ms=frame.end_ms, latency_ms=frame.latency_ms,
                       timings=frame.timings)
