"""Voice-to-voice latency of scripted Twilio calls at real time, with the server's breakdown.

Starts `callwright serve` on the embedded default, places scripted calls through the
Twilio emulator, and prints per-turn wire latency (end of caller speech to the first
non-silent agent audio received) and the server-side parts of each reply.

    python bench/voice_to_voice.py [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telephony.rest_standin import TwilioRestStandIn  # noqa: E402
from tests.support import ACCOUNT_SID, AUTH_TOKEN, caller, speech_8k, start_server  # noqa: E402

SCRIPTS = [
    ["What time do you open on Sunday?", "Can I book a table for two?",
     "My name is Alice.", "No thanks, goodbye."],
    ["Hello, I would like to make a reservation for tomorrow evening.", "It's Bob.",
     "What are your opening hours?", "That's all, bye."],
]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def main(calls: int) -> None:
    rest = TwilioRestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    await rest.serve()
    server = start_server(Path(tempfile.mkdtemp(prefix="cw-bench-")), rest_url=rest.base_url)
    wire: list[float] = []
    parts: dict[str, list[int]] = {}
    server_latency: list[int] = []
    try:
        for i in range(calls):
            script = SCRIPTS[i % len(SCRIPTS)]
            twilio = caller(server)
            result = await twilio.call([speech_8k(line) for line in script])
            await asyncio.sleep(0.5)
            call = await server.call_by_sid(twilio.call_sid)
            agent = [t for t in call["turns"] if t["speaker"] == "agent" and t["latency_ms"]]
            for ms in result.latencies_ms:
                wire.append(ms)
            for turn in agent:
                server_latency.append(turn["latency_ms"])
                for key, value in (turn["timings"] or {}).items():
                    parts.setdefault(key, []).append(value)
            print(f"call {i + 1}: wire latency per turn (ms): "
                  + ", ".join(f"{ms:.0f}" for ms in result.latencies_ms))
    finally:
        server.stop()
        await rest.stop()
    print(f"\nturns: {len(wire)}")
    print(f"wire voice-to-voice   p50 {pct(wire, 0.5):6.0f} ms   p90 {pct(wire, 0.9):6.0f} ms"
          f"   mean {statistics.mean(wire):6.0f} ms")
    print(f"server voice-to-voice p50 {pct(server_latency, 0.5):6.0f} ms   "
          f"p90 {pct(server_latency, 0.9):6.0f} ms")
    for key in ("end_of_turn_ms", "asr_ms", "reply_ms", "tts_first_audio_ms"):
        values = parts.get(key, [])
        if values:
            print(f"  {key:<20} p50 {pct(values, 0.5):6.0f} ms   p90 {pct(values, 0.9):6.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4)
    asyncio.run(main(parser.parse_args().calls))
