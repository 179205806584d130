"""What the caller has heard of an agent turn: planned text, pushed audio, marks.

An agent turn is synthesised in pieces, each saying a span of the planned text. The
pieces are pushed as segments (a resumed piece is pushed again from a word boundary).
The played-speech clock, measured from `base_s`, walks the segments to the piece and
byte being played; words are placed in a piece in proportion to its characters, so a
cut lands at the end of the last whole word heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callwright.agent.frames import CallerTurnFrame

RESUME_BACKUP_S = 0.05  # resume a little before the word boundary, not in its onset


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
        share = (chars - self.text_start) / max(self.text_end - self.text_start, 1)
        backup = int(RESUME_BACKUP_S * self.sample_rate) * 2
        return max(0, int(len(self.audio) * share) // 2 * 2 - backup)


@dataclass(kw_only=True)
class PushedSegment:
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
