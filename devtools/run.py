"""The run command: the whole product on one machine, on embedded defaults.

Starts Postgres and Redis (unless DATABASE_URL / REDIS_URL are set), a local mail catcher,
migrates, loads demo data, then runs the Procfile's web, worker and beat under honcho.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from email import message_from_bytes
from pathlib import Path

from devtools.embedded import ensure_services, free_port

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".local" / "run"


class MailboxHandler:
    """Keeps every message the product sends as an .eml file and prints its subject."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.count = len(list(directory.glob("*.eml")))

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        path = self.directory / f"{self.count:05d}.eml"
        path.write_bytes(envelope.original_content or envelope.content)
        subject = message_from_bytes(envelope.original_content or envelope.content)["Subject"]
        print(f"mail    | to {', '.join(envelope.rcpt_tos)}: {subject} ({path.name})", flush=True)
        return "250 OK"


def start_mail_catcher(port: int):
    from aiosmtpd.controller import Controller
    controller = Controller(MailboxHandler(STATE / "mail"), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


def local_secret_key(path: Path) -> str:
    """A random SECRET_KEY for this checkout's local run, kept so tokens survive restarts."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def main() -> int:
    from honcho.environ import parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    env = dict(os.environ)
    env.update(ensure_services(STATE, stop_at_exit=True))
    mail_port = int(env.get("MAIL_PORT") or free_port())
    env.setdefault("MAIL_SERVER", "127.0.0.1")
    env["MAIL_PORT"] = str(mail_port)
    env.setdefault("PORT", "5000")
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{env['PORT']}")
    env.setdefault("HOST", "127.0.0.1")
    if not env.get("SECRET_KEY"):
        env["SECRET_KEY"] = local_secret_key(STATE / "secret-key")
    env.setdefault("BEAT_SCHEDULE_FILE", str(STATE / "beat-schedule"))
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    mail = start_mail_catcher(mail_port)

    flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "db", "upgrade"], env=env, cwd=ROOT, check=True)
    seeded = subprocess.run([*flask, "seed-demo"], env=env, cwd=ROOT, check=True,
                            capture_output=True, text=True)
    demo = json.loads(seeded.stdout.strip().splitlines()[-1])
    base = env["PUBLIC_BASE_URL"]
    print(f"""
==============================================================================
 Escalations is starting.
   Queue page:     {base}/queue
   API:            {base}/api/v1   (OpenAPI: {base}/api/v1/openapi.json)
   Health:         {base}/readyz
   Demo logins:    {', '.join(u['email'] for u in demo['users'])}
                   password: {demo['password']}
   Mail catcher:   smtp://127.0.0.1:{mail_port}, messages saved in {STATE / 'mail'}
   Postgres:       {env['DATABASE_URL']}
   Redis:          {env['REDIS_URL']}
 Ctrl-C stops everything.
==============================================================================
""", flush=True)

    procfile = parse_procfile((ROOT / "Procfile").read_text())
    manager = Manager(Printer(sys.stdout))
    from webapp.config import Config
    queues = Config.from_env(env=env)
    for name in ("CELERY_QUEUE", "CELERY_PSA_QUEUE", "CELERY_AI_QUEUE"):
        env.setdefault(name, queues[name])   # the Procfile's worker roles read them
    # prometheus_client's multiprocess directory, one for the whole set (webapp/metrics.py):
    # web's /metrics counts every gunicorn worker and the Celery workers too; emptied at start
    metrics_dir = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(STATE / "metrics")))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    for name in ("web", "worker", "psa_worker", "ai_worker", "beat"):
        manager.add_process(name, procfile.processes[name], cwd=str(ROOT), env=env)
    try:
        manager.loop()
    finally:
        mail.stop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
