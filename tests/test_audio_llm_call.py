"""A Twilio-protocol call through the pipeline with the tiny Qwen2.5-Omni worker in the slot.

Random weights speak noise, so this checks the protocol and the records, not words:
audio comes back for the greeting and each caller line, turns are stored, the worker
slot is released when the call ends, and a second call while the worker is held
falls back to the embedded cascade instead of going silent.
"""

import asyncio

import pytest

from tests.support import caller, speech_8k, start_server, tiny_omni_worker, transcribe_8k

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory):
    from callwright.agent.backends.qwen_omni_random import save_tiny

    return save_tiny(tmp_path_factory.mktemp("omni"))


async def test_call_with_the_omni_worker_in_the_slot(tmp_path, tiny_omni, rest_standin):
    worker = tiny_omni_worker(tmp_path, tiny_omni)
    server = start_server(tmp_path, rest_url=rest_standin.base_url,
                          AUDIO_LLM_BACKEND="workers", AUDIO_LLM_WORKERS=worker.url)
    try:
        twilio = caller(server)
        lines = ["Hello, what time do you open?", "Thank you very much."]
        result = await twilio.call([speech_8k(line) for line in lines], end_timeout_s=2)
        assert result.errors == [], "the server broke Twilio's protocol"
        assert result.hung_up_by == "caller" and result.marks_echoed > 0
        assert len(result.utterances) >= 3  # the greeting and a reply to each line
        await asyncio.sleep(1.0)
        call = await server.call_by_sid(twilio.call_sid)
        assert call["status"] == "completed"
        turns = call["turns"]
        agent = [t for t in turns if t["speaker"] == "agent"]
        callers = [t for t in turns if t["speaker"] == "caller"]
        assert len(agent) >= 3 and all(t["text"] for t in agent)
        # The omni model does no ASR; the caller's words come from the transcript sidecar.
        assert len(callers) == 2 and "open" in callers[0]["text"].lower()
        assert "worker" in server.log() and "falling back" not in server.log()
        assert worker.health()["sessions"] == 0  # the call's session was released

        # While another client holds the only worker, a call gets the apology and the cascade.
        from callwright.agent.backends.worker_pool import WorkerPool

        held = await WorkerPool(urls=[worker.url]).open_session()
        try:
            second = caller(server)
            result = await second.call([speech_8k("Goodbye.")], end_timeout_s=5)
            assert result.errors == [] and result.utterances
            assert "busy" in transcribe_8k(bytes(result.utterances[0].pcm)).lower()
            assert result.hung_up_by == "agent"  # the cascade took the goodbye
        finally:
            await held.close()
    finally:
        server.stop()
        worker.stop()
