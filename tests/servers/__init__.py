"""Real servers and processes the tests start: web, beat, SMTP, PSA, AI, chat, RabbitMQ."""
from __future__ import annotations

import subprocess


def stop_process(process, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
