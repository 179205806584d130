"""A fresh install starts every time (issue 15).

librosa's numba kernels used to be compiled into a cache beside librosa's modules, shared by
every process of the install; one first start killed mid-write left a cache that segfaulted
every model process after it. These servers run with a copy of librosa first on their path,
so whatever a server compiles, and whatever it reads, is in a cache these tests control.
"""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import librosa
import psutil
import pytest

from tests.support import Server, caller, launch_server, speech_8k, start_server, wait_ready

pytestmark = pytest.mark.e2e

# What the old server ran: librosa's pitch tracker and mel frames, compiling their kernels.
_COMPILE_LIBROSA = """
import numpy as np, librosa
wav = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
librosa.yin(wav, fmin=60, fmax=400, sr=16000, frame_length=1024, hop_length=320)
librosa.feature.rms(y=wav)
librosa.feature.melspectrogram(y=wav, sr=16000, n_fft=400, hop_length=160, n_mels=40)
"""


def _cold_site(tmp_path: Path) -> dict[str, str]:
    """A cold copy of librosa (no caches) and empty cache homes: a first start's state."""
    site = tmp_path / "site"
    shutil.copytree(Path(librosa.__file__).parent, site / "librosa",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    return {"PYTHONPATH": str(site), "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "NUMBA_CACHE_DIR": ""}


def _jit_caches(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc")]


async def _answers_a_call(server: Server) -> None:
    result = await caller(server).call([speech_8k("What time do you open on Sunday?")],
                                       hang_up=True)
    assert result.errors == [] and len(result.utterances) >= 2, result


async def test_a_broken_jit_cache_does_not_stop_the_server(tmp_path):
    env = _cold_site(tmp_path)
    # A valid index beside broken code: half the kernels truncated, half garbage.
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", _COMPILE_LIBROSA],
                            env={**os.environ, **env}, check=True)
    kernels = [p for p in _jit_caches(tmp_path) if p.suffix == ".nbc"]
    assert kernels, "librosa compiled no kernels into its own cache"
    for i, kernel in enumerate(kernels):
        data = kernel.read_bytes()
        kernel.write_bytes(data[: len(data) // 3] if i % 2 else os.urandom(len(data)))

    (tmp_path / "data").mkdir()
    server = start_server(tmp_path / "data", **env)
    try:
        await _answers_a_call(server)
    finally:
        server.stop()


def _kill_with_children(server: Server) -> None:
    """As an OOM killer or a power cut would: the server and its model processes at once."""
    family = [server.process.pid, *(c.pid for c in
                                    psutil.Process(server.process.pid).children(recursive=True))]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait()


async def test_servers_started_together_from_cold_caches_survive_one_killed(tmp_path):
    env = _cold_site(tmp_path)
    for name in "abc":
        (tmp_path / name).mkdir()
    first, second = launch_server(tmp_path / "a", **env), launch_server(tmp_path / "b", **env)
    third = None
    try:
        deadline = time.monotonic() + 60
        while "Loading Piper voice" not in second.log():  # its model processes are loading
            assert time.monotonic() < deadline and second.process.poll() is None, second.log()
            await asyncio.sleep(0.05)
        _kill_with_children(second)
        wait_ready(first)
        third = start_server(tmp_path / "c", **env)
        await _answers_a_call(third)
        # Nothing compiled a kernel, or kept any other cache, where the next start reads it.
        assert _jit_caches(tmp_path) == []
        assert [p for p in (tmp_path / "home").rglob("*") if p.is_file()] == []
    finally:
        for server in (first, second, third):
            if server is not None and server.process.poll() is None:
                server.stop()
