"""The beat role as the Procfile runs it: a real `celery beat` process."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, artifacts_dir
from tests.servers import stop_process


class BeatProcess:
    """`celery beat` sending to the queue its env names (CELERY_QUEUE): one test's own."""

    def __init__(self, env: dict[str, str], name: str):
        self.log_path = artifacts_dir() / f"celery-beat-{name}.log"
        self.schedule = artifacts_dir() / f"celery-beat-{name}.schedule"
        self.env, self.process = env, None

    def start(self) -> None:
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "--quiet", "-A", "wsgi:celery_app", "beat",
             "--loglevel=INFO", f"--schedule={self.schedule}"],
            cwd=ROOT, env={**self.env}, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
