"""Flows as files in a directory: each call gets the version current when it starts.

Edits are picked up for new calls (a cheap stat per call start); a call in
progress holds its own `LoadedFlow`, so it keeps the version it began with. An
edit that breaks the file is logged and the last good version stays in service.
"""

from __future__ import annotations

import threading
from pathlib import Path

from loguru import logger

from callwright.flows.loader import FlowFileError, load_flow
from callwright.flows.schema import LoadedFlow


class FlowLibrary:
    """The flow files in one directory, each loaded when asked for and cached.

    `get()` loads a file again once its modification time or size changed; when the
    new text is invalid, it logs the problems and keeps serving the last good version.
    Safe to use from several threads.

    Args:
        directory: Where the flow files (`<name>.yaml` or `<name>.yml`) are.
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._cache: dict[Path, tuple[tuple[int, int], LoadedFlow]] = {}
        self._lock = threading.Lock()

    def path_of(self, name: str) -> Path:
        """The file of the flow `name`: `name` itself if it is an existing .yaml/.yml file.

        Otherwise `<directory>/<name>.yaml`, else `<directory>/<name>.yml`.

        Raises:
            FileNotFoundError: There is no such file.
        """
        given = Path(name)
        if given.suffix in (".yaml", ".yml") and given.exists():
            return given
        for suffix in (".yaml", ".yml"):
            path = self.directory / f"{name}{suffix}"
            if path.exists():
                return path
        raise FileNotFoundError(f"no flow '{name}' in {self.directory}")

    def names(self) -> list[str]:
        """The names of the flow files in the directory (without their suffix), sorted."""
        return sorted(p.stem for p in self.directory.glob("*.y*ml"))

    def get(self, name: str) -> LoadedFlow:
        """The current version of a flow (blocking file I/O: call it from a thread)."""
        path = self.path_of(name)
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached and cached[0] == stamp:
                return cached[1]
            try:
                flow = load_flow(path)
            except FlowFileError as exc:
                if cached is None:
                    raise
                logger.error(f"{path} changed but is invalid; still serving version "
                             f"{cached[1].version}:\n{exc}")
                self._cache[path] = (stamp, cached[1])
                return cached[1]
            if cached:
                logger.info(f"flow {flow.spec.name}: new version {flow.version} for new calls")
            self._cache[path] = (stamp, flow)
            return flow
