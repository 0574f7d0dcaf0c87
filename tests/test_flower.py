"""Flower, the Procfile's optional `flower:` role, starts on the app's broker and sees the
worker."""
import os
import subprocess
import sys

import httpx
from honcho.environ import parse_procfile

from devtools.embedded import free_port
from tests.conftest import ROOT, artifacts_dir, wait_for


def test_the_flower_role_answers_and_lists_the_worker(app_env, celery_worker_process):
    command = parse_procfile((ROOT / "Procfile").read_text()).processes["flower"]
    port = free_port()
    env = {**os.environ, **app_env, "FLOWER_PORT": str(port), "FLOWER_ADDRESS": "127.0.0.1",
           "FLOWER_UNAUTHENTICATED_API": "true",   # loopback only; production sets auth
           "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    log = open(artifacts_dir() / "flower.log", "w")
    # the line as honcho runs it: through the shell, which expands the ${VAR:-default}s
    process = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def healthy():
            try:
                return httpx.get(base + "/healthcheck", timeout=1).status_code == 200
            except httpx.TransportError:
                return False
        wait_for(healthy, 30, 0.2, "Flower's /healthcheck")
        workers = wait_for(lambda: httpx.get(base + "/api/workers?refresh=1",
                                             timeout=10).json(), 30, 0.5, "Flower's worker list")
        assert any(name.startswith("celery@") for name in workers), workers
    finally:
        process.terminate()
        process.wait(15)
        log.close()
