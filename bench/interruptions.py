"""Barge-in, echo, side talk, speaker labels and digit endpointing on labelled calls.

Generates scenarios with four espeak-ng voices (caller, partner, child, colleague),
coughs, breaths, knocks, speakerphone echo of the agent's own audio and room noise,
all at telephone quality (8 kHz μ-law through the Twilio emulator), plays each as a
real call against `callwright serve`, and prints:

- precision, recall, F1 of the decision to stop the agent; false and missed rates;
- stop latency, clip speech onset -> `clear` on the wire (p50, p90), over true barge-ins;
- speaker-label accuracy per stored caller turn;
- premature end-of-turn rate on callers reading out phone numbers with pauses.

    python bench/interruptions.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callwright.testing.line_audio import RATE, LineAcoustics
from tests import overlap as ov  # noqa: E402
from tests.support import caller, start_server  # noqa: E402

NOISY = LineAcoustics(noise=ov.room_noise(level=250))
ECHO = LineAcoustics(echo_gain=0.35, echo_delay_s=0.15)


def digits(pauses: list[str], voice: str = "caller") -> bytes:
    """A phone number read in groups, with pauses between them, as one line."""
    gap = np.zeros(int(0.9 * RATE), dtype=np.int16).tobytes()
    return gap.join(ov.say(group, voice, pad_s=0.05) for group in pauses)


def scenarios(quick: bool) -> list[ov.Scenario]:
    s = ov.Scenario
    barge = [
        ("Wait, stop, I need to change the time.", "caller"),
        ("No no, that is not what I asked for at all.", "caller"),
        ("Hold on, can you repeat the first part please?", "caller"),
        ("Actually I want to book a table for four people.", "caller"),
    ]
    out = []
    for i, (text, voice) in enumerate(barge):
        out.append(s(name=f"barge-in {i}", kind="barge_in", should_stop=True,
                     clip=ov.say(text, voice), acoustics=NOISY if i % 2 else LineAcoustics()))
    for i, word in enumerate(["uh-huh", "yeah", "okay", "mm-hmm", "right"]):
        out.append(s(name=f"backchannel {word}", kind="backchannel", should_stop=False,
                     clip=ov.say(word), acoustics=NOISY if i % 2 else LineAcoustics()))
    out += [
        s(name="cough", kind="noise", should_stop=False, clip=ov.cough(1)),
        s(name="breath", kind="noise", should_stop=False, clip=ov.breath(2)),
        s(name="knock", kind="noise", should_stop=False, clip=ov.noise_burst(3), acoustics=NOISY),
        s(name="side talk partner", kind="side_talk", should_stop=False,
          clip_voice="partner",
          clip=ov.say("Honey, can you grab the car keys from the kitchen table for me?",
                      "partner")),
        s(name="side talk child", kind="side_talk", should_stop=False, clip_voice="child",
          clip=ov.say("Mum, where is my blue jacket, I cannot find it anywhere?", "child")),
        s(name="echo", kind="echo", should_stop=False, acoustics=ECHO),
        s(name="echo + barge-in", kind="barge_in", should_stop=True, acoustics=ECHO,
          clip=ov.say("Wait, stop, that is the wrong day.")),
        s(name="hand-over", kind="handover", should_stop=None,
          later=[("colleague", ov.say("Hello, I would like to book a table for tonight.",
                                      "colleague"))],
          opening=ov.say("Hi, I will hand you over to my colleague, she has the details.")),
        s(name="side talk between turns", kind="labels", should_stop=None,
          later=[("partner", ov.say("Can you turn the television down a little bit please?",
                                    "partner")),
                 ("caller", ov.say("What are your opening hours on Sunday?"))]),
        s(name="phone number", kind="digits", should_stop=None,
          opening=digits(["My number is two one two", "three one three", "four four nine one"])),
        s(name="phone number, noisy", kind="digits", should_stop=None, acoustics=NOISY,
          opening=digits(["My number is three one three", "two one two", "four nine one one"])),
    ]
    return out[::3] if quick else out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def main(quick: bool, only: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cw-interrupt-"))
    server = start_server(tmp, LOG_LEVEL=os.environ.get("LOG_LEVEL", "INFO"))
    print(f"server log: {server.log_path}")
    outcomes = []
    try:
        for scenario in scenarios(quick):
            if only not in scenario.name:
                continue
            outcome = await ov.run(server, scenario, caller)
            outcomes.append(outcome)
            labels = [t["speaker_label"] for t in outcome.turns if t["speaker"] == "caller"]
            latency = outcome.clear_latency_s
            print(f"{scenario.name:28s} stopped={outcome.stopped!s:5s} "
                  f"clear={'-' if latency is None else f'{latency * 1000:.0f}ms':>7s} "
                  f"labels={labels}", flush=True)
    finally:
        server.stop()

    judged = [o for o in outcomes if o.scenario.should_stop is not None]
    tp = sum(o.stopped and o.scenario.should_stop for o in judged)
    fp = sum(o.stopped and not o.scenario.should_stop for o in judged)
    fn = sum(not o.stopped and o.scenario.should_stop for o in judged)
    negatives = sum(not o.scenario.should_stop for o in judged)
    positives = sum(bool(o.scenario.should_stop) for o in judged)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    latencies = [o.clear_latency_s for o in judged
                 if o.scenario.should_stop and o.clear_latency_s is not None]

    label_total = label_right = 0
    for o in outcomes:
        # A clip that stopped the agent opened a caller turn: its voice is labelled too.
        clip = [o.scenario.clip_voice] if o.stopped else []
        truth = ["caller"] + clip + [who for who, _ in o.scenario.later]
        got = [t["speaker_label"] for t in o.turns if t["speaker"] == "caller"]
        expected = {"caller": "caller"}
        for who, label in zip(truth, got, strict=False):
            expected.setdefault(who, label if label != "caller" else "?")
            label_total += 1
            label_right += label == expected[who]
    digit_runs = [o for o in outcomes if o.scenario.kind == "digits"]
    premature = sum(
        sum(t["speaker"] == "caller" for t in o.turns) != 1 for o in digit_runs
    )

    print()
    print(f"scenarios: {len(outcomes)} ({positives} should stop, {negatives} should not)")
    print(f"stop decision: precision {precision:.2f}  recall {recall:.2f}  F1 {f1:.2f}")
    print(f"false interruptions: {fp}/{negatives} = {fp / max(negatives, 1):.0%}   "
          f"missed: {fn}/{positives} = {fn / max(positives, 1):.0%}")
    if latencies:
        print(f"stop latency onset->clear: p50 {pct(latencies, 50) * 1000:.0f} ms  "
              f"p90 {pct(latencies, 90) * 1000:.0f} ms  (n={len(latencies)}, "
              f"mean {statistics.mean(latencies) * 1000:.0f} ms)")
    print(f"speaker labels: {label_right}/{label_total} = "
          f"{label_right / max(label_total, 1):.0%} correct")
    print(f"premature end of turn on digits: {premature}/{len(digit_runs)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every third scenario only")
    parser.add_argument("--only", default="", help="scenarios whose name contains this")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.only))
