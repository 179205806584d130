"""A backend of your own, registered by name: it says back what the caller said, using
the embedded recogniser and voice. Any speech-to-speech model fits the same shape.

    python examples/custom_backend.py
"""

import asyncio
from collections.abc import AsyncIterator

import callwright


class ParrotSession(callwright.AudioLLMSession):
    def __init__(self, voice):
        self.voice = voice

    async def respond(self, request: callwright.TurnRequest) -> AsyncIterator[callwright.Event]:
        text = "Hello! Say something and I will say it back."
        if request.audio is not None:  # None: the call has just started
            heard = await asyncio.to_thread(self.voice.transcribe, request.audio)
            yield callwright.CallerText(text=heard)
            text = f"You said: {heard}" if heard else "Sorry, I didn't catch that."
        audio, rate = await asyncio.to_thread(self.voice.synthesize, text)
        yield callwright.TextDelta(text=text)
        yield callwright.AudioChunk(audio=audio, sample_rate=rate)
        yield callwright.EndOfTurn()

    async def cancel(self) -> None:
        pass  # nothing runs between events; a model would stop generating here


class Parrot(callwright.AudioLLM):
    name = "parrot"
    capabilities = callwright.Capabilities(caller_text=True)

    def __init__(self, voice):
        self.voice = voice

    async def load(self) -> None:
        pass  # the embedded voice is loaded by the server

    async def open_session(self) -> callwright.AudioLLMSession:
        return ParrotSession(self.voice)


@callwright.register_backend("parrot")
def parrot(context: callwright.BackendContext) -> callwright.AudioLLM:
    return Parrot(context.voice())


if __name__ == "__main__":
    callwright.serve(callwright.Settings(audio_llm_backend="parrot"))
