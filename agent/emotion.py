"""The caller's emotion per turn: their prosody judged against their own voice, and words.

One `CallerMood` per call. Each caller turn's audio features (`callwright.agent.prosody`)
are compared with the caller's own earlier turns that were not agitated: a naturally
loud, high or fast speaker is not agitated, only one who is louder, higher or faster than
they were. The first turn has nothing to compare with and gets no audio judgement; while
there are few earlier turns the comparison shrinks towards population priors (a
normal-normal model: the caller's typical value is still uncertain, so a deviation counts
for less). Arousal comes mostly from that comparison, valence mostly from the words
(`callwright.agent.sentiment`), and the label from both: the words when they are clear,
the voice when the words are neutral. An emotion that an audio LLM reported itself is
fused with a high weight.

Labels: neutral, positive, frustrated (also angry) and sad (also anxious, worried).
Everything here is synchronous and cheap (well under a millisecond a turn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from callwright.agent.prosody import Prosody
from callwright.agent.sentiment import WordSentiment, word_sentiment

EMOTIONS = ("neutral", "positive", "frustrated", "sad")

# Other names audio LLMs use for the same states.
ALIASES = {
    "angry": "frustrated", "anger": "frustrated", "annoyed": "frustrated",
    "irritated": "frustrated", "frustration": "frustrated",
    "anxious": "sad", "worried": "sad", "afraid": "sad", "fearful": "sad", "fear": "sad",
    "scared": "sad", "upset": "sad", "sadness": "sad", "distressed": "sad",
    "happy": "positive", "pleased": "positive", "joy": "positive", "satisfied": "positive",
    "calm": "neutral", "none": "neutral",
}


@dataclass(frozen=True)
class _Feature:
    """Population prior of one prosodic feature, in the units compared.

    mean and between: the typical value across callers and its spread; within: how much one
    caller's calm turns vary; weight: its share of arousal (negative: more means calmer).
    """

    mean: float
    between: float
    within: float
    weight: float


# Pitch and its range in semitones, level in dB, syllable rate as a log, pauses as a share.
FEATURES: dict[str, _Feature] = {
    "pitch": _Feature(mean=5.0, between=5.0, within=1.0, weight=0.30),
    "range": _Feature(mean=4.5, between=1.5, within=1.3, weight=0.20),
    "energy": _Feature(mean=-22.0, between=6.0, within=1.5, weight=0.30),
    "rate": _Feature(mean=math.log(4.8), between=0.2, within=0.1, weight=0.15),
    "pauses": _Feature(mean=0.1, between=0.1, within=0.08, weight=-0.05),
}
Z_CLIP = 4.0  # one absurd feature (an octave error, a clipped line) cannot decide alone
AROUSAL_SCALE = 1.0  # weighted z of this size gives arousal tanh(1) = 0.76
BASELINE_TURNS = 8  # the caller's most recent turns that were not agitated

# Labels. Words decide when they are clear; the voice decides when they are neutral.
CUE_MIN = 0.45  # anger or distress cue score that marks a complaint or distress
# VADER compound at or above this: positive words. VADER scores "I would like to" and
# "please" as mildly positive (0.3-0.4 on the tuning set's neutral requests).
POSITIVE_VALENCE = 0.5
NEGATIVE_VALENCE = -0.25  # at or below: negative words
AGITATED_AROUSAL = 0.65  # relative arousal at or above this: agitated delivery
SUBDUED_AROUSAL = -0.7  # at or below: subdued delivery
# Share of valence from the voice: aroused or flat delivery of words that are not
# positive reads as somewhat negative.
AUDIO_VALENCE_WEIGHT = 0.2
# A frustrated or sad turn is at least this negative, even when VADER found its words
# mildly positive ("I would like to ...") and the voice decided the label.
LABEL_VALENCE = {"frustrated": -0.2, "sad": -0.2}
# Words-only arousal: complaints are heated.
WORDS_AROUSAL_ANGER = 0.4
# An emotion the backend's model reported itself counts this many times its confidence.
REPORTED_WEIGHT = 2.0

# Delivery for callers who are frustrated or sad: a little slower, with pauses.
CALM_LENGTH_SCALE = 1.12
CALM_SENTENCE_PAUSE_MS = 250
HINTS = {
    "frustrated": "The caller sounds frustrated: acknowledge it briefly, stay calm, keep "
    "sentences short.",
    "sad": "The caller sounds upset or worried: be gentle and reassuring, speak slowly, "
    "one step at a time.",
    "positive": "The caller sounds pleased: keep a warm, friendly tone.",
}


@dataclass(frozen=True, kw_only=True)
class Emotion:
    """How the caller sounded in one turn.

    Attributes:
        label: one of EMOTIONS.
        arousal: -1 (subdued) to 1 (agitated), relative to the caller's own calm turns.
        valence: -1 (negative) to 1 (positive).
        confidence: 0 (a guess) to 1.
        source: the evidence used: "audio+words", "words", "audio", "model", joined by "+"
            when a reported emotion was fused ("model+audio+words"), "none" without any.
    """

    label: str
    arousal: float = 0.0
    valence: float = 0.0
    confidence: float = 0.0
    source: str = "none"


@dataclass(frozen=True)
class Delivery:
    """How the agent should speak its next reply.

    Attributes:
        length_scale: Piper's length scale; 1.0 is normal, above 1 slower.
        sentence_pause_ms: silence to add between sentences.
        hint: one sentence for an audio LLM's instructions; empty when neutral.
    """

    length_scale: float = 1.0
    sentence_pause_ms: int = 0
    hint: str = ""


def _values(p: Prosody) -> dict[str, float]:
    """A turn's features in the units FEATURES compares."""
    values = {
        "pitch": 12 * math.log2(p.pitch_hz / 100.0),
        "range": p.pitch_range_st,
        "energy": p.energy_db,
        "pauses": p.pause_ratio,
    }
    if p.rate_hz > 0:
        values["rate"] = math.log(p.rate_hz)
    return values


