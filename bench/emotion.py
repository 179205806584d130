"""The caller's emotion per turn (agent/emotion.py) on generated, labelled phone calls.

Each scenario is one caller: two calm, neutral turns at the caller's own natural
loudness (±6 dB), pitch (±2 semitones) and speaking rate (0.85-1.2x), then the target
turn, which is scored. Voices are espeak-ng voices and the Piper voice that ships in a pip
package (joe), all sent through a telephone line: 8 kHz, line hiss, μ-law, and back up to
the pipeline's 16 kHz. The classifier sees each turn's audio and its words (the sentence
as a transcript would give it).

Ground truth of a target turn, from its sentence's words and its delivery:

    neutral words   + calm      -> neutral
    neutral words   + agitated  -> frustrated   (higher, wider pitch; faster; louder)
    neutral words   + subdued   -> sad          (lower, narrower; slower; quieter)
    positive words  + calm      -> positive
    positive words  + bright    -> positive     (higher, wider, a little faster)
    complaint words + calm      -> frustrated
    complaint words + agitated  -> frustrated
    distress words  + calm      -> sad
    distress words  + subdued   -> sad
    distress words  + agitated  -> sad          (anxious)

(Complaints delivered subdued and positive words delivered agitated or subdued are
ambiguous and not generated.)

Two sets are generated separately. TUNING tunes the thresholds of agent/emotion.py and
agent/sentiment.py and is the only source of the sentiment cue words. HELD-OUT uses other
voices, other sentences and other delivery parameter values, and is only reported.

    python bench/emotion.py            # renders into bench/.cache/emotion/ the first time
    python bench/emotion.py --v2v 3    # and voice-to-voice without and with the analysis
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callwright.agent import sentiment  # noqa: E402
from callwright.agent.emotion import EMOTIONS, CallerMood  # noqa: E402
from callwright.agent.prosody import prosody  # noqa: E402
from tests.emotional_speech import (  # noqa: E402
    CALM,
    HISS_RMS,
    PIPELINE_RATE,
    REFERENCE_DBFS,
    Style,
    espeak_8k,
    piper_8k,
    telephone,
)

CACHE = Path(__file__).resolve().parent / ".cache" / "emotion"

# -- sentences --------------------------------------------------------------------------

TUNING_SENTENCES = {
    "neutral": [
        "I'm calling about my order from last week.",
        "Can you tell me what time the store opens on Saturday?",
        "I would like to change the delivery address on my account.",
        "My account number is four five six seven.",
        "I need to book an appointment for next Tuesday morning.",
        "Could you check the status of my refund, please?",
    ],
    "positive": [
        "Thank you so much, that's great.",
        "That's perfect, you've been really helpful.",
        "Wonderful, I really appreciate your help today.",
        "Excellent, that works for me, thanks a lot.",
    ],
    "complaint": [
        "This is the third time I've called, it's ridiculous.",
        "I waited an hour on hold, this is unacceptable.",
        "Your service is useless and nobody ever calls me back.",
        "I'm sick of being passed around, I want this fixed now.",
        "This is absolutely ridiculous, I was promised a refund weeks ago.",
        "Why does nobody listen? I have told you the same thing again and again.",
    ],
    "distress": [
        "I'm really worried, I don't know what to do.",
        "I'm scared I've lost my card and all my money.",
        "My mother is in hospital and I'm so upset, I can't cope.",
        "I'm confused and anxious, I don't understand what's happening.",
        "Please, I need help, I'm afraid they will cut off my electricity.",
    ],
}

HELDOUT_SENTENCES = {
    "neutral": [
        "Hello, I want to ask about the opening hours of your branch.",
        "Please update the phone number on my file.",
        "I'm ringing to check when my package will arrive.",
        "Can I pay the invoice by bank transfer?",
        "I'd like to cancel my subscription at the end of the month.",
        "What documents should I bring to the meeting on Friday?",
    ],
    "positive": [
        "Brilliant, you've sorted it out, cheers.",
        "Lovely, that's exactly what I needed.",
        "Fantastic news, I'm very pleased with that.",
        "Oh good, that's a big relief, many thanks.",
    ],
    "complaint": [
        "Nobody has answered my emails for two weeks, this is a joke.",
        "I've explained this problem four times already and I'm fed up.",
        "You charged me twice and no one will fix it, it's outrageous.",
        "What a terrible company, I'm furious about this.",
        "I've been kept waiting all morning and your staff were rude to me.",
    ],
    "distress": [
        "I'm terrified, my husband hasn't come home and his phone is off.",
        "I feel so alone, I can't manage these bills anymore.",
        "Please help me, I'm panicking and I can't think straight.",
        "I'm heartbroken, my dog died and I need to cancel his insurance.",
        "I'm nervous about the surgery and I'm not sure what happens next.",
    ],
}

# -- voices and deliveries --------------------------------------------------------------


# Two variants of each delivery per set; the held-out values are never used in tuning.
TUNING_STYLES = {
    "agitated": [Style(pitch_st=3, range_x=1.6, rate_x=1.25, gain_db=6),
                 Style(pitch_st=2, range_x=1.4, rate_x=1.15, gain_db=8)],
    "subdued": [Style(pitch_st=-2, range_x=0.6, rate_x=0.8, gain_db=-6),
                Style(pitch_st=-1.5, range_x=0.5, rate_x=0.85, gain_db=-8)],
    "bright": [Style(pitch_st=2.5, range_x=1.5, rate_x=1.1, gain_db=1),
               Style(pitch_st=2, range_x=1.7, rate_x=1.05, gain_db=2)],
}
HELDOUT_STYLES = {
    "agitated": [Style(pitch_st=4, range_x=1.45, rate_x=1.18, gain_db=4.5),
                 Style(pitch_st=2.5, range_x=1.3, rate_x=1.3, gain_db=7)],
    "subdued": [Style(pitch_st=-3, range_x=0.7, rate_x=0.86, gain_db=-4.5),
                Style(pitch_st=-1, range_x=0.55, rate_x=0.75, gain_db=-7)],
    "bright": [Style(pitch_st=3.5, range_x=1.4, rate_x=1.07, gain_db=2.5),
               Style(pitch_st=1.5, range_x=1.8, rate_x=1.12, gain_db=0.5)],
}

@dataclass(frozen=True, kw_only=True)
class Voice:
    name: str
    engine: str  # "espeak" or "piper"
    espeak: str = ""
    pitch_st: float = 0.0  # Piper: a fixed shift that makes another voice of joe


TUNING_VOICES = [
    Voice(name="espeak en-us", engine="espeak", espeak="en-us"),
    Voice(name="espeak en-us+f3", engine="espeak", espeak="en-us+f3"),
    Voice(name="espeak en-gb+m3", engine="espeak", espeak="en-gb+m3"),
    Voice(name="piper joe", engine="piper"),
]
HELDOUT_VOICES = [
    Voice(name="espeak en-gb-x-rp+f2", engine="espeak", espeak="en-gb-x-rp+f2"),
    Voice(name="espeak en-029+m7", engine="espeak", espeak="en-029+m7"),
    Voice(name="espeak en-gb-scotland+f4", engine="espeak", espeak="en-gb-scotland+f4"),
    Voice(name="piper joe +3 st", engine="piper", pitch_st=3.0),
]

# (sentence class, delivery, truth, targets per voice)
COMBOS = [
    ("neutral", "calm", "neutral", 4),
    ("neutral", "agitated", "frustrated", 2),
    ("neutral", "subdued", "sad", 2),
    ("positive", "calm", "positive", 2),
    ("positive", "bright", "positive", 2),
    ("complaint", "calm", "frustrated", 2),
    ("complaint", "agitated", "frustrated", 2),
    ("distress", "calm", "sad", 2),
    ("distress", "subdued", "sad", 2),
    ("distress", "agitated", "sad", 2),
]


@dataclass(frozen=True, kw_only=True)
class Turn:
    voice: Voice
    text: str
    style: Style  # the caller's natural offsets combined with the delivery


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    truth: str
    turns: tuple[Turn, ...]  # the last is the target


# -- rendering --------------------------------------------------------------------------

def render(turn: Turn) -> bytes:
    """A turn as the pipeline would receive it, from the cache when rendered before."""
    key = repr((turn.voice, turn.text, turn.style, REFERENCE_DBFS, HISS_RMS))
    digest = hashlib.sha1(key.encode()).hexdigest()[:20]
    path = CACHE / f"{digest}.pcm"
    if path.exists():
        return path.read_bytes()
    style = turn.style
    if turn.voice.engine == "piper":
        samples = piper_8k(turn.text, replace(style, pitch_st=style.pitch_st
                                              + turn.voice.pitch_st))
    else:
        samples = espeak_8k(turn.text, turn.voice.espeak, style)
    audio = telephone(samples, style.gain_db, seed=int(digest[:8], 16))
    path.write_bytes(audio)
    return audio


# -- the two sets -----------------------------------------------------------------------


def combine(natural: Style, delivery: Style) -> Style:
    return Style(pitch_st=natural.pitch_st + delivery.pitch_st,
                 range_x=natural.range_x * delivery.range_x,
                 rate_x=natural.rate_x * delivery.rate_x,
                 gain_db=natural.gain_db + delivery.gain_db)


def scenarios(split: str) -> list[Scenario]:
    """One set's callers, generated from its own seed, voices, sentences and deliveries."""
    tuning = split == "tuning"
    sentences = TUNING_SENTENCES if tuning else HELDOUT_SENTENCES
    styles = TUNING_STYLES if tuning else HELDOUT_STYLES
    voices = TUNING_VOICES if tuning else HELDOUT_VOICES
    rng = random.Random(1 if tuning else 2)
    out = []
    for voice in voices:
        for cls, delivery, truth, count in COMBOS:
            for k in range(count):
                natural = Style(pitch_st=rng.uniform(-2, 2), rate_x=rng.uniform(0.85, 1.2),
                                gain_db=rng.uniform(-6, 6))

                def jitter(style: Style) -> Style:
                    # One caller's calm turns still differ a little from each other.
                    return Style(pitch_st=style.pitch_st + rng.uniform(-0.5, 0.5),
                                 range_x=style.range_x * rng.uniform(0.9, 1.1),
                                 rate_x=style.rate_x * rng.uniform(0.96, 1.04),
                                 gain_db=style.gain_db + rng.uniform(-1, 1))

                pool = sentences[cls]
                target = pool[rng.randrange(len(pool))]
                calm = [s for s in sentences["neutral"] if s != target]
                target_style = CALM if delivery == "calm" else styles[delivery][k % 2]
                turns = [Turn(voice=voice, text=text, style=jitter(natural))
                         for text in rng.sample(calm, 2)]
                turns.append(Turn(voice=voice, text=target,
                                  style=jitter(combine(natural, target_style))))
                out.append(Scenario(name=f"{voice.name} {cls}/{delivery} {k}", truth=truth,
                                    turns=tuple(turns)))
    return out


