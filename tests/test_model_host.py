"""Model processes give the in-process models' answers, yield the CPU, survive a kill, and
say which model failed when they cannot start."""

import functools
import os
import signal

import numpy as np
import psutil
import pytest
import soxr

from callwright.agent import models
from callwright.agent.model_host import ModelHost, ModelLoadFailed, ModelProcessDied
from tests.support import launch_server, speech_8k, start_server


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


def _crash_loading_piper(marker: str | None) -> None:
    """A model process's setup: Piper's loader segfaults (with `marker`, only in the first
    process, the one that creates the marker file)."""
    import ctypes

    import piper

    if marker is not None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    piper.PiperVoice.load = lambda *args, **kwargs: ctypes.string_at(0)


@pytest.fixture
def errors():
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="ERROR")
    yield lines
    logger.remove(sink)


def test_a_model_process_that_crashes_at_start_is_named_and_started_again(tmp_path, errors):
    host = ModelHost(paths=models.resolve(), process_setup=functools.partial(
        _crash_loading_piper, str(tmp_path / "crashed")))
    try:
        host.load()
        assert "open" in host.transcribe(_speech_16k("What time do you open?")).lower()
    finally:
        host.close()
    [line] = errors
    assert "was killed by SIGSEGV while loading Piper voice" in line
    assert "starting the model processes again" in line


def test_a_model_process_that_crashes_every_time_fails_the_load_with_its_cause():
    host = ModelHost(paths=models.resolve(), process_setup=functools.partial(
        _crash_loading_piper, None))
    with pytest.raises(ModelLoadFailed, match="killed by SIGSEGV while loading Piper voice"):
        host.load()
    assert not host.loaded


def test_a_server_whose_models_cannot_load_says_which_and_why(tmp_path):
    voice = tmp_path / "broken.onnx"
    voice.write_bytes(b"not a model")
    voice.with_suffix(".onnx.json").write_text(
        models.resolve().piper_voice.with_suffix(".onnx.json").read_text())
    server = launch_server(tmp_path, PIPER_VOICE_PATH=voice)
    assert server.process.wait(timeout=120) != 0
    log = server.log()
    assert "while loading Piper voice broken.onnx" in log, log[-3000:]
    assert "starting the model processes again" in log and "BrokenProcessPool" not in log
