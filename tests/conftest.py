"""Fixtures: real Postgres and Redis (given or embedded), a private database and Redis db per
run, the app, a client, tenants with users of every role, and a real Celery worker process."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
TEST_PASSWORD = "correct-horse-battery"
FAST_KDF = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8192"}


@pytest.fixture(scope="session")
def service_urls() -> dict[str, str]:
    """The servers given in DATABASE_URL / REDIS_URL, or real ones started from PyPI packages."""
    from webapp.embedded import ensure_services
    return ensure_services(ROOT / ".local" / "test-services")


@pytest.fixture(scope="session")
def database_url(service_urls):
    """A fresh database of this run, migrated to head, dropped at the end."""
    from webapp.config import psycopg2_url
    base = make_url(psycopg2_url(service_urls["DATABASE_URL"]))
    name = f"esc_test_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url(service_urls):
    """A Redis logical database reserved for this run, so parallel runs don't meet."""
    base = service_urls["REDIS_URL"].rsplit("/", 1)[0]
    control = redis_lib.Redis.from_url(base + "/0")
    for index in range(1, 16):
        lock = f"esc:test-db-lock:{index}"
        if control.set(lock, os.getpid(), nx=True, ex=3600):
            url = f"{base}/{index}"
            redis_lib.Redis.from_url(url).flushdb()
            yield url
            redis_lib.Redis.from_url(url).flushdb()
            control.delete(lock)
            return
    raise RuntimeError("no free Redis database for this test run")


@pytest.fixture(scope="session")
def app_env(database_url, redis_url) -> dict[str, str]:
    """The environment the app's processes (web, worker) run with in tests."""
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url, "SECRET_KEY": "test-secret",
            "PUBLIC_BASE_URL": "http://escalations.test", **FAST_KDF}


@pytest.fixture(scope="session")
def app(app_env):
    from flask_migrate import upgrade

    from webapp import create_app
    config = {"TESTING": True, "SQLALCHEMY_DATABASE_URI": app_env["DATABASE_URL"],
              "REDIS_URL": app_env["REDIS_URL"], "CELERY_BROKER_URL": app_env["REDIS_URL"],
              "SECRET_KEY": app_env["SECRET_KEY"], "PUBLIC_BASE_URL": app_env["PUBLIC_BASE_URL"],
              "PASSWORD_HASH_TIME_COST": 1, "PASSWORD_HASH_MEMORY_KIB": 8192}
    app = create_app(config)
    with app.app_context():
        upgrade()
    return app


@pytest.fixture(autouse=True)
def clean_state(request):
    """Each test starts from empty tables and no app keys in Redis."""
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    from webapp.extensions import db
    from webapp.redis_client import get_redis
    with app.app_context():
        db.session.remove()
        tables = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
        with db.engine.begin() as conn:
            # ids keep growing across tests, so a stale task never meets a new row
            conn.execute(text(f"TRUNCATE {tables} CASCADE"))
        r = get_redis()
        keys = list(r.scan_iter("esc:*", count=1000)) + ["celery"]
        if keys:
            r.delete(*keys)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db_session(app):
    from webapp.extensions import db
    with app.app_context():
        yield db.session
        db.session.remove()


@dataclass
class Tenant:
    """An account with one user per role; `headers(role)` logs that user in."""
    account_id: int
    users: dict[str, object] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, role: str = "owner") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def make_tenant(app, client):
    """Create tenants: owner, admin, engineer, viewer (plus extra engineers), each logged in."""
    from webapp.auth import hash_password, issue_token
    from webapp.extensions import db
    from webapp.models import Account, User

    counter = iter(range(1, 10_000))

    def make(name: str = "Acme MSP", extra_engineers: int = 0) -> Tenant:
        with app.app_context():
            account = Account(name=name)
            db.session.add(account)
            db.session.flush()
            tenant = Tenant(account_id=account.id)
            roles = ["owner", "admin", "engineer", "viewer"] + [
                f"engineer{i}" for i in range(2, extra_engineers + 2)]
            password_hash = hash_password(TEST_PASSWORD)
            for label in roles:
                n = next(counter)
                user = User(account_id=account.id, email=f"{label}{n}@{account.id}.example",
                            name=f"{label.title()} {n}", role=label.rstrip("0123456789"),
                            password_hash=password_hash)
                db.session.add(user)
                db.session.flush()
                token, _ = issue_token(user)
                tenant.users[label] = {"id": user.id, "email": user.email, "name": user.name}
                tenant.tokens[label] = token
            db.session.commit()
            return tenant

    return make


@pytest.fixture
def tenant(make_tenant) -> Tenant:
    return make_tenant("Acme MSP")


@pytest.fixture
def other_tenant(make_tenant) -> Tenant:
    return make_tenant("Globex IT")


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, message: str = ""):
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A real `celery worker` process on the Redis broker, as the Procfile runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 4):
        self.env, self.log_path, self.concurrency = env, log_path, concurrency
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "wsgi:celery_app", "worker",
             "--pool=threads", f"--concurrency={self.concurrency}", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def worker_env(app_env, tmp_path_factory) -> dict[str, str]:
    return dict(app_env)


@pytest.fixture(scope="session")
def celery_worker_process(app, worker_env, tmp_path_factory):
    """A worker process for the whole run; tests enqueue through the app's Celery."""
    log_dir = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
    log_dir.mkdir(parents=True, exist_ok=True)
    worker = WorkerProcess(worker_env, log_dir / "celery-worker.log")
    worker.start()
    _wait_worker_ready(app)
    yield worker
    worker.stop()


def _wait_worker_ready(app, timeout: float = 30.0) -> None:
    from webapp.redis_client import get_redis, key
    r = get_redis(app)
    r.delete(key("worker", "heartbeat"))
    app.extensions["celery"].send_task("maintenance.heartbeat")
    wait_for(lambda: r.get(key("worker", "heartbeat")), timeout, 0.1, "the worker to start")
