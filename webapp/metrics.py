"""Prometheus metrics: what the processes count, and `GET /metrics` (API.md).

Every process counts into prometheus_client's objects below. With PROMETHEUS_MULTIPROC_DIR set
(gunicorn with more than one worker; Celery workers on the same host), each process writes its
values to files of its own in that directory, and `/metrics` merges the files of every process
(multiprocess mode: the variable must be in the environment before prometheus_client is
imported, so it comes from the process's environment, never from Flask config). Without it,
`/metrics` shows the answering process alone. Queue depths and the age of the oldest due
delivery are read when scraped (ScrapeTimeCollector), never counted.

Label values are only ever names the code defines (endpoints, intents, channels, statuses,
task and queue names): never a tenant's name, an email, a ticket id or a raw path."""
from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import os
import threading
import time

from flask import Flask, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


if multiproc_dir():
    # each process's files are opened when its first value is made; emptying the directory is
    # the job of whatever starts the whole set of processes (devtools/run.py does)
    os.makedirs(multiproc_dir(), exist_ok=True)

# ---- what the processes count -------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "escalations_http_requests", "HTTP requests answered, by Flask endpoint (never the raw "
    "path), method and status; a stream counts when it starts",
    ["endpoint", "method", "status"])
HTTP_LATENCY = Histogram(
    "escalations_http_request_duration_seconds", "Time to the answer's headers, by Flask "
    "endpoint and method (a stream: until it starts)", ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
HANDOFFS_CREATED = Counter(
    "escalations_handoffs_created", "Handoffs written, by intent (escalate, park)", ["intent"])
DELIVERIES_FINISHED = Counter(
    "escalations_deliveries_finished", "Delivery rows a worker settled for good, by channel "
    "and final status (sent, dead, skipped)", ["channel", "status"])
DELIVERY_RETRIES = Counter(
    "escalations_delivery_retries", "Delivery attempts that failed and were scheduled again "
    "(rows going failed), by channel", ["channel"])
DELIVERIES_DEAD = Counter(
    "escalations_deliveries_dead", "Delivery rows that went dead (a permanent error, attempts "
    "used up, or buried by beat after workers died on every attempt), by channel", ["channel"])
TASK_DURATION = Histogram(
    "escalations_task_duration_seconds", "Celery task run time, by task name and final state",
    ["task", "state"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0))
# livesum: the streams of the web processes alive now (gunicorn_conf.child_exit drops the file
# of a worker that exited)
LIVE_STREAMS = Gauge(
    "escalations_live_streams_open", "Live event streams open now",
    multiprocess_mode="livesum")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def never_fails(count):
    """Counting must never fail what it counts (a request, a committed handoff or outcome)."""
    @functools.wraps(count)
    def counting(*args, **kwargs):
        try:
            return count(*args, **kwargs)
        except Exception:
            log.warning("metrics: %s failed", count.__name__, exc_info=True)
            return None
    return counting


@never_fails
def handoff_created(intent: str) -> None:
    HANDOFFS_CREATED.labels(intent=intent).inc()


@never_fails
def delivery_settled(channel: str, status: str) -> None:
    """A delivery row's outcome as recorded (webapp/services/deliveries.py `_settle`)."""
    from webapp.services.deliveries import FINAL, DeliveryStatus
    status = DeliveryStatus(status)
    if status == DeliveryStatus.FAILED:
        DELIVERY_RETRIES.labels(channel=channel).inc()
    elif status in FINAL:
        DELIVERIES_FINISHED.labels(channel=channel, status=str(status)).inc()
        if status == DeliveryStatus.DEAD:
            DELIVERIES_DEAD.labels(channel=channel).inc()


@never_fails
def deliveries_buried(channels) -> None:
    """Rows beat declared dead after their workers died on every attempt."""
    from webapp.services.deliveries import DeliveryStatus
    for channel in channels:
        DELIVERIES_FINISHED.labels(channel=channel, status=str(DeliveryStatus.DEAD)).inc()
        DELIVERIES_DEAD.labels(channel=channel).inc()


@never_fails
def stream_opened() -> None:
    LIVE_STREAMS.inc()


@never_fails
def stream_closed() -> None:
    LIVE_STREAMS.dec()


# ---- read when scraped ----------------------------------------------------------------------

# kombu's Redis transport keeps a queue's messages of priority p > 0 under `<queue>\x06\x16<p>`
_REDIS_PRIORITY_SUFFIXES = ("", *(f"\x06\x16{step}" for step in (3, 6, 9)))
SCRAPE_TIMEOUT_SECONDS = 1.0


def queue_names(app: Flask) -> list[str]:
    return list(dict.fromkeys(app.config[name] for name in (
        "CELERY_QUEUE", "CELERY_PSA_QUEUE", "CELERY_AI_QUEUE")))


def queue_depths(app: Flask) -> dict[str, int]:
    """Messages waiting in each of the app's queues on the broker; a queue that cannot be read
    (broker down, slow, queue not declared yet) is left out."""
    from webapp.config import broker_is_amqp
    url = app.config["CELERY_BROKER_URL"]
    names = queue_names(app)
    if broker_is_amqp(url):
        return _amqp_depths(url, names)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _redis_depths(url, names)
    return {}


def _redis_depths(url: str, names: list[str]) -> dict[str, int]:
    import redis
    try:
        with redis.Redis.from_url(url, socket_timeout=SCRAPE_TIMEOUT_SECONDS,
                                  socket_connect_timeout=SCRAPE_TIMEOUT_SECONDS) as client:
            pipe = client.pipeline(transaction=False)
            for name in names:
                for suffix in _REDIS_PRIORITY_SUFFIXES:
                    pipe.llen(name + suffix)
            lengths = pipe.execute()
    except redis.RedisError as error:
        log.warning("metrics: could not read the queue depths: %s", error)
        return {}
    steps = len(_REDIS_PRIORITY_SUFFIXES)
    return {name: sum(lengths[i * steps:(i + 1) * steps]) for i, name in enumerate(names)}


def _amqp_depths(url: str, names: list[str]) -> dict[str, int]:
    """A passive queue_declare per queue (it creates nothing); a missing queue closes its
    channel, so each has a channel of its own."""
    from kombu import Connection
    from kombu.exceptions import KombuError
    depths: dict[str, int] = {}
    timeout = SCRAPE_TIMEOUT_SECONDS
    with Connection(url, connect_timeout=timeout,
                    transport_options={"read_timeout": timeout,
                                       "write_timeout": timeout}) as conn:
        failures = (OSError, KombuError, *conn.connection_errors, *conn.channel_errors)
        try:
            conn.ensure_connection(max_retries=0)
        except failures as error:
            log.warning("metrics: could not reach the broker for the queue depths: %s", error)
            return depths
        for name in names:
            channel = None
            try:
                channel = conn.channel()
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except failures as error:   # not declared yet (404), or the broker went away
                log.warning("metrics: could not read the depth of queue %s: %s", name, error)
            finally:
                if channel is not None:
                    with contextlib.suppress(*failures):
                        channel.close()
    return depths


def oldest_due_age(app: Flask) -> float | None:
    """Seconds since the oldest pending or failed delivery fell due; 0 when none is due.
    None when the database cannot say (down, or slower than the scrape may wait)."""
    from sqlalchemy import func, select, text
    from sqlalchemy.exc import SQLAlchemyError

    from webapp.extensions import db
    from webapp.models import Delivery
    from webapp.services.deliveries import DeliveryStatus
    waiting = [str(DeliveryStatus.PENDING), str(DeliveryStatus.FAILED)]
    query = select(func.coalesce(func.extract(
        "epoch", func.now() - func.min(Delivery.next_attempt_at)), 0)).where(
        Delivery.status.in_(waiting), Delivery.next_attempt_at <= func.now())
    try:
        with app.app_context(), db.engine.connect() as conn:
            conn.execute(text(f"SET LOCAL statement_timeout = "
                              f"{int(SCRAPE_TIMEOUT_SECONDS * 2000)}"))
            return max(float(conn.execute(query).scalar() or 0), 0.0)
    except SQLAlchemyError as error:
        log.warning("metrics: could not read the oldest due delivery: %s",
                    error.__class__.__name__)
        return None


class ScrapeTimeCollector:
    """Queue depths and the oldest due delivery's age, read at each scrape."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        depth = GaugeMetricFamily("escalations_queue_depth",
                                  "Messages waiting on the broker, by queue", labels=["queue"])
        for name, count in queue_depths(self.app).items():
            depth.add_metric([name], count)
        yield depth
        age = oldest_due_age(self.app)
        if age is not None:
            yield GaugeMetricFamily(
                "escalations_oldest_due_delivery_age_seconds",
                "Seconds since the oldest pending or failed delivery fell due (0: none due)",
                value=age)


class _ThisProcess:
    """The default registry, as one collector of a scrape's registry."""

    def collect(self):
        return REGISTRY.collect()


def process_registry() -> CollectorRegistry:
    """What this set of processes counted: every process's files in multiprocess mode, this
    process's own objects otherwise."""
    registry = CollectorRegistry()
    if multiproc_dir():
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir())
    else:
        registry.register(_ThisProcess())
    return registry