def _clip(x: float, low: float = -1.0, high: float = 1.0) -> float:
    return max(low, min(high, x))


class CallerMood:
    """One call's caller: each turn's emotion, and their calm voice as a baseline.

    Example:
        mood = CallerMood()
        emotion = mood.observe(prosody=prosody(pcm16k), text=transcript)
        vars = mood.template_vars()  # {"emotion": "frustrated", "frustration": 2, ...}
    """

    def __init__(self) -> None:
        self._turns: list[Emotion] = []
        self._baseline: list[dict[str, float]] = []  # features of recent calm turns
        self._baseline_before: list[dict[str, float]] = []  # as it was before the last turn

    # -- classification -------------------------------------------------------------------

    def arousal(self, prosody: Prosody) -> float:
        """A turn's arousal relative to this caller's baseline, -1 to 1.

        0 when the turn has no usable audio, and for the caller's first turn: with no
        earlier turn there is nothing to compare with, and population norms misread
        naturally high, loud or fast voices.
        """
        if not prosody.usable or not self._baseline:
            return 0.0
        total = 0.0
        for name, value in _values(prosody).items():
            prior = FEATURES[name]
            history = [turn[name] for turn in self._baseline if name in turn]
            # Posterior of the caller's typical value given their n calm turns (median for
            # robustness), and the spread to expect of one new calm turn around it: wider
            # while n is small, so that early deviations count for less.
            n = len(history)
            precision = 1 / prior.between**2 + n / prior.within**2
            centre = prior.mean / prior.between**2
            if n:
                centre += n * float(np.median(history)) / prior.within**2
            centre /= precision
            spread = math.sqrt(prior.within**2 + 1 / precision)
            total += prior.weight * _clip((value - centre) / spread, -Z_CLIP, Z_CLIP)
        return math.tanh(total / AROUSAL_SCALE)

    def classify(self, *, prosody: Prosody | None, text: str) -> Emotion:
        """One turn's emotion from its prosody and words, without recording it."""
        words = word_sentiment(text) if text and text.strip() else None
        heard = prosody is not None and prosody.usable
        arousal = self.arousal(prosody) if heard else 0.0
        if words is None and not heard:
            return Emotion(label="neutral", source="none")
        w = words or WordSentiment()
        label, confidence = _decide(w, arousal, heard=heard, read=words is not None)
        if heard:
            # Heated or flat speech of words that are not positive reads as negative.
            voice_valence = -abs(arousal) if w.valence < POSITIVE_VALENCE else 0.0
            valence = (1 - AUDIO_VALENCE_WEIGHT) * w.valence + AUDIO_VALENCE_WEIGHT * voice_valence
        else:
            valence = w.valence
            arousal = WORDS_AROUSAL_ANGER * w.anger
        valence = min(valence, LABEL_VALENCE.get(label, 1.0))
        source = "+".join(s for s, on in (("audio", heard), ("words", words is not None)) if on)
        return Emotion(label=label, arousal=round(_clip(arousal), 3),
                       valence=round(_clip(valence), 3), confidence=round(confidence, 3),
                       source=source)

    def observe(self, *, prosody: Prosody | None, text: str,
                reported: Emotion | None = None) -> Emotion:
        """Classify one caller turn and record it.

        Args:
            prosody: the turn's audio features; None when there was no audio.
            text: the turn's transcript.
            reported: an emotion the backend's model reported for this turn, if any.

        Returns:
            The turn's emotion, also appended to `turns`.
        """
        arousal = self.arousal(prosody) if prosody is not None else 0.0
        emotion = self.classify(prosody=prosody, text=text)
        if reported is not None:
            emotion = _fuse(emotion, reported)
        self._turns.append(emotion)
        self._baseline_before = self._baseline
        # The baseline is the caller's voice, whatever their words said (a calm complaint is
        # still their calm voice), but not their agitated turns: a caller who grows angry
        # over several turns is still compared with how they sounded before. The first
        # usable turn always enters (its arousal is 0). Subdued turns do count, so a caller
        # who started agitated and calmed down gets a calm baseline (the median follows once
        # calm turns are the majority).
        if prosody is not None and prosody.usable and arousal < AGITATED_AROUSAL:
            self._baseline = [*self._baseline, _values(prosody)][-BASELINE_TURNS:]
        return emotion

    def retract_last(self) -> None:
        """Forget the last observed turn: it was not a whole turn (the caller went on after
        a pause, and the whole of it is observed again)."""
        if self._turns:
            self._turns.pop()
            self._baseline = self._baseline_before

    # -- state for flows and storage -----------------------------------------------------

    @property
    def turns(self) -> tuple[Emotion, ...]:
        """Every observed turn's emotion, oldest first."""
        return tuple(self._turns)

    @property
    def current(self) -> Emotion | None:
        """The latest turn's emotion; None before the first."""
        return self._turns[-1] if self._turns else None

    @property
    def frustration(self) -> int:
        """Consecutive frustrated turns ending with the latest (0 if it is not frustrated)."""
        count = 0
        for turn in reversed(self._turns):
            if turn.label != "frustrated":
                break
            count += 1
        return count

    @property
    def frustrated_turns(self) -> int:
        """Frustrated turns in the whole call."""
        return sum(turn.label == "frustrated" for turn in self._turns)

    def template_vars(self) -> dict:
        """The mood as flow template variables (`{{ emotion }}`, `{{ frustration }}`, ...)."""
        current = self.current
        return {
            "emotion": current.label if current else "neutral",
            "arousal": current.arousal if current else 0.0,
            "valence": current.valence if current else 0.0,
            "frustration": self.frustration,
            "frustrated_turns": self.frustrated_turns,
            "emotions": [turn.label for turn in self._turns],
        }

    def delivery(self) -> Delivery:
        """How to speak to the caller now: slower and calmer when frustrated or sad."""
        label = self.current.label if self.current else "neutral"
        if label in ("frustrated", "sad"):
            return Delivery(CALM_LENGTH_SCALE, CALM_SENTENCE_PAUSE_MS, HINTS[label])
        return Delivery(hint=HINTS.get(label, ""))


