"""Voice prints on phone-quality audio: the caller, a partner close in timbre, a child."""

import audioop
import os
import subprocess
import sys

import numpy as np
import soxr

from callwright.agent import speakers, voice_features
from callwright.agent.speakers import SpeakerTracker
from tests import overlap as ov


def phone(text: str, voice: str) -> bytes:
    """`text` in `voice` through μ-law at 8 kHz, then at the pipeline's 16 kHz."""
    line = audioop.ulaw2lin(audioop.lin2ulaw(ov.say(text, voice), 2), 2)
    return soxr.resample(np.frombuffer(line, np.int16), 8000, 16000).astype(np.int16).tobytes()


def test_voices_are_told_apart_by_print_and_pitch():
    tracker = SpeakerTracker()
    opening = phone("Hi, I am calling about a few things for my family today.", "caller")
    assert tracker.assign(speakers.embed(opening), 3.0) == "caller" and tracker.enrolled

    again = speakers.embed(phone("Hold on, can you repeat the first part please?", "caller"))
    partner = speakers.embed(phone("Can you turn the television down a little please?",
                                   "partner"))
    child = speakers.embed(phone("Mum, where is my blue jacket, I cannot find it?", "child"))
    # The partner's embedding alone sits near the caller's; their pitch does not.
    assert tracker.pitch_apart(again, "caller") < 2.5 < 4.0 < tracker.pitch_apart(partner,
                                                                                  "caller")
    unanswered = tracker.settings.unanswered_below
    assert tracker.similarity(again, "caller") > tracker.settings.same_speaker
    assert tracker.similarity(partner, "caller") < unanswered
    assert tracker.similarity(child, "caller") < unanswered

    # A short phrase of the caller's scores low on its embedding; its pitch keeps it theirs.
    digits = speakers.embed(phone("two one three", "caller"))
    assert tracker.similarity(digits, "caller") < tracker.settings.same_speaker
    assert not tracker.differs(digits, "caller", tracker.settings.same_speaker)
    assert tracker.differs(partner, "caller", tracker.settings.same_speaker)

    assert tracker.assign(again, 2.5) == "caller"
    assert tracker.assign(partner, 2.5) == "speaker 2"
    assert tracker.assign(child, 2.5) == "speaker 3"
    assert tracker.assign(partner, 2.5) == "speaker 2"


def test_a_new_voice_needs_an_enrolled_caller():
    tracker = SpeakerTracker()
    short = phone("Hi there.", "caller")
    assert tracker.assign(speakers.embed(short), 0.7) == "caller" and not tracker.enrolled
    # The rest of the caller's opening completes the enrolment instead of making a new voice.
    rest = phone("I am calling about a few things for my family today.", "caller")
    assert tracker.assign(speakers.embed(rest), 2.6) == "caller" and tracker.enrolled


# librosa and resemblyzer's own front end, run in a process of their own with a private
# numba cache: importing them here would compile into the cache in site-packages.
_REFERENCE = """
import sys
import numpy as np, librosa
from resemblyzer import VoiceEncoder
wav = np.load(sys.argv[1])
f0 = librosa.yin(wav, fmin=60, fmax=400, sr=16000, frame_length=1024, hop_length=320)
level = librosa.feature.rms(y=wav, frame_length=1024, hop_length=320)[0]
embedding = VoiceEncoder("cpu", verbose=False).embed_utterance(wav)
np.savez(sys.argv[2], f0=f0, level=level, embedding=embedding)
"""


def test_voice_prints_match_resemblyzer_and_librosa(tmp_path):
    wav = np.frombuffer(phone("My name is Peter, a table for two please.", "partner"),
                        np.int16).astype(np.float32) / 32768
    np.save(tmp_path / "wav.npy", wav)
    subprocess.run(
        [sys.executable, "-c", _REFERENCE, tmp_path / "wav.npy", tmp_path / "reference.npz"],
        check=True, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")},
    )
    reference = np.load(tmp_path / "reference.npz")
    f0 = voice_features.yin_pitch(wav, rate=16000, fmin=60, fmax=400, frame_length=1024, hop=320)
    np.testing.assert_allclose(f0, reference["f0"], rtol=1e-5)
    np.testing.assert_allclose(voice_features.rms(wav, frame_length=1024, hop=320),
                               reference["level"], rtol=1e-4, atol=1e-7)
    pcm = (wav * 32768).astype(np.int16).tobytes()
    np.testing.assert_allclose(speakers.embed(pcm).embedding, reference["embedding"], atol=1e-5)


def test_model_processes_load_no_jit_compiler():
    """No process of the server imports numba: its on-disk cache is shared by every process
    of an install, and one broken write made every later start segfault (issue 15)."""
    script = """
import sys
import numpy as np
import callwright.app
from agent import models
from agent.model_host import _Models
loaded = _Models(paths=models.resolve(), beam_size=1, voice_prints=True)
loaded.voice_print((np.sin(np.arange(48000) / 9) * 8000).astype(np.int16).tobytes())
print(sorted({name.split(".")[0] for name in sys.modules} & {"numba", "llvmlite"}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
