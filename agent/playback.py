"""What the caller has heard of an agent turn: planned text, pushed audio, marks.

An agent turn is synthesised in pieces, each saying a span of the planned text. The
pieces are pushed as segments (a resumed piece is pushed again from a word boundary).
The played-speech clock, measured from `base_s`, walks the segments to the piece and
byte being played; words are placed in a piece in proportion to its characters, so a
cut lands at the end of the last whole word heard.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipecat.audio.dtmf.utils import load_dtmf_audio
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    KeypadEntry,
    OutputDTMFFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
)

from callwright.agent.backend import AudioChunk, ModelUsage
from callwright.agent.echo import PlayedAudio
from callwright.agent.frames import (
    AgentTurnFrame,
    CallerTurnFrame,
    PlaybackMarkFrame,
    TurnDraftFrame,
)

RESUME_BACKUP_S = 0.05  # resume a little before the word boundary, not in its onset
MARK_GRACE_S = 3.0  # how long past the audio's own length to wait for playback marks
DRAFT_EVERY_S = 0.25  # how often a reply being heard is drafted to the database


@dataclass(kw_only=True)
class SpeechPiece:
    """One synthesised chunk of agent speech and the span of planned text it says."""

    text_start: int
    text_end: int
    audio: bytes
    sample_rate: int

    def chars_at(self, offset: int) -> int:
        """Planned-text position reached `offset` bytes into the audio (by proportion)."""
        share = min(1.0, offset / max(len(self.audio), 1))
        return self.text_start + int((self.text_end - self.text_start) * share)

    def offset_of(self, chars: int) -> int:
        """Byte offset in the audio where planned-text position `chars` is said (by proportion),
        moved back `RESUME_BACKUP_S` and to a sample boundary; never negative."""
        share = (chars - self.text_start) / max(self.text_end - self.text_start, 1)
        backup = int(RESUME_BACKUP_S * self.sample_rate) * 2
        return max(0, int(len(self.audio) * share) // 2 * 2 - backup)


@dataclass(kw_only=True)
class PushedSegment:
    """A stretch pushed to the line: `length` bytes of piece `piece` from `offset`."""

    piece: int
    offset: int  # bytes into the piece's audio where this pushed segment starts
    length: int


@dataclass(kw_only=True)
class AgentTurn:
    """One agent reply: what was planned, what was pushed, and how much was heard."""

    started: float  # monotonic time the turn was requested
    speech_end: float | None  # when the caller's speech ended, for latency
    planned: list[str] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)  # mark -> chars of text covered
    heard_chars: int = 0
    first_audio: float | None = None
    audio_s: float = 0.0
    tones_s: float = 0.0  # DTMF tones queued after the words
    generated: bool = False
    end_call: bool = False
    listen_timeout_s: float | None = None
    last_mark: str | None = None
    timings: dict[str, int] = field(default_factory=dict)
    # A chat model's cost: first_token_ms (its first request's), tokens_in, tokens_out
    # (summed over the turn's requests).
    usage: dict[str, int] = field(default_factory=dict)
    pieces: list[SpeechPiece] = field(default_factory=list)
    segments: list[PushedSegment] = field(default_factory=list)  # pushed since `base_s`
    base_s: float = 0.0  # the played-speech clock when `segments` began
    paused: bool = False
    caller: CallerTurnFrame | None = None  # the caller's words, stored once answered

    @property
    def planned_text(self) -> str:
        """Everything the turn planned to say: its text deltas joined by spaces."""
        return " ".join(self.planned)

    @property
    def pushed_s(self) -> float:
        """Seconds of audio pushed since `base_s`."""
        return sum(s.length / 2 / self.pieces[s.piece].sample_rate for s in self.segments)

    def position(self, played_s: float) -> tuple[int, int] | None:
        """(piece, byte offset) the caller has heard up to, from the played-speech clock."""
        heard = played_s - self.base_s
        for seg in self.segments:
            rate = self.pieces[seg.piece].sample_rate
            seconds = seg.length / 2 / rate
            if heard < seconds:
                return seg.piece, seg.offset + int(heard * rate) * 2
            heard -= seconds
        if not self.segments:
            return None
        last = self.segments[-1]
        return last.piece, last.offset + last.length

    def heard_words(self, chars: int) -> int:
        """Cut a character position back to the end of the last whole word."""
        text = self.planned_text
        if chars >= len(text) or chars <= 0 or text[chars] == " ":
            return max(0, min(chars, len(text)))
        return max(text.rfind(" ", 0, chars), 0)

    def add_piece(self, audio: bytes, sample_rate: int) -> int:
        """Keep audio that says the newest planned text; returns its piece's index."""
        text_end = len(self.planned_text)
        text_start = text_end - len(self.planned[-1]) if self.planned else 0
        self.pieces.append(SpeechPiece(text_start=text_start, text_end=text_end, audio=audio,
                                       sample_rate=sample_rate))
        self.audio_s += len(audio) / 2 / sample_rate
        return len(self.pieces) - 1

    def to_frame(
        self, *, heard: str, interrupted: bool, start_ms: int, end_ms: int
    ) -> AgentTurnFrame:
        """The turn as stored: `heard` of its planned text, over `start_ms`..`end_ms`."""
        latency = None
        if self.speech_end is not None and self.first_audio is not None:
            latency = int((self.first_audio - self.speech_end) * 1000)
        return AgentTurnFrame(
            text=heard,
            planned_text=self.planned_text,
            start_ms=start_ms,
            end_ms=end_ms,
            interrupted=interrupted,
            latency_ms=latency,
            timings=self.timings,
            llm_first_token_ms=self.usage.get("first_token_ms"),
            llm_tokens_in=self.usage.get("tokens_in"),
            llm_tokens_out=self.usage.get("tokens_out"),
        )

    def add_usage(self, usage: ModelUsage) -> None:
        """The turn's first time to first token; tokens summed over its requests (tool
        calls take several)."""
        if usage.first_token_ms is not None and "first_token_ms" not in self.usage:
            self.usage["first_token_ms"] = usage.first_token_ms
            self.timings["llm_first_token_ms"] = usage.first_token_ms
        for key in ("tokens_in", "tokens_out"):
            value = getattr(usage, key)
            if value is not None:
                self.usage[key] = self.usage.get(key, 0) + value

    def heard_so_far(self, played_s: float | None) -> int:
        """Characters of the plan the caller has heard: marks, refined by the played-speech
        clock (`played_s`; None where there is none)."""
        heard = self.heard_chars
        if played_s is not None and not self.paused:
            position = self.position(played_s)
            if position is not None:
                piece, offset = position
                heard = max(heard, self.heard_words(self.pieces[piece].chars_at(offset)))
        return heard


