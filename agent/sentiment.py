"""What the caller's words say about their mood: valence, and anger against distress.

Valence comes from VADER (Hutto and Gilbert, 2014): a rule-based lexicon that ships in
the `vaderSentiment` wheel, costs a fraction of a millisecond a sentence and needs no
model. VADER tells negative from positive but not an angry caller from a frightened one,
and on a service line that difference decides how the agent should answer. So two small
cue lexicons below score complaint (anger) and distress (anxiety, sadness).

The cues were written from the TUNING sentences of `bench/emotion.py` only (the bench
checks that each cue matches at least one of them); the held-out sentences never informed
them. Regular expressions allow inflections of a cue's own words, nothing more.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# Complaint and anger: blame, repetition, waiting, broken promises. Weight 1.0 is a cue
# that alone marks a complaint; smaller weights need company.
ANGER_CUES: dict[str, float] = {
    r"\bridiculous\b": 1.0,
    r"\bunacceptable\b": 1.0,
    r"\buseless\b": 1.0,
    r"\bsick of\b": 1.0,
    r"\bthird time\b": 0.8,  # the caller has been here before
    r"\bwait(ed|ing)? an hour\b": 0.8,
    r"\bon hold\b": 0.4,
    r"\bpassed around\b": 0.8,
    r"\bagain and again\b": 0.8,
    r"\bnobody\b": 0.5,  # nobody calls back, nobody listens
    r"\bcalls? me back\b": 0.3,
    r"\blisten(s|ing)?\b": 0.2,
    r"\bpromised\b": 0.5,
    r"\bweeks ago\b": 0.3,
    r"\bi've called\b": 0.3,
    r"\bfixed now\b": 0.6,  # a demand
    r"\bsame thing\b": 0.3,
    r"\babsolutely\b": 0.2,  # an intensifier, in complaints more than in thanks
}

# Distress: fear, worry, helplessness, sadness.
DISTRESS_CUES: dict[str, float] = {
    r"\bworr(y|ied|ying)\b": 1.0,
    r"\bscared\b": 1.0,
    r"\bafraid\b": 1.0,
    r"\banxious\b": 1.0,
    r"\bcan't cope\b": 1.0,
    r"\bdon't know what to do\b": 1.0,
    r"\bupset\b": 0.8,
    r"\bconfused\b": 0.8,
    r"\blost\b": 0.6,
    r"\bhospital\b": 0.6,
    r"\bdon't understand\b": 0.6,
    r"\bneed help\b": 0.6,
    r"\bcut off\b": 0.4,
}

# Who negative words are about, for negative sentences that no cue above explains: anger
# points at the company ("your service", "this is", "nobody"), distress at the caller's own
# state ("I'm", "I can't", "please"). These count only in proportion to VADER's negativity.
BLAME_MARKERS = (r"\byou\b", r"\byour\b", r"\bthis is\b", r"\bit's\b", r"\bnobody\b")
SELF_MARKERS = (r"\bi'm\b", r"\bi can't\b", r"\bi don't\b", r"\bplease\b", r"\bhelp\b")
MARKER_WEIGHT = 0.35

_ANALYZER = SentimentIntensityAnalyzer()  # loads its lexicon once (about 0.1 s)
_ANGER = [(re.compile(p), w) for p, w in ANGER_CUES.items()]
_DISTRESS = [(re.compile(p), w) for p, w in DISTRESS_CUES.items()]
_BLAME = [re.compile(p) for p in BLAME_MARKERS]
_SELF = [re.compile(p) for p in SELF_MARKERS]


@dataclass(frozen=True, kw_only=True)
class WordSentiment:
    """The mood in one turn's words.

    Attributes:
        valence: VADER's compound score, -1 (negative) to 1 (positive).
        anger: complaint and anger cues, 0 (none) to 1 (saturated).
        distress: worry, fear and sadness cues, 0 to 1.
        cues: the cue patterns that matched, for logs and tests.
    """

    valence: float = 0.0
    anger: float = 0.0
    distress: float = 0.0
    cues: tuple[str, ...] = ()


def _normalise(text: str) -> str:
    # Curly apostrophes from transcripts; the cues are written with straight ones.
    return text.lower().replace("\u2019", "'")


def _score(weights: float) -> float:
    """Saturate a sum of cue weights into [0, 1): 1.0 of cues gives 0.63."""
    return 1.0 - math.exp(-weights)


def word_sentiment(text: str) -> WordSentiment:
    """Score one caller turn's words.

    Args:
        text: the turn's transcript.

    Returns:
        Valence and the anger and distress cue scores; all zero for empty text.
    """
    if not text.strip():
        return WordSentiment()
    lowered = _normalise(text)
    valence = float(_ANALYZER.polarity_scores(text)["compound"])
    anger_hits = [(p.pattern, w) for p, w in _ANGER if p.search(lowered)]
    distress_hits = [(p.pattern, w) for p, w in _DISTRESS if p.search(lowered)]
    anger = sum(w for _, w in anger_hits)
    distress = sum(w for _, w in distress_hits)
    negativity = max(0.0, -valence)
    if negativity:
        anger += MARKER_WEIGHT * negativity * sum(bool(p.search(lowered)) for p in _BLAME)
        distress += MARKER_WEIGHT * negativity * sum(bool(p.search(lowered)) for p in _SELF)
    return WordSentiment(
        valence=valence,
        anger=_score(anger),
        distress=_score(distress),
        cues=tuple(p for p, _ in anger_hits + distress_hits),
    )
