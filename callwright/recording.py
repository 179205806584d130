"""Per-call recording: both legs to one stereo WAV (left caller, right agent), on disk as it runs.

pipecat's `AudioBufferProcessor` keeps the two tracks aligned (silence where a side is
quiet) and hands over a second of interleaved stereo at a time; a writer thread appends
it to the file, so neither memory nor the event loop grows with the call's length.
"""

from __future__ import annotations

import queue
import threading
import wave
from pathlib import Path

from loguru import logger
from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor

RECORDINGS_DIR = "recordings"


class WavStreamWriter:
    """Appends PCM to a WAV file from its own thread; `write()` never blocks."""

    def __init__(self, path: Path, *, sample_rate: int, channels: int):
        self.path = path
        self._sample_rate = sample_rate
        self._channels = channels
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"wav-{path.stem}", daemon=True)
        self._thread.start()

    def write(self, pcm: bytes) -> None:
        """Queue PCM (interleaved 16-bit frames) to append; returns at once. Not after `close()`."""
        self._queue.put(pcm)

    def close(self) -> None:
        """Finish the file (its header gets the final length) once queued audio is written."""
        self._queue.put(None)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the writer thread to finish (after `close()`), or for `timeout` seconds."""
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(self.path), "wb") as wav:
                wav.setnchannels(self._channels)
                wav.setsampwidth(2)
                wav.setframerate(self._sample_rate)
                while (pcm := self._queue.get()) is not None:
                    wav.writeframesraw(pcm)  # the header is patched once, on close
        except OSError as exc:
            logger.error(f"recording {self.path.name}: not written ({exc})")
            while self._queue.get() is not None:  # drain, so the queue can't grow
                pass


class CallRecording:
    """The processor to put after the output transport, and the file it writes."""

    def __init__(self, *, data_dir: Path, call_id: int, sample_rate: int):
        self.relative_path = f"{RECORDINGS_DIR}/call-{call_id}.wav"
        self._writer = WavStreamWriter(
            data_dir / self.relative_path, sample_rate=sample_rate, channels=2
        )
        self.processor = AudioBufferProcessor(
            sample_rate=sample_rate,
            num_channels=2,  # left: the caller, right: the agent
            buffer_size=sample_rate * 2,  # hand over about a second at a time
            auto_start_recording=True,
        )

        @self.processor.event_handler("on_audio_data")
        async def _on_audio(_processor, audio: bytes, _rate: int, _channels: int) -> None:
            self._writer.write(audio)

        @self.processor.event_handler("on_recording_stopped")
        async def _on_stopped(_processor) -> None:
            self._writer.close()

    def close(self) -> None:
        """Finish the file even if the pipeline never stopped recording (it was cancelled)."""
        self._writer.close()