def check_cues_come_from_tuning() -> None:
    """Every sentiment cue must match a tuning sentence (the held-out words informed none)."""
    text = [s.lower() for pool in TUNING_SENTENCES.values() for s in pool]
    for pattern in [*sentiment.ANGER_CUES, *sentiment.DISTRESS_CUES]:
        if not any(re.search(pattern, s) for s in text):
            raise SystemExit(f"cue {pattern!r} matches no tuning sentence")


# -- scoring ----------------------------------------------------------------------------


@dataclass
class Result:
    truth: list[str]
    predicted: list[str]
    words_only: list[str]
    audio_only: list[str]
    baseline_labels: list[str]
    cost_ms: list[float]


def evaluate(cases: list[Scenario], audio: dict[Turn, bytes]) -> Result:
    result = Result([], [], [], [], [], [])
    for case in cases:
        full, words, heard = CallerMood(), CallerMood(), CallerMood()
        for i, turn in enumerate(case.turns):
            start = time.perf_counter()
            features = prosody(audio[turn])
            emotion = full.observe(prosody=features, text=turn.text)
            result.cost_ms.append((time.perf_counter() - start) * 1000)
            words.observe(prosody=None, text=turn.text)
            heard.observe(prosody=features, text="")
            if i < len(case.turns) - 1:
                result.baseline_labels.append(emotion.label)
        result.truth.append(case.truth)
        result.predicted.append(full.current.label)
        result.words_only.append(words.current.label)
        result.audio_only.append(heard.current.label)
    return result