class AgentPlayout:
    """Pushes an agent turn's audio and playback marks, pauses and resumes it, and says how
    much of it the caller has heard.

    While a turn plays it also pushes a `TurnDraftFrame` every `DRAFT_EVERY_S` that what
    was heard changed, so a server killed mid-reply still leaves the exchange on record.

    Args:
        push: sends a frame downstream, towards the output transport.
        played: the far end's played-speech clock; None where the transport has none (marks
            alone then say what was heard).
        ms: the call's clock: a monotonic time as ms from the start of the call; None
            drafts nothing.
    """

    def __init__(self, *, push: Callable[[Frame], Awaitable[None]], played: PlayedAudio | None,
                 ms: Callable[[float], int] | None = None):
        self._push = push
        self._played = played
        self._ms = ms
        self._mark_ids = itertools.count(1)
        self._ack_timeout: asyncio.TimerHandle | None = None
        self._drafting: asyncio.Task | None = None

    @property
    def played_s(self) -> float:
        """The played-speech clock (0 without one)."""
        return self._played.speech_s if self._played else 0.0

    def heard_so_far(self, turn: AgentTurn) -> int:
        """Characters of `turn`'s plan the caller has heard."""
        return turn.heard_so_far(self._played.speech_s if self._played else None)

    def remaining_s(self, turn: AgentTurn) -> float:
        """Seconds until everything pushed for `turn` has played."""
        if not self._played:  # no played-audio clock: count from the first audio
            return turn.first_audio + turn.audio_s + turn.tones_s - time.monotonic()
        return turn.pushed_s + turn.tones_s - (self._played.speech_s - turn.base_s)

    def arm_ack_timeout(self, turn: AgentTurn, on_timeout: Callable[[], object]) -> None:
        """Marks normally close the turn; don't wait forever on a peer that drops them:
        call `on_timeout` a grace period after `turn`'s audio should have played."""
        self.cancel_ack_timeout()
        remaining = self.remaining_s(turn) + MARK_GRACE_S
        self._ack_timeout = asyncio.get_running_loop().call_later(max(remaining, 0.1), on_timeout)

    def cancel_ack_timeout(self) -> None:
        """Marks arrived (or the turn ended): stop waiting for them."""
        if self._ack_timeout:
            self._ack_timeout.cancel()
            self._ack_timeout = None

    def end_turn(self) -> None:
        """The turn is over (stored, or nothing of it heard): stop waiting for its marks and
        stop drafting it. Call before pushing its final frames."""
        self.cancel_ack_timeout()
        if self._drafting:
            self._drafting.cancel()
            self._drafting = None

    async def _draft(self, turn: AgentTurn, ms: Callable[[float], int]) -> None:
        last = None
        while True:
            heard = turn.planned_text[: self.heard_so_far(turn)].strip()
            if (turn.caller, heard) != last and (turn.caller or heard):
                last = (turn.caller, heard)
                agent = turn.to_frame(heard=heard, interrupted=True, end_ms=ms(time.monotonic()),
                                      start_ms=ms(turn.first_audio)) if heard else None
                await self._push(TurnDraftFrame(caller=turn.caller, agent=agent))
            await asyncio.sleep(DRAFT_EVERY_S)

    async def play(self, turn: AgentTurn, chunk: AudioChunk, now: float) -> None:
        """Add a chunk of `turn`'s speech and push it, unless the turn is paused."""
        if turn.first_audio is None:
            turn.first_audio = now
            turn.base_s = self.played_s
            if turn.speech_end is not None:
                turn.timings["end_of_turn_ms"] = int((turn.started - turn.speech_end) * 1000)
            await self._push(TTSStartedFrame())
            if self._ms is not None:
                if self._drafting:  # an earlier turn's, never ended
                    self._drafting.cancel()
                self._drafting = asyncio.create_task(self._draft(turn, self._ms),
                                                     name="agent-turn-draft")
        index = turn.add_piece(chunk.audio, chunk.sample_rate)
        if not turn.paused:  # else it waits for the resume, which plays all not yet heard
            await self._push_piece(turn, index, 0)

    async def push_mark(self, turn: AgentTurn, text_end: int) -> None:
        """A mark that reports `text_end` characters heard once what went before it played."""
        name = f"a{next(self._mark_ids)}"
        turn.marks[name] = text_end
        turn.last_mark = name
        await self._push(PlaybackMarkFrame(message=name))

    async def play_tones(self, turn: AgentTurn, keys: str) -> None:
        """DTMF tones after the turn's words, and a mark after them: a hang-up waits for
        them."""
        for key in keys:
            button = KeypadEntry(key)
            await self._push(OutputDTMFFrame(button=button))
            turn.tones_s += len(await load_dtmf_audio(button, sample_rate=8000)) / 2 / 8000
        if turn.first_audio is not None:
            await self.push_mark(turn, len(turn.planned_text))

    async def pause(self, turn: AgentTurn) -> None:
        """Clear the line (Twilio `clear`, WebRTC output flush); later audio waits here."""
        self.cancel_ack_timeout()
        turn.heard_chars = self.heard_so_far(turn)
        turn.paused = True
        await self._push(InterruptionFrame())

    async def resume(self, turn: AgentTurn) -> None:
        """Everything not yet heard was cleared from the line: play it again, from the start
        of the word the caller was hearing."""
        turn.paused = False
        turn.segments = []
        turn.base_s = self.played_s
        cut = turn.heard_chars
        for index, piece in enumerate(turn.pieces):
            if piece.text_end > cut:
                offset = piece.offset_of(cut) if piece.text_start < cut else 0
                await self._push_piece(turn, index, offset)

    async def _push_piece(self, turn: AgentTurn, index: int, offset: int) -> None:
        piece = turn.pieces[index]
        audio = piece.audio[offset:]
        turn.segments.append(PushedSegment(piece=index, offset=offset, length=len(audio)))
        await self._push(
            TTSAudioRawFrame(audio=audio, sample_rate=piece.sample_rate, num_channels=1)
        )
        await self.push_mark(turn, piece.text_end)