def scrape(app: Flask) -> bytes:
    registry = process_registry()
    registry.register(ScrapeTimeCollector(app))
    return generate_latest(registry)


# ---- the web side -------------------------------------------------------------------------------

def metrics_view():
    from webapp.auth import bearer_token
    from webapp.errors import ApiError
    expected = current_app.config.get("METRICS_TOKEN")
    if expected:
        given = bearer_token() or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            error = ApiError(401, "unauthorized", "missing or wrong metrics token")
            error.headers = {"WWW-Authenticate": "Bearer"}
            raise error
    return current_app.response_class(scrape(current_app._get_current_object()),
                                      content_type=CONTENT_TYPE_PLAIN_0_0_4,
                                      headers={"Cache-Control": "no-store"})


def _start_timer() -> None:
    g._metrics_started = time.perf_counter()


def _count_request(response):
    _observe_request(response)
    return response


@never_fails
def _observe_request(response) -> None:
    endpoint = request.endpoint if request.url_rule is not None else None
    endpoint = endpoint or "unmatched"
    method = request.method if request.method in _METHODS else "other"
    HTTP_REQUESTS.labels(endpoint=endpoint, method=method,
                         status=str(response.status_code)).inc()
    started = g.pop("_metrics_started", None)
    if started is not None:
        HTTP_LATENCY.labels(endpoint=endpoint, method=method).observe(
            time.perf_counter() - started)


