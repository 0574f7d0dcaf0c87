"""Fixtures: real Postgres and Redis (given or embedded), a private database and Redis db per
run, the app, a client, tenants with users of every role (built by tests/factories.py), a local
PSA server, and a real Celery worker process, on the run's Redis db or, with
TEST_BROKER=rabbitmq, on a RabbitMQ virtual host of the run's own (tests/servers/rabbitmq.py)."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis as redis_lib
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url

if TYPE_CHECKING:
    from tests.factories import Tenant

ROOT = Path(__file__).resolve().parent.parent
TEST_PASSWORD = "correct-horse-battery"
FAST_KDF = {"PASSWORD_HASH_TIME_COST": "1", "PASSWORD_HASH_MEMORY_KIB": "8192"}


@pytest.fixture(scope="session")
def service_urls() -> dict[str, str]:
    """The servers given in DATABASE_URL / REDIS_URL, or real ones started from PyPI packages."""
    from devtools.embedded import ensure_services
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
    for index in range(1, 15):  # db 15 is the PSA rate-limit tests' own
        lock = f"esc:test-db-lock:{index}"
        if control.set(lock, os.getpid(), nx=True, ex=3600):
            url = f"{base}/{index}"
            redis_lib.Redis.from_url(url).flushdb()
            yield url
            redis_lib.Redis.from_url(url).flushdb()
            control.delete(lock)
            return
    raise RuntimeError("no free Redis database for this test run")


def chosen_broker() -> str:
    """TEST_BROKER: `redis` (the default) or `rabbitmq` (at TEST_RABBITMQ_URL)."""
    kind = (os.environ.get("TEST_BROKER") or "redis").strip().lower()
    if kind not in ("redis", "rabbitmq"):
        raise pytest.UsageError(f"TEST_BROKER={kind!r}: expected redis or rabbitmq")
    return kind


@pytest.fixture(scope="session")
def broker_url(redis_url):
    """The run's Celery broker: its Redis db, or with TEST_BROKER=rabbitmq a RabbitMQ virtual
    host of its own (a RabbitMQ that cannot be reached is an error, never a skip)."""
    if chosen_broker() == "redis":
        yield redis_url
        return
    from tests.servers.rabbitmq import DEFAULT_URL, run_vhost
    with run_vhost(os.environ.get("TEST_RABBITMQ_URL") or DEFAULT_URL) as url:
        yield url


def purge_queues(broker: str, queues) -> None:
    """Empty these queues of a broker: Redis lists, or RabbitMQ queues."""
    from webapp.config import broker_is_amqp
    queues = list(queues)
    if not queues:
        return
    if broker_is_amqp(broker):
        from tests.servers.rabbitmq import purge
        purge(broker, queues)
    else:
        redis_lib.Redis.from_url(broker).delete(*queues)


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server (aiosmtpd) on loopback for the whole run."""
    from tests.servers.smtp import SmtpServer
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def psa_server():
    """A fresh local PSA server speaking all three APIs, with tickets 1001 and 1002."""
    from tests.servers.psa import PsaServer
    with PsaServer() as server:
        yield server


@pytest.fixture(scope="session")
def app_env(database_url, redis_url, broker_url, smtp_server) -> dict[str, str]:
    """The environment the app's processes (test app, web, worker) all run with in tests."""
    return {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": broker_url, "SECRET_KEY": "test-secret",
            "PUBLIC_BASE_URL": "http://escalations.test", **FAST_KDF,
            "MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp_server.port), "MAIL_TIMEOUT": "3",
            "DELIVERY_LEASE_SECONDS": "6", "DELIVERY_BACKOFF_SCALE": "0.02",
            "CELERY_VISIBILITY_TIMEOUT": "30", "PSA_WAIT_FOR_ASSESSMENT_SECONDS": "10",
            "PSA_TIMEOUT": "2", "AI_TIMEOUT": "2",
            # tests build many apps, and each keeps its idle connections: a small pool each
            # keeps the run under the server's max_connections (bursts still overflow)
            "DB_POOL_SIZE": "2",
            "PSA_ALLOW_PRIVATE_ADDRESSES": "true"}  # the PSA servers of the tests are on loopback


def app_config(env: dict[str, str], **overrides) -> dict:
    """Flask config for a test app built from the same environment as the worker's."""
    from webapp.config import Config
    return Config.from_env(overrides={"TESTING": True, **overrides}, env=env)


@pytest.fixture(scope="session")
def app(app_env):
    from flask_migrate import upgrade

    from webapp import create_app
    app = create_app(app_config(app_env))
    with app.app_context():
        upgrade()
    return app


_engines_used: weakref.WeakSet = weakref.WeakSet()


@event.listens_for(Engine, "engine_connect")
def _remember_engine(connection) -> None:
    _engines_used.add(connection.engine)


@pytest.fixture(autouse=True)
def close_idle_connections():
    """Tests build apps of their own (each with a pool); once a test is over, the idle
    connections of every engine it used are closed, so the run stays well under the
    server's max_connections however many apps it made."""
    yield
    for engine in list(_engines_used):
        engine.dispose()
    _engines_used.clear()


