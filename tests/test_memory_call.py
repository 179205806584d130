"""A caller rings twice over the Twilio protocol and is greeted by name the second time."""

import asyncio
from urllib.parse import quote

import pytest

from tests.support import caller, speech_8k, start_server, transcribe_8k, wer

# Lines Whisper tiny.en hears right in espeak's voice through 8 kHz μ-law ("reservation"
# comes back as "reformation", "Alice" as "Maelis").
FIRST_CALL = [
    "Hello, I would like to make an appointment for tomorrow evening.",
    "My name is Peter.",
    "No thanks, goodbye.",
]
NUMBER = "+15550104242"

pytestmark = pytest.mark.e2e


async def _after_end_of_call(server, call_id: int) -> dict:
    """The caller through the API, once the end-of-call extraction has run."""
    for _ in range(150):
        if f"call {call_id}: summarised" in server.log():
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"call {call_id} was never summarised:\n{server.log()[-3000:]}")
    response = await server.api(f"/api/callers/{quote(NUMBER)}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_second_call_greets_the_caller_by_name(database_url, tmp_path, rest_standin):
    server = start_server(tmp_path, database_url=database_url, rest_url=rest_standin.base_url)
    try:
        first = caller(server, from_number=NUMBER)
        result = await first.call([speech_8k(line) for line in FIRST_CALL])
        assert result.errors == [] and result.hung_up_by == "agent"
        first_call = await server.call_by_sid(first.call_sid)
        greeting = first_call["turns"][0]
        assert greeting["speaker"] == "agent" and "Welcome back" not in greeting["text"]

        profile = await _after_end_of_call(server, first_call["id"])
        heard_from_caller = [t["text"] for t in first_call["turns"] if t["speaker"] == "caller"]
        assert profile["number"] == NUMBER and profile["name"] == "Peter", heard_from_caller
        kinds = {m["kind"]: m for m in profile["memories"]}
        assert kinds["fact"]["value"] == {"name": "Peter"}
        assert kinds["fact"]["source_call_id"] == first_call["id"]
        assert "appointment" in kinds["commitment"]["text"].lower()
        assert "appointment" in profile["last_summary"].lower()

        second = caller(server, from_number=NUMBER)
        result = await second.call([speech_8k("No thanks, goodbye.")])
        assert result.errors == [] and result.hung_up_by == "agent"
        second_call = await server.call_by_sid(second.call_sid)
        greeting = second_call["turns"][0]
        assert greeting["speaker"] == "agent"
        assert greeting["text"].startswith("Welcome back, Peter!"), greeting
        heard = transcribe_8k(bytes(result.utterances[0].pcm))
        assert "peter" in heard.lower() and wer(greeting["text"], heard) <= 0.35, heard

        profile = await _after_end_of_call(server, second_call["id"])
        assert profile["call_ids"] == [second_call["id"], first_call["id"]]
        # Nothing worth keeping was said: the first call stays the last summary.
        assert "appointment" in profile["last_summary"].lower()
        # The number in another format finds the same caller; unknown ones are a 404.
        same = await server.api(f"/api/callers/{quote('(555) 010-4242')}")
        assert same.json()["number"] == NUMBER
        assert (await server.api("/api/callers/%2B15550109999")).status_code == 404

        shown = server.cli("memory", "show", "--caller", NUMBER)
        assert "name: Peter" in shown and "commitment" in shown
        erased = server.cli("memory", "forget", "--caller", NUMBER, "--transcripts", "--yes")
        assert "2 calls" in erased
        assert (await server.api(f"/api/callers/{quote(NUMBER)}")).status_code == 404
    finally:
        server.stop()
