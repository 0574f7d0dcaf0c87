"""The web role as the Procfile runs it: a real gunicorn (gevent) process on loopback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


class WebProcess:
    """`gunicorn -c webapp/gunicorn_conf.py wsgi:app` on a free port; it can be stopped and
    started again on the same port, which is how a test cuts live streams."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.env, self.log_path = env, log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = None

    def start(self, timeout: float = 30.0) -> WebProcess:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "webapp/gunicorn_conf.py", "wsgi:app"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, "HOST": "127.0.0.1", "PORT": str(self.port),
                 "WEB_CONCURRENCY": self.env.get("WEB_CONCURRENCY", "1")})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start; see {self.log_path}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer /healthz within {timeout}s")

    def stop(self) -> None:
        # SIGINT is gunicorn's quick shutdown: open streams would hold a graceful one for 10 s
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.log:
            self.log.close()
            self.log = None

    def restart(self) -> None:
        self.stop()
        self.start()
