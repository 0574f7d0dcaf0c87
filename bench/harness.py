"""What the benches share: a fresh database, a Redis logical db of their own, the real web and
worker processes as the Procfile runs them, an SMTP sink in a process of its own, per-process
CPU accounting, percentiles and the results file. Not run by CI."""
from __future__ import annotations

import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis as redis_lib
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.embedded import free_port  # noqa: E402
from webapp.config import psycopg2_url  # noqa: E402

# the code the web and worker processes run: this checkout, or another one (BENCH_CODE_ROOT)
# to measure a before/after pair with the same bench
CODE_ROOT = Path(os.environ.get("BENCH_CODE_ROOT") or ROOT).resolve()
RESULTS_DIR = ROOT / "bench" / "results"
LOG_DIR = ROOT / ".local" / "bench-logs"
BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FAST_KDF = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8192"}


# ---- figures ----------------------------------------------------------------------------------

def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def summary_ms(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0}
    ms = [value * 1000 for value in seconds]
    return {"count": len(ms), "p50": round(percentile(ms, 0.50), 2),
            "p95": round(percentile(ms, 0.95), 2), "p99": round(percentile(ms, 0.99), 2),
            "max": round(max(ms), 2), "mean": round(statistics.fmean(ms), 2)}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "code_root": str(CODE_ROOT)}