def init_app(app: Flask) -> None:
    """Count every request (the timer starts before any other hook, so a request refused by
    the body guard or the token check is timed too) and serve `GET /metrics`. It is outside
    /api/v1, so the API's token check leaves it alone; METRICS_TOKEN guards it instead."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_request)
    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics_view, methods=["GET"])


# ---- the Celery side --------------------------------------------------------------------------

_task_started: dict[str, float] = {}
_task_lock = threading.Lock()


def connect_celery(app: Flask) -> None:
    """Task run times (task_prerun / task_postrun), and, with METRICS_PORT set, a worker's own
    metrics server on that port (started once, in the worker's main process)."""
    from celery.signals import task_postrun, task_prerun, worker_init

    @task_prerun.connect(weak=False, dispatch_uid="escalations.metrics.prerun")
    def _task_start(task_id=None, **_kwargs):
        with _task_lock:
            _task_started[task_id] = time.perf_counter()

    @task_postrun.connect(weak=False, dispatch_uid="escalations.metrics.postrun")
    @never_fails
    def _task_end(task_id=None, task=None, state=None, **_kwargs):
        with _task_lock:
            started = _task_started.pop(task_id, None)
        if started is not None and task is not None:
            TASK_DURATION.labels(task=task.name, state=state or "unknown").observe(
                time.perf_counter() - started)

    @worker_init.connect(weak=False, dispatch_uid="escalations.metrics.port")
    def _serve_worker_metrics(**_kwargs):
        port = app.config.get("METRICS_PORT")
        if port:
            from prometheus_client import start_http_server
            start_http_server(int(port), addr=app.config.get("METRICS_ADDR") or "0.0.0.0",
                              registry=process_registry())
            log.info("worker metrics on port %s", port)


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: a web worker that exited no longer counts in the live gauges."""
    if multiproc_dir():
        multiprocess.mark_process_dead(pid, multiproc_dir())
