"""The caller's audio as the slot keeps it: what came just before speech, the turn being
captured, what was said over a paused agent, and a turn not yet answered."""

from __future__ import annotations

from collections import deque

PRE_ROLL_S = 0.8  # audio kept from before the VAD fired, so first syllables are not lost
MAX_CONTINUATION_S = 30.0  # longer unanswered stretches are not joined into one turn


class CallerAudio:
    """Buffers of the caller's 16-bit mono audio, each open (a `bytearray`) or not (None).

    Attributes:
        capture: the turn being spoken, from its pre-roll on.
        overlap: what the caller said since the agent paused for them.
        continuation: the caller's last turn and everything since, until the agent answers
            it; if the caller goes on before that, it was a pause, not the end of the turn.
        rate: the sample rate of the audio seen last.
    """

    def __init__(self) -> None:
        self.rate = 16_000
        self.capture: bytearray | None = None
        self.overlap: bytearray | None = None
        self.continuation: bytearray | None = None
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_bytes = 0

    def add(self, audio: bytes, sample_rate: int) -> None:
        """Append a chunk of input to the pre-roll and to every open buffer."""
        self.rate = sample_rate
        self._pre_roll.append(audio)
        self._pre_roll_bytes += len(audio)
        limit = int(PRE_ROLL_S * sample_rate) * 2
        while self._pre_roll_bytes - len(self._pre_roll[0]) >= limit:
            self._pre_roll_bytes -= len(self._pre_roll.popleft())
        for buffer in (self.capture, self.overlap, self.continuation):
            if buffer is not None:
                buffer.extend(audio)
        if self.continuation is not None and self.seconds(self.continuation) > MAX_CONTINUATION_S:
            self.continuation = None

    def recent(self, seconds: float) -> bytes:
        """The last `seconds` of input (at most the pre-roll's length)."""
        return b"".join(self._pre_roll)[-int(seconds * self.rate) * 2 :]

    def open_turn(self) -> float:
        """Start capturing a turn; returns how many seconds back it starts. The speech that
        paused the agent opens it if there is some; else the pre-roll does."""
        if self.overlap is not None:
            self.capture, self.overlap = self.overlap, None
            return self.seconds(self.capture)
        self.capture = bytearray(b"".join(self._pre_roll))
        return PRE_ROLL_S

    def continue_turn(self) -> None:
        """The caller went on after a pause: what they said before and since is one turn."""
        self.capture, self.continuation, self.overlap = self.continuation, None, None

    def close_turn(self, prepared: bytes | None) -> bytes:
        """The turn is over: its audio (`prepared` if the work on it started at the VAD's
        silence, which is all that matters); it stays open as a continuation."""
        audio = prepared or bytes(self.capture)
        self.continuation, self.capture = self.capture, None
        return audio

    def seconds(self, audio: bytes | bytearray) -> float:
        """The length of `audio` at the current rate."""
        return len(audio) / 2 / self.rate
