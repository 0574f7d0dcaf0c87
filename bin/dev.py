#!/usr/bin/env python3
"""Set up the project's virtualenv, then run the product or its tests.

    python3 bin/dev.py run     # Postgres, Redis, web, worker, beat, mail catcher, demo data
    python3 bin/dev.py test    # the whole test suite (extra arguments go to pytest)

Standard library only: this is what a fresh machine with Python 3.11 runs first.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PYTHON = VENV / "bin" / "python"


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
                    "-e", f"{ROOT}[dev,ops,test]"], check=True, cwd=ROOT)
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test"):
        print(__doc__)
        return 2
    ensure_virtualenv()
    os.chdir(ROOT)
    if argv[0] == "test":
        ensure_browser()
        command = [str(PYTHON), "-m", "pytest", *argv[1:]]
    else:
        command = [str(PYTHON), "-m", "devtools.run", *argv[1:]]
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