def write_results(name: str, results: dict) -> Path:
    # other work on this 2-core machine shows in the load: a figure taken under load is noise
    results.setdefault("machine", {})["load_avg_at_end"] = [
        round(x, 2) for x in os.getloadavg()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


# ---- the world --------------------------------------------------------------------------------

def base_urls() -> tuple[str, str]:
    """The Postgres and Redis servers to use: DATABASE_URL / REDIS_URL (their server only; a
    database and a logical db of the bench's own are taken on them), else the loopback ones."""
    return (os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL)


@contextmanager
def fresh_database(base_url: str, env: dict[str, str] | None = None):
    """CREATE DATABASE esc_bench_<random>, migrate it with `flask --app wsgi db upgrade`,
    yield its URL; DROP it at the end, whatever happened."""
    base = make_url(psycopg2_url(base_url))
    name = f"esc_bench_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=CODE_ROOT,
                       env={"SECRET_KEY": "bench-secret", **os.environ, **(env or {}),
                            "DATABASE_URL": url}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_db(base_url: str, preferred: int = 13):
    """A Redis logical db nobody else uses: taken with the lock the test suite takes, so a test
    run started meanwhile picks another one; flushed before and after."""
    base = base_url.rsplit("/", 1)[0]
    control = redis_lib.Redis.from_url(base + "/0")
    for index in [preferred] + [i for i in (12, 11, 10, 9) if i != preferred]:
        lock = f"esc:test-db-lock:{index}"
        if control.set(lock, f"bench-{os.getpid()}", nx=True, ex=3600):
            url = f"{base}/{index}"
            redis_lib.Redis.from_url(url).flushdb()
            try:
                yield url
            finally:
                redis_lib.Redis.from_url(url).flushdb()
                control.delete(lock)
            return
    raise RuntimeError("no free Redis logical database")


class Process:
    """A child process with its own log; stopped by its pid only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(argv, cwd=CODE_ROOT, env={**os.environ, **env},
                                        stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def start_gunicorn(env: dict[str, str]) -> tuple[Process, str]:
    """`gunicorn -c webapp/gunicorn_conf.py wsgi:app` (gevent, one worker) on a free port."""
    port = free_port()
    web = Process("gunicorn", [str(BIN / "gunicorn"), "-c", "webapp/gunicorn_conf.py",
                               "wsgi:app"],
                  {**env, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "1"})
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not web.alive():
            raise RuntimeError(f"gunicorn exited; see {web.log_path}")
        try:
            if httpx.get(base_url + "/healthz", timeout=0.5).status_code == 200:
                return web, base_url
        except httpx.TransportError:
            time.sleep(0.1)
    web.stop()
    raise RuntimeError(f"gunicorn did not start; see {web.log_path}")


def start_worker(env: dict[str, str], redis_url: str, concurrency: int | None = None,
                 loglevel: str = "INFO", name: str = "celery-worker",
                 queues: str | None = None) -> Process:
    """The Procfile's worker: `celery -A wsgi:celery_app worker --pool=threads`, with the
    Procfile's default concurrency (4) unless given; returns once it runs tasks."""
    argv = [str(BIN / "celery"), "--quiet", "-A", "wsgi:celery_app", "worker",
            f"--loglevel={loglevel}",
            f"--concurrency={concurrency or int(env.get('WORKER_CONCURRENCY', '4'))}",
            "--pool=threads", "-n", f"{name}@%h", *(["-Q", queues] if queues else [])]
    worker = Process(name, argv, env)
    from celery import Celery
    r = redis_lib.Redis.from_url(redis_url)
    r.delete("esc:worker:heartbeat")
    sender = Celery("bench", broker=env.get("CELERY_BROKER_URL", redis_url))
    sender.conf.broker_connection_timeout = 2
    sender.send_task("maintenance.heartbeat")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not worker.alive():
            raise RuntimeError(f"the worker exited; see {worker.log_path}")
        if r.get("esc:worker:heartbeat"):
            sender.close()
            return worker
        time.sleep(0.1)
    worker.stop()
    raise RuntimeError(f"the worker did not start; see {worker.log_path}")


def start_beat(env: dict[str, str]) -> Process:
    """The Procfile's beat: `celery -A wsgi:celery_app beat`, its schedule file in the logs."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return Process("celery-beat", [str(BIN / "celery"), "--quiet", "-A", "wsgi:celery_app",
                                   "beat", "--loglevel=WARNING",
                                   f"--schedule={LOG_DIR / 'celery-beat.schedule'}"], env)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# ---- the SMTP sink ----------------------------------------------------------------------------

class SmtpSink:
    """A real aiosmtpd server in a process of its own (so it takes no GIL from the clients),
    reporting each accepted message as (accepted at [time.time()], handoff id, recipient)."""

    def __init__(self):
        self.port = free_port()
        self.accepted: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "smtp_sink.py"), str(self.port)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        first = self.process.stdout.readline()
        if not first.startswith("ready"):
            raise RuntimeError(f"SMTP sink did not start: {first!r}")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            at, handoff, rcpt = line.split()
            with self.changed:
                self.accepted.append((float(at), int(handoff), rcpt))
                self.changed.notify_all()

    def count(self, handoff_id: int | None = None) -> int:
        with self.lock:
            if handoff_id is None:
                return len(self.accepted)
            return sum(1 for _, h, _ in self.accepted if h == handoff_id)

    def wait_for(self, handoff_id: int, count: int, timeout: float) -> list[float]:
        """Acceptance times of the handoff's messages once there are `count` (or at timeout)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                times = sorted(at for at, h, _ in self.accepted if h == handoff_id)
                remaining = deadline - time.monotonic()
                if len(times) >= count or remaining <= 0:
                    return times
                self.changed.wait(min(remaining, 0.5))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


# ---- CPU accounting ---------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _pids_named(prefix: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith(prefix):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds used over an interval by named groups of processes; postgres and redis are
    counted whole (other users of them on this machine included)."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    def _snapshot(self) -> dict[str, dict[int, float]]:
        groups = {**self.groups, "postgres (all)": _pids_named("postgres"),
                  "redis-server": _pids_named("redis-server")}
        return {name: {pid: _cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}

    def start(self) -> None:
        self.began, self.wall = self._snapshot(), time.monotonic()

    def stop(self) -> dict:
        # processes that exited during the interval are missed; new ones are counted whole
        end, wall = self._snapshot(), time.monotonic() - self.wall
        used = {name: sum(cpu - self.began.get(name, {}).get(pid, 0.0)
                          for pid, cpu in pids.items())
                for name, pids in end.items()}
        return {"wall_s": round(wall, 2),
                "cpu_s": {name: round(value, 2) for name, value in used.items()},
                "cores_busy": {name: round(value / wall, 2) for name, value in used.items()}}


# ---- profiling -------------------------------------------------------------------------------

class Profiler:
    """py-spy (PYSPY or on PATH) recording processes into DIR/<name>.txt as collapsed stacks
    (one line per stack: frames;...;frames count); only threads holding the GIL are sampled,
    so the profile shows where the process spends its CPU, not where it waits."""

    def __init__(self, directory: str, targets: dict[str, int], rate: int = 200,
                 wall: bool = False):
        self.directory, self.targets, self.rate = Path(directory), targets, rate
        # wall: every thread, waiting or not (--idle), with the thread ids, for where time goes
        self.mode = ["--idle", "--threads"] if wall else ["--gil"]
        self.processes: list[subprocess.Popen] = []

    def start(self) -> None:
        import shutil
        spy = (os.environ.get("PYSPY") or shutil.which("py-spy")
               or str(Path(sys.executable).parent / "py-spy"))   # the bench extra's
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.targets.items():
            self.processes.append(subprocess.Popen(
                [spy, "record", "-p", str(pid), "-r", str(self.rate), "--format", "raw", *self.mode,
                 "-o", str(self.directory / f"{name}.txt"), "--nonblocking", "-d", "600"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let py-spy attach

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


# ---- seeding ----------------------------------------------------------------------------------

def bench_app(env: dict[str, str]):
    """The application, built in this process from the bench's environment, for seeding."""
    import logging

    from webapp import create_app
    from webapp.config import Config
    app = create_app({**Config.from_env(env=env), "MAIL_SUPPRESS_SEND": True})
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return app


def seed_account(env: dict[str, str], seniors: int, sessions_per_senior: int = 0,
                 messages_per_session: int = 2) -> dict:
    """One account with `seniors` senior users (an owner, an admin, the rest engineers), each
    logged in, and `sessions_per_senior` active sessions owned by each (bulk SQL)."""
    from webapp.auth import hash_password, issue_token
    from webapp.extensions import db
    from webapp.models import Account, User

    app = bench_app(env)
    with app.app_context():
        account = Account(name="Bench MSP")
        db.session.add(account)
        db.session.flush()
        account_id = account.id
        password_hash = hash_password("bench-password")
        users = []
        for number in range(seniors):
            role = "owner" if number == 0 else "admin" if number == 1 else "engineer"
            user = User(account_id=account.id, email=f"senior{number}@{account.id}.bench",
                        name=f"Senior {number}", role=role, password_hash=password_hash)
            db.session.add(user)
            db.session.flush()
            token, _ = issue_token(user)
            users.append({"id": user.id, "token": token,
                          "headers": {"Authorization": f"Bearer {token}"}, "sessions": []})
        db.session.commit()
        if sessions_per_senior:
            for user in users:
                ids = db.session.execute(text(
                    "INSERT INTO ai_sessions (account_id, owner_id, title, problem, status,"
                    " psa_ticket_id, client_name, created_at, updated_at)"
                    " SELECT :account, :owner, 'VPN drops every hour #' || n,"
                    " 'Users at the branch office lose the VPN tunnel about once an hour;"
                    " rekey logs show phase 2 mismatches.', 'active', 'T' || n, 'Contoso',"
                    " now(), now() FROM generate_series(1, :count) AS n RETURNING id"),
                    {"account": account_id, "owner": user["id"],
                     "count": sessions_per_senior}).scalars().all()
                user["sessions"] = sorted(ids)
            if messages_per_session:
                db.session.execute(text(
                    "INSERT INTO session_messages (session_id, role, content, created_at)"
                    " SELECT s.id, CASE WHEN m % 2 = 1 THEN 'engineer' ELSE 'assistant' END,"
                    " 'Step ' || m || ': checked the tunnel and the rekey timers.', now()"
                    " FROM ai_sessions s, generate_series(1, :per) AS m"
                    " WHERE s.account_id = :account"),
                    {"per": messages_per_session, "account": account_id})
            db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return {"account_id": account_id, "users": users}


def seed_tickets(database_url: str, account_id: int) -> list[str]:
    """ConnectWise tickets are numbers: each session gets its own (100000 + its id)."""
    engine = create_engine(psycopg2_url(database_url))
    try:
        with engine.begin() as conn:
            return [str(t) for t in conn.execute(text(
                "UPDATE ai_sessions SET psa_ticket_id = (100000 + id)::text"
                " WHERE account_id = :a RETURNING psa_ticket_id"), {"a": account_id}).scalars()]
    finally:
        engine.dispose()


def delivery_counts(database_url: str) -> dict:
    engine = create_engine(psycopg2_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT channel, status, count(*) FROM deliveries"
                                     " GROUP BY channel, status ORDER BY 1, 2")).all()
    finally:
        engine.dispose()
    return {f"{channel}/{status}": count for channel, status, count in rows}
