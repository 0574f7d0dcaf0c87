"""The README's run command brings up the product: web, worker and beat, demo data, a mail
catcher; a demo login works and the API answers."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from devtools.embedded import free_port
from tests.conftest import ROOT, wait_for


def test_the_run_command_serves_the_demo_until_interrupted(app, app_env):
    port, mail_port = free_port(), free_port()
    env = {**os.environ, **app_env, "PORT": str(port), "MAIL_PORT": str(mail_port),
           "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "CELERY_QUEUE": "run-command",
           "BEAT_SCHEDULE_FILE": os.path.join(tempfile.mkdtemp(), "beat-schedule")}
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "devtools.run"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")

    try:
        wait_for(lambda: "Ctrl-C stops everything" in output(), 90, 0.2,
                 message=lambda: "the run command to start:\n" + output()[-3000:])
        banner = output()
        assert f"http://127.0.0.1:{port}/queue" in banner
        password = re.search(r"password: (\S+)", banner)[1]
        email = re.search(r"Demo logins:\s+([^,\s]+)", banner)[1]
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as http:
            def ready():
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.HTTPError:
                    return False
            wait_for(ready, 60, 0.2, message=lambda: "/readyz:\n" + output()[-3000:])
            login = http.post("/api/v1/auth/login", json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            token = login.json()["access_token"]
            created = http.post("/api/v1/ai-sessions", headers={"Authorization": f"Bearer {token}"},
                                json={"title": "VPN drops hourly", "problem": "Rekey mismatch"})
            assert created.status_code == 201, created.text
        for role in ("web", "worker", "beat"):
            assert f"{role} started" in output(), output()[-3000:]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)   # what Ctrl-C sends
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    assert process.returncode in (0, 130), output()[-3000:]   # 130: stopped by Ctrl-C
    time.sleep(0.5)
    with httpx.Client(timeout=2) as http:     # everything it started has stopped
        try:
            http.get(f"http://127.0.0.1:{port}/healthz")
            stopped = False
        except httpx.HTTPError:
            stopped = True
    assert stopped, "the web process outlived the run command"
