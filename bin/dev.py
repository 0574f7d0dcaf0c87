#!/usr/bin/env python3
"""Set up the project's virtualenv, then run the product or its tests.

    python3 bin/dev.py run     # Postgres, Redis, web, worker, beat, mail catcher, demo data
    python3 bin/dev.py test    # the whole suite on Redis, then the pipeline tests on RabbitMQ
    python3 bin/dev.py test ARGS...   # one pass, pytest ARGS, on TEST_BROKER (default redis)
    python3 bin/dev.py drills  # the fault drills (-m drills), which `test` leaves out

Standard library only: this is what a fresh machine with Python 3.11 runs first.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


def ensure_virtualenv() -> None:
    """Create .venv and install the pinned dependencies when pyproject.toml changed."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{digest}"
    if stamp.exists():
        return
    if not PYTHON.exists():
        print("creating virtualenv in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing dependencies (first run takes a few minutes) ...", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-e", f"{ROOT}[dev,ops,test,bench]"], check=True, cwd=ROOT)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def ensure_browser() -> None:
    """The browser tests drive Chromium: Debian's when it is there (or can be installed as
    root), else the one Playwright downloads for this user."""
    if os.path.exists("/usr/bin/chromium"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing Debian's chromium for the browser tests ...", flush=True)
        subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True,
                       check=False, stdout=subprocess.DEVNULL)
        if os.path.exists("/usr/bin/chromium"):
            return
    print("installing Playwright's chromium for the browser tests ...", flush=True)
    subprocess.run([str(PYTHON), "-m", "playwright", "install", "chromium"], check=False)


def run_pass(command: list[str], **env: str) -> int:
    """Run one pytest pass to its end: a Ctrl-C reaches pytest too, which then tears down
    its workers and servers before it exits."""
    process = subprocess.Popen(command, env={**os.environ, **env})
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def rabbitmq_problem(url: str) -> str | None:
    """Why RabbitMQ at `url` cannot be reached, or None when it takes a connection."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 3).close()
        return None
    except OSError as error:
        return str(error)


def run_test_passes(pytest: list[str]) -> int:
    """The whole suite on Redis, then the pipeline tests (-m pipeline) again on RabbitMQ. In CI
    (CI=true) a RabbitMQ that cannot be reached fails the run; elsewhere the second pass is
    skipped with a note."""
    print("== pass 1 of 2: the whole suite, Redis broker", flush=True)
    first = run_pass([*pytest, "-m", "not drills"], TEST_BROKER="redis")
    if first == 2:   # interrupted
        return first
    url = os.environ.get("TEST_RABBITMQ_URL") or RABBITMQ_URL
    where = f"{urlsplit(url).hostname}:{urlsplit(url).port or 5672}"
    problem = rabbitmq_problem(url)
    if problem is not None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            print(f"== pass 2 of 2 FAILED: RabbitMQ at {where} cannot be reached ({problem}); "
                  "CI runs the pipeline tests on it (set TEST_RABBITMQ_URL, or start it)",
                  file=sys.stderr, flush=True)
            return first or 1
        print(f"== pass 2 of 2 SKIPPED: no RabbitMQ at {where} ({problem}), so the pipeline "
              "tests did not run on it; start one (`rabbitmq-server -detached`) or set "
              "TEST_RABBITMQ_URL. In CI this fails the run.", flush=True)
        return first
    print(f"== pass 2 of 2: the pipeline tests, RabbitMQ broker at {where}", flush=True)
    second = run_pass([*pytest, "-m", "pipeline"], TEST_BROKER="rabbitmq",
                      TEST_RABBITMQ_URL=url)
    print(f"== pass 1 (Redis): {'passed' if first == 0 else f'FAILED (exit {first})'}; "
          f"pass 2 (RabbitMQ): {'passed' if second == 0 else f'FAILED (exit {second})'}",
          flush=True)
    return first or second


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "drills"):
        print(__doc__)
        return 2
    ensure_virtualenv()
    os.chdir(ROOT)
    if argv[0] == "drills":   # set up as for `test`; the drills start their own servers
        command = [str(PYTHON), "-m", "pytest", "-m", "drills", *argv[1:]]
    elif argv[0] == "test":
        ensure_browser()
        if len(argv) == 1:
            return run_test_passes([str(PYTHON), "-m", "pytest"])
        # arguments: one pass with them, on the broker TEST_BROKER names (redis by default)
        command = [str(PYTHON), "-m", "pytest", *argv[1:]]
    else:
        command = [str(PYTHON), "-m", "devtools.run", *argv[1:]]
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
