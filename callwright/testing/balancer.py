"""A real nginx (Debian's) in front of several workers, as `deploy/nginx` configures it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

PROXY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "callwright-proxy.conf"

CONFIG = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream callwright {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://callwright;
            include {proxy_conf};
        }}
    }}
}}
"""


class Nginx:
    """nginx on `port`, balancing round robin over `upstreams` ("127.0.0.1:8081", ...).

    Use with `with`: it starts, and answers, inside the block.
    """

    def __init__(self, *, upstreams: list[str], port: int, workdir: Path):
        self.upstreams = upstreams
        self.port = port
        self.workdir = workdir
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The balancer's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.workdir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;"
                            for u in self.upstreams)
        conf = self.workdir / "nginx.conf"
        conf.write_text(CONFIG.format(dir=self.workdir, servers=servers, port=self.port,
                                      proxy_conf=PROXY_CONF))
        self._process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=(self.workdir / "stderr.log").open("w"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("nginx exited: "
                                   + (self.workdir / "stderr.log").read_text()[-2000:])
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("nginx did not start listening")

    def __exit__(self, *exc_info) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