def _decide(w: WordSentiment, arousal: float, *, heard: bool, read: bool) -> tuple[str, float]:
    """The label and its confidence, from word scores and relative arousal."""
    if read and w.anger >= CUE_MIN and w.anger >= w.distress:
        return "frustrated", _clip(0.5 + 0.5 * w.anger + 0.2 * max(arousal, 0), 0, 0.95)
    if read and w.distress >= CUE_MIN:
        return "sad", _clip(0.5 + 0.5 * w.distress, 0, 0.95)
    if read and w.valence >= POSITIVE_VALENCE:
        return "positive", _clip(0.5 + 0.5 * w.valence, 0, 0.95)
    if read and w.valence <= NEGATIVE_VALENCE:
        # Negative words that no cue explains: the voice tells anger from sadness, and on a
        # service line a complaint is the likelier reading of an ordinary delivery.
        confidence = _clip(0.4 + 0.4 * -w.valence, 0, 0.9)
        return ("sad", confidence) if arousal <= SUBDUED_AROUSAL else ("frustrated", confidence)
    if heard and arousal >= AGITATED_AROUSAL:
        return "frustrated", _clip(0.4 + 0.5 * arousal, 0, 0.9)
    if heard and arousal <= SUBDUED_AROUSAL:
        return "sad", _clip(0.4 + 0.5 * -arousal, 0, 0.9)
    # Neutral: surer the further every signal is from its threshold.
    closeness = max(abs(arousal) / AGITATED_AROUSAL if heard else 0.0,
                    abs(w.valence) / POSITIVE_VALENCE, max(w.anger, w.distress) / CUE_MIN)
    return "neutral", _clip(0.9 - 0.5 * closeness, 0.2, 0.9)


def _fuse(own: Emotion, reported: Emotion) -> Emotion:
    """Combine the turn's own estimate with the model's report, which weighs more."""
    label = ALIASES.get(reported.label.lower(), reported.label.lower())
    if label not in EMOTIONS:
        return own  # a state this module has no name for: keep our own reading
    w_model = REPORTED_WEIGHT * _clip(reported.confidence, 0, 1)
    w_own = own.confidence
    if w_model + w_own == 0:
        return own
    chosen = label if w_model >= w_own else own.label
    agree = 0.1 if label == own.label else 0.0

    def mix(a: float, b: float) -> float:
        return round((w_model * a + w_own * b) / (w_model + w_own), 3)

    return Emotion(
        label=chosen,
        arousal=mix(reported.arousal, own.arousal),
        valence=mix(reported.valence, own.valence),
        confidence=round(_clip(max(reported.confidence, own.confidence) + agree, 0, 1), 3),
        source="model" if own.source == "none" else f"model+{own.source}",
    )