@pytest.fixture(autouse=True)
def clean_state(request):
    """Each test starts from empty tables, no app keys in Redis and empty run queues."""
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    from webapp.extensions import db
    from webapp.redis_client import get_redis
    with app.app_context():
        db.session.remove()
        empty_tables(db)
        r = get_redis()
        # psa:* too: a PSA server of a later test may get this one's port, and a Halo token or
        # rate budget cached for this one would then be taken for its
        keys = [*r.scan_iter("esc:*", count=1000), *r.scan_iter("psa:*", count=1000),
                "celery", "psa", "ai", "unacked", "unacked_index"]
        if keys:
            r.delete(*keys)
        if app.config["CELERY_BROKER_URL"] != app.config["REDIS_URL"]:
            purge_queues(app.config["CELERY_BROKER_URL"], (
                app.config["CELERY_QUEUE"], app.config["CELERY_PSA_QUEUE"],
                app.config["CELERY_AI_QUEUE"]))


def empty_tables(db, attempts: int = 5) -> None:
    """Delete every row, children first; a worker finishing a task may hold row locks, so a
    deadlock is retried. Ids keep growing across tests, so a stale task never meets a new row."""
    from sqlalchemy.exc import OperationalError
    for attempt in range(attempts):
        try:
            with db.engine.begin() as conn:
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                for table in reversed(db.metadata.sorted_tables):
                    conn.execute(table.delete())
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db_session(app):
    from webapp.extensions import db
    with app.app_context():
        yield db.session
        db.session.remove()


@pytest.fixture
def make_tenant(app, client):
    """Create tenants: owner, admin, engineer, viewer (plus extra engineers), each logged in."""
    from tests.factories import create_tenant
    numbers = iter(range(1, 10_000))

    def make(name: str = "Acme MSP", extra_engineers: int = 0) -> Tenant:
        return create_tenant(app, name, extra_engineers, numbers)

    return make


@pytest.fixture
def tenant(make_tenant) -> Tenant:
    return make_tenant("Acme MSP")


@pytest.fixture
def other_tenant(make_tenant) -> Tenant:
    return make_tenant("Globex IT")


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, message=""):
    """Poll until predicate() is truthy; returns its value or fails the test. `message` may be
    a callable, asked only on failure (to show the state things were left in)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if callable(message):
                message = message()
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


class WorkerProcess:
    """A real `celery worker` process on the run's broker, as the Procfile runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 4,
                 queue: str = "celery", roles: tuple[str, ...] = ("default", "psa", "ai")):
        """`roles`: which of the queues of `queue` it consumes (the default one, PSA, AI);
        all by default, as one worker standing in for the Procfile's three roles."""
        from webapp.config import queue_name
        self.env, self.log_path, self.concurrency = env, log_path, concurrency
        self.queue, self.roles = queue, roles
        self.queues = [queue if role == "default" else queue_name(queue, role) for role in roles]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "--quiet", "-A", "wsgi:celery_app", "worker",
             "--pool=threads", f"--concurrency={self.concurrency}", "--loglevel=INFO",
             "-Q", ",".join(self.queues), "-n", f"{self.queues[0]}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env={**os.environ, **self.env, "CELERY_QUEUE": self.queue},
            stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        from tests.servers import stop_process
        stop_process(self.process)
        if self.process:
            self.log.close()


def artifacts_dir() -> Path:
    path = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def celery_worker_process(app, app_env):
    """A worker process for the whole run; tests enqueue through the app's Celery."""
    worker = WorkerProcess(app_env, artifacts_dir() / "celery-worker.log")
    worker.start()
    _wait_worker_ready(app)
    yield worker
    worker.stop()


@pytest.fixture
def private_worker(app_env):
    """Start workers on a queue of their own (with their own settings), and an app that
    enqueues to that queue; the run's shared worker never sees these tasks."""
    from webapp import create_app
    started: list[WorkerProcess] = []

    def start(queue: str, start_now: bool = True, **env: str):
        worker_env = {**app_env, **env, "CELERY_QUEUE": queue}
        queue_app = create_app(app_config(worker_env))
        worker = WorkerProcess(worker_env, artifacts_dir() / f"celery-{queue}.log",
                               queue=queue)
        started.append(worker)
        if start_now:
            worker.start()
            _wait_worker_ready(queue_app)
        return worker, queue_app

    yield start
    for worker in started:
        worker.stop()
        purge_queues(app_env["CELERY_BROKER_URL"], worker.queues)


def _wait_worker_ready(app, timeout: float = 30.0) -> None:
    from webapp.redis_client import get_redis, key
    r = get_redis(app)
    r.delete(key("worker", "heartbeat"))
    app.extensions["celery"].send_task("maintenance.heartbeat")
    wait_for(lambda: r.get(key("worker", "heartbeat")), timeout, 0.1, "the worker to start")