def scores(truth: list[str], predicted: list[str]) -> tuple[float, float, dict]:
    """Accuracy, macro-F1 over the classes present in truth, per-class (P, R, F1, n)."""
    per_class = {}
    for label in EMOTIONS:
        tp = sum(t == p == label for t, p in zip(truth, predicted, strict=True))
        n_pred, n_true = predicted.count(label), truth.count(label)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = (precision, recall, f1, n_true)
    present = [label for label in EMOTIONS if truth.count(label)]
    macro = statistics.mean(per_class[label][2] for label in present)
    accuracy = sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)
    return accuracy, macro, per_class


def report(split: str, result: Result, *, ablations: bool) -> None:
    accuracy, macro, per_class = scores(result.truth, result.predicted)
    print(f"\n== {split}: {len(result.truth)} target turns ==")
    print(f"accuracy {accuracy:.3f}   macro-F1 {macro:.3f}")
    print(f"{'class':<11}{'precision':>10}{'recall':>8}{'F1':>7}{'n':>5}")
    for label, (p, r, f1, n) in per_class.items():
        print(f"{label:<11}{p:>10.2f}{r:>8.2f}{f1:>7.2f}{n:>5}")
    print("confusion (rows: truth, columns: predicted)")
    print(" " * 11 + "".join(f"{label:>11}" for label in EMOTIONS))
    pairs = Counter(zip(result.truth, result.predicted, strict=True))
    for t in EMOTIONS:
        print(f"{t:<11}" + "".join(f"{pairs[(t, p)]:>11}" for p in EMOTIONS))
    calm = result.baseline_labels.count("neutral") / len(result.baseline_labels)
    print(f"baseline (calm, neutral) turns labelled neutral: {calm:.1%} of "
          f"{len(result.baseline_labels)}")
    if ablations:
        for name, predicted in (("words only", result.words_only),
                                ("audio only", result.audio_only)):
            accuracy, macro, _ = scores(result.truth, predicted)
            print(f"{name:<11} accuracy {accuracy:.3f}   macro-F1 {macro:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--errors", action="store_true", help="list misclassified targets")
    parser.add_argument("--v2v", type=int, default=0, metavar="CALLS",
                        help="also measure voice-to-voice on the wire with the analysis off and "
                        "on (CALLER_EMOTION), CALLS scripted calls each, in alternating rounds")
    args = parser.parse_args()
    check_cues_come_from_tuning()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE.parent / ".gitignore").write_text("*\n")  # rendered audio stays out of git
    started = time.perf_counter()
    sets = {split: scenarios(split) for split in ("tuning", "held-out")}
    turns = list(dict.fromkeys(t for cases in sets.values() for c in cases for t in c.turns))
    print(f"rendering {len(turns)} turns of {sum(map(len, sets.values()))} callers "
          f"(cached in {CACHE})")
    audio: dict[Turn, bytes] = {}
    piper_turns = [t for t in turns if t.voice.engine == "piper"]
    espeak_turns = [t for t in turns if t.voice.engine != "piper"]
    with ThreadPoolExecutor(2) as pool:  # espeak-ng runs as processes; Piper stays in ours
        for i, (turn, pcm) in enumerate(zip(espeak_turns, pool.map(render, espeak_turns),
                                            strict=True), 1):
            audio[turn] = pcm
            if i % 100 == 0:
                print(f"  espeak-ng {i}/{len(espeak_turns)}", flush=True)
    for i, turn in enumerate(piper_turns, 1):
        audio[turn] = render(turn)
        if i % 50 == 0:
            print(f"  piper {i}/{len(piper_turns)}", flush=True)
    print(f"rendered in {time.perf_counter() - started:.1f} s")

    results = {split: evaluate(cases, audio) for split, cases in sets.items()}
    report("TUNING", results["tuning"], ablations=True)
    report("HELD-OUT", results["held-out"], ablations=True)
    if args.errors:
        for split, cases in sets.items():
            r = results[split]
            for case, predicted in zip(cases, r.predicted, strict=True):
                if predicted != case.truth:
                    print(f"  {split}: {case.name}: {case.truth} -> {predicted}"
                          f" | {case.turns[-1].text}")
    cost = sorted(ms for r in results.values() for ms in r.cost_ms)
    seconds = [len(pcm) / 2 / PIPELINE_RATE for pcm in audio.values()]
    print(f"\nprosody() + observe() per turn: p50 {np.percentile(cost, 50):.1f} ms, "
          f"p90 {np.percentile(cost, 90):.1f} ms (turns of {np.median(seconds):.1f} s median)")
    if args.v2v:
        voice_to_voice_with_and_without(args.v2v)
    print(f"total {time.perf_counter() - started:.1f} s")


def voice_to_voice_with_and_without(calls: int) -> None:
    """bench/voice_to_voice.py's calls with CALLER_EMOTION off and on, alternating rounds of
    one call, so that drift of the machine falls on both alike."""
    from bench import voice_to_voice

    wire: dict[str, list[float]] = {"false": [], "true": []}
    for _ in range(calls):
        for enabled in wire:
            os.environ["CALLER_EMOTION"] = enabled
            print(f"\n-- CALLER_EMOTION={enabled}", flush=True)
            wire[enabled] += asyncio.run(voice_to_voice.main(1, "embedded"))
    print("\n== voice-to-voice on the wire, without and with the analysis ==")
    for enabled, label in (("false", "without"), ("true", "with")):
        values = wire[enabled]
        print(f"{label:<8} p50 {np.percentile(values, 50):5.0f} ms   "
              f"p90 {np.percentile(values, 90):5.0f} ms   ({len(values)} turns)")
    print(f"ratio with/without: p50 "
          f"{np.percentile(wire['true'], 50) / np.percentile(wire['false'], 50):.2f}")


if __name__ == "__main__":
    main()
