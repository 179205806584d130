"""Model processes give the in-process models' answers, yield the CPU, and survive a kill."""

import os
import signal

import numpy as np
import psutil
import pytest
import soxr

from agent import models
from agent.model_host import ModelHost, ModelProcessDied
from tests.support import speech_8k, start_server


def _speech_16k(text: str) -> bytes:
    pcm = np.frombuffer(speech_8k(text), dtype=np.int16)
    return soxr.resample(pcm, 8000, 16_000).astype(np.int16).tobytes()


@pytest.fixture(scope="module")
def hosts():
    paths = models.resolve()
    in_process, in_processes = ModelHost(paths=paths, processes=0), ModelHost(paths=paths)
    in_process.load()
    in_processes.load()
    yield in_process, in_processes
    in_processes.close()


def test_model_processes_answer_as_the_models_here_do(hosts):
    here, there = hosts
    speech = _speech_16k("What time do you open on Sunday?")
    words = there.transcribe(speech)
    assert "open" in words.lower() and words == here.transcribe(speech)
    samples = np.frombuffer(speech, dtype=np.int16).astype(np.float32) / 32768.0
    verdict = there.end_of_turn(samples, 16_000)
    assert verdict["prediction"] == here.end_of_turn(samples, 16_000)["prediction"]
    np.testing.assert_allclose(
        there.voice_print(speech).embedding, here.voice_print(speech).embedding, atol=1e-5
    )
    # Piper samples its noise afresh each time: same voice and rate, about the same length.
    (audio, rate), (expected, expected_rate) = (
        host.synthesize("Hello there, how are you?") for host in (there, here)
    )
    assert rate == expected_rate and abs(len(audio) / len(expected) - 1) < 0.25


def test_model_processes_run_below_the_servers_priority(hosts):
    [pid] = hosts[1].process_ids()
    assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0)


def test_a_killed_model_process_is_replaced(hosts):
    host = hosts[1]
    [pid] = host.process_ids()
    os.kill(pid, signal.SIGKILL)
    speech = _speech_16k("No thanks, goodbye.")
    with pytest.raises(ModelProcessDied):
        host.transcribe(speech)
    assert "goodbye" in host.transcribe(speech).lower()
    assert host.process_ids() and host.process_ids() != [pid]


def test_a_killed_server_leaves_no_model_processes(tmp_path):
    server = start_server(tmp_path)
    children = psutil.Process(server.process.pid).children(recursive=True)
    assert len(children) >= 2  # the model processes (and multiprocessing's resource tracker)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
