"""A Twilio call on `callwright serve` with AUDIO_LLM_BACKEND=llm and a YAML flow, unchanged.

The chat server is the strict OpenAI stand-in on loopback: it greets, moves the flow
with a tool call, speaks on from the next node, and then goes away. The caller hears the
apology and the flow policy answers that turn and the rest of the call; nothing is silent
and the call is not dropped. Each agent turn the model answered stores its time to first
token and its tokens.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from callwright.agent.fallback import FAILURE_APOLOGY
from tests.admin_seed import PASSWORD, add_user
from tests.openai_standin import OpenAIStandIn
from tests.support import caller, speech_8k, start_server, transcribe_8k, words

pytestmark = pytest.mark.e2e


async def test_a_flow_call_on_a_chat_model_that_dies(tmp_path, rest_standin):
    standin = OpenAIStandIn(model="chat-model", token_delay_s=0.02)
    await standin.serve()
    standin.replies.extend([
        "Hello, thanks for calling Luigi's. Would you like to reserve a table?",
        {"name": "reserve", "arguments": {}},
        "Great. For how many people?",
    ])
    server = await asyncio.to_thread(
        start_server, tmp_path, rest_url=rest_standin.base_url, AUDIO_LLM_BACKEND="llm",
        LLM_URL=standin.base_url, LLM_MODEL="chat-model", LLM_FIRST_TOKEN_TIMEOUT="3",
        LLM_API_KEY="sk-test-0123456789",
        DEFAULT_FLOW="restaurant",
    )

    async def server_dies() -> None:
        while standin.completed < 3:
            await asyncio.sleep(0.05)
        await standin.stop()

    dying = asyncio.create_task(server_dies())
    try:
        twilio = caller(server)
        lines = ["I would like to book a table.", "Four people.", "Goodbye."]
        result = await twilio.call([speech_8k(line) for line in lines], end_timeout_s=8)
        assert dying.done() and not dying.exception()
        assert result.errors == [] and result.hung_up_by == "agent"
        heard = [transcribe_8k(bytes(u.pcm)) for u in result.utterances]
        assert "reserve a table" in words(heard[0]), heard  # Whisper once heard "Muidis's"
        assert "how many people" in words(" ".join(heard)), heard
        apology = next(i for i, text in enumerate(heard) if "problem" in words(text))
        # After the apology, the flow policy asks the party node's next question.
        assert "which day" in words(" ".join(heard[apology:])), heard
        await asyncio.sleep(1.0)
        call = await server.call_by_sid(twilio.call_sid)
        assert call["flow_path"][:2] == ["greet", "party"]
        assert call["slots"].get("party_size") == 4
        agent = [t for t in call["turns"] if t["speaker"] == "agent"]
        by_model = [t for t in agent if t["llm_first_token_ms"] is not None]
        assert len(by_model) >= 2, agent
        for turn in by_model:
            assert turn["llm_tokens_in"] > 0 and turn["llm_tokens_out"] > 0
            assert 0 <= turn["llm_first_token_ms"] < 3000
        # The turn that moved the flow made two requests: its tokens are summed.
        moved = next(t for t in agent if "how many people" in t["text"].lower())
        assert moved["llm_tokens_out"] >= 2
        assert any(FAILURE_APOLOGY in t["planned_text"] for t in agent)
        assert "falling back" in server.log() and "sk-test-0123456789" not in server.log()
        assert set(standin.authorizations) == {"Bearer sk-test-0123456789"}
        assert standin.requests[0]["messages"][0]["content"].startswith("You are the friendly "
                                                                        "host at Luigi's")
        page = await admin_call_page(server, call["id"])
        first = by_model[0]
        assert (f"LLM first token {first['llm_first_token_ms']} ms · {first['llm_tokens_in']} "
                f"tokens in · {first['llm_tokens_out']} out") in page
    finally:
        dying.cancel()
        server.stop()
        if standin.completed < 3:
            await standin.stop()


async def admin_call_page(server, call_id: int) -> str:
    """The admin site's page for a call, signed in as a supervisor."""
    await asyncio.to_thread(add_user, server, "sue", "supervisor")
    async with httpx.AsyncClient(base_url=server.url) as client:
        form = await client.get("/admin/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signin = {"cookie": f"cw_admin_signin={form.cookies['cw_admin_signin']}"}
        signed_in = await client.post("/admin/login", headers=signin, data={
            "csrf_token": token, "username": "sue", "password": PASSWORD})
        assert signed_in.status_code == 303
        cookie = {"cookie": signed_in.headers["set-cookie"].split(";", 1)[0]}
        return (await client.get(f"/admin/calls/{call_id}", headers=cookie)).text
