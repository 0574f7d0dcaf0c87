"""GET /metrics: Prometheus text, open or behind METRICS_TOKEN; counters moved by the web and
by real workers sharing one PROMETHEUS_MULTIPROC_DIR; every gunicorn worker counted; no
tenant's name, email or ticket id in any label.

prometheus_client picks multiprocess mode from the environment when it is imported, so the
test process never sets PROMETHEUS_MULTIPROC_DIR: whatever must share a directory runs in
processes of its own (a gunicorn web, a Celery worker), each given the directory in its env."""
from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from prometheus_client import multiprocess
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_PASSWORD, app_config, artifacts_dir, purge_queues, wait_for
from tests.factories import SESSION_TITLE, escalate, undispatched_handoff
from tests.helpers import set_delivery
from tests.servers.chat import ChatServer
from tests.servers.web import WebProcess
from webapp import create_app
from webapp.extensions import db
from webapp.live.stream import StreamSlot
from webapp.models import Delivery
from webapp.models.base import utcnow
from webapp.redis_client import get_redis
from webapp.services import deliveries

METRICS_TOKEN = "scrape-token-3e9d"


def parse(text: str) -> list:
    """Every sample of the exposition, as (name, labels, value)."""
    return [(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples: list, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(value for sample_name, sample_labels, value in samples
               if sample_name == name and labels.items() <= sample_labels.items())


def scrape(http) -> list:
    answer = http.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    return parse(answer.text)


# ---- the endpoint ---------------------------------------------------------------------------

def test_metrics_answer_prometheus_text_without_a_token(client):
    client.get("/healthz")
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in
                text_string_to_metric_families(answer.get_data(as_text=True))}
    assert {"escalations_http_requests", "escalations_http_request_duration_seconds",
            "escalations_handoffs_created", "escalations_deliveries_finished",
            "escalations_delivery_retries", "escalations_deliveries_dead",
            "escalations_task_duration_seconds", "escalations_live_streams_open",
            "escalations_queue_depth",
            "escalations_oldest_due_delivery_age_seconds"} <= set(families)
    samples = parse(answer.get_data(as_text=True))
    assert total(samples, "escalations_http_requests_total", endpoint="health.healthz",
                 method="GET", status="200") >= 1
    assert total(samples, "escalations_oldest_due_delivery_age_seconds") == 0
    # a path with ids is counted by its endpoint, an unknown one as `unmatched`
    client.get("/api/v1/handoffs/987654321")
    client.get("/no/such/path/424242")
    labels = [labels for _name, labels, _value in parse(client.get("/metrics").get_data(
        as_text=True))]
    assert {"endpoint": "unmatched", "method": "GET", "status": "404"} in labels
    assert not any("987654321" in value or "424242" in value
                   for label in labels for value in label.values())


def test_metrics_token_is_required_when_set(app_env, tenant):
    client = create_app(app_config(app_env, METRICS_TOKEN=METRICS_TOKEN)).test_client()
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.get_json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    for wrong in (f"Bearer {METRICS_TOKEN}x", "Bearer nope", f"Basic {METRICS_TOKEN}",
                  f"Bearer {tenant.tokens['owner']}"):   # a user's API token is not it either
        assert client.get("/metrics", headers={"Authorization": wrong}).status_code == 401
    good = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert good.status_code == 200
    assert "escalations_http_requests_total" in good.get_data(as_text=True)


def test_queue_depth_and_oldest_due_delivery_are_read_at_scrape_time(app, app_env, tenant):
    queue = "metrics-depth"
    depth_app = create_app(app_config({**app_env, "CELERY_QUEUE": queue}))
    try:
        for _ in range(3):   # no worker consumes this queue (Redis or RabbitMQ alike)
            depth_app.extensions["celery"].send_task("maintenance.heartbeat")
        handoff_id = undispatched_handoff(app_env, tenant)
        with app.app_context():
            row_ids = db.session.scalars(db.select(Delivery.id).where(
                Delivery.handoff_id == handoff_id)).all()
        set_delivery(app, row_ids[0], next_attempt_at=utcnow() - timedelta(minutes=10))
        samples = parse(depth_app.test_client().get("/metrics").get_data(as_text=True))
        assert total(samples, "escalations_queue_depth", queue=queue) == 3
        # RabbitMQ has no queue nothing was sent to yet: those are left out
        assert {labels["queue"] for name, labels, _ in samples
                if name == "escalations_queue_depth"} <= {queue, f"{queue}.psa", f"{queue}.ai"}
        age = total(samples, "escalations_oldest_due_delivery_age_seconds")
        assert 600 <= age < 660
    finally:
        purge_queues(app_env["CELERY_BROKER_URL"], [queue])


def test_an_unreachable_broker_leaves_the_queue_depths_out_quickly(app_env):
    for broker in ("redis://127.0.0.1:1/0", "amqp://guest:guest@127.0.0.1:1//"):
        client = create_app(app_config(app_env, CELERY_BROKER_URL=broker)).test_client()
        started = time.monotonic()
        answer = client.get("/metrics")
        assert answer.status_code == 200
        assert time.monotonic() - started < 5
        samples = parse(answer.get_data(as_text=True))
        assert not [name for name, _, _ in samples if name == "escalations_queue_depth"]
        assert total(samples, "escalations_oldest_due_delivery_age_seconds") == 0


def test_retries_dead_rows_and_open_streams_are_counted(app, client, app_env, make_tenant):
    tenant = make_tenant("Acme MSP", extra_engineers=1)   # three email rows
    handoff_id = undispatched_handoff(app_env, tenant)
    with app.app_context():
        first, second, third = db.session.scalars(db.select(Delivery.id).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "email")
            .order_by(Delivery.id)).all()
    before = parse(client.get("/metrics").get_data(as_text=True))

    def fails(error):
        def side_effect(_row):
            raise error
        return side_effect
    with app.app_context():
        policy = deliveries.RetryPolicy()
        assert deliveries.run(first, fails(deliveries.Retryable("try later")), policy)
        deliveries.run(second, fails(deliveries.Permanent("no such mailbox")), policy)
    # a row whose worker died on every attempt: buried by beat
    set_delivery(app, third, status="sending", attempts=99,
                 lease_expires_at=utcnow() - timedelta(minutes=1))
    with app.app_context():
        assert deliveries.bury_exhausted(utcnow()) == 1
        slot = StreamSlot(get_redis(), tenant.account_id, tenant.users["owner"]["id"])
        slot.take(10, 10)
    during = parse(client.get("/metrics").get_data(as_text=True))
    slot.release()
    slot.release()   # counted once, however often it is released
    after = parse(client.get("/metrics").get_data(as_text=True))

    def moved(samples, name, **labels):
        return total(samples, name, **labels) - total(before, name, **labels)
    assert moved(after, "escalations_delivery_retries_total", channel="email") == 1
    assert moved(after, "escalations_deliveries_dead_total", channel="email") == 2
    assert moved(after, "escalations_deliveries_finished_total", channel="email",
                 status="dead") == 2
    assert moved(after, "escalations_deliveries_finished_total", channel="email",
                 status="sent") == 0
    assert moved(during, "escalations_live_streams_open") == 1
    assert moved(after, "escalations_live_streams_open") == 0


# ---- web and workers sharing one multiprocess directory -------------------------------------

@pytest.fixture
def shared_metrics(tmp_path, app_env, private_worker, smtp_server):
    """A Celery worker on a queue of its own and a gunicorn web enqueuing to it, both
    counting into one PROMETHEUS_MULTIPROC_DIR; (web, queue_app, directory)."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory)}
    _worker, queue_app = private_worker("metrics", **env)
    web = WebProcess({**app_env, **env, "CELERY_QUEUE": "metrics"},
                     artifacts_dir() / "web-metrics.log").start()
    yield web, queue_app, directory
    web.stop()


def settled_rows(queue_app, handoff_id: int):
    def settled():
        with queue_app.app_context():
            rows = db.session.scalars(db.select(Delivery).where(
                Delivery.handoff_id == handoff_id)).all()
            return rows if rows and all(deliveries.is_settled(row.status) for row in rows) else None
    return wait_for(settled, 40, message="every delivery of the escalation settled")


@pytest.mark.pipeline
def test_handoff_and_delivery_counters_move_when_an_escalation_runs_through_a_worker(
        shared_metrics, make_tenant):
    web, queue_app, _directory = shared_metrics
    tenant = make_tenant("Counting MSP", extra_engineers=1)
    with httpx.Client(base_url=web.base_url, timeout=10) as http:
        before = scrape(http)
        assert total(before, "escalations_handoffs_created_total") == 0
        assert total(before, "escalations_deliveries_finished_total") == 0
        handoff = escalate(http, tenant)
        rows = settled_rows(queue_app, handoff["id"])
        outcomes = Counter((row.channel, row.status) for row in rows)
        assert ("email", "sent") in outcomes and ("assessment", "sent") in outcomes

        def counted():   # the worker counts just after it commits each outcome
            samples = scrape(http)
            return samples if all(
                total(samples, "escalations_deliveries_finished_total", channel=channel,
                      status=status) == count
                for (channel, status), count in outcomes.items()) else None
        after = wait_for(counted, 10, 0.2, message=lambda: f"counters for {outcomes}")
    assert total(after, "escalations_handoffs_created_total", intent="escalate") == 1
    assert total(after, "escalations_handoffs_created_total", intent="park") == 0
    assert total(after, "escalations_deliveries_finished_total") == len(rows)
    assert total(after, "escalations_deliveries_dead_total") == 0
    # the worker's task run times show on the web's /metrics
    assert total(after, "escalations_task_duration_seconds_count", task="handoffs.dispatch",
                 state="SUCCESS") == 1
    assert {labels["task"] for name, labels, value in after
            if name == "escalations_task_duration_seconds_count" and value} >= {
        "psa.push_handoff"}   # (dispatch assessed with the heuristic and sent the emails)
    assert total(after, "escalations_http_requests_total", endpoint="metrics") >= 1


@pytest.mark.pipeline
def test_no_label_names_a_tenant_a_user_or_a_ticket(shared_metrics, make_tenant, psa_server):
    web, queue_app, _directory = shared_metrics
    tenant = make_tenant("Zanzibar Widgets Ltd", extra_engineers=1)
    ticket = "1001"
    with ChatServer() as chat, httpx.Client(base_url=web.base_url, timeout=10) as http:
        admin = tenant.headers("admin")
        assert http.put("/api/v1/account/chat", headers=admin, json={
            "provider": "slack", "webhook_url": chat.slack_url}).status_code == 200
        assert http.put("/api/v1/account/psa", headers=admin, json={
            "provider": "connectwise", **psa_server.settings("connectwise")}).status_code == 200
        login = http.post("/api/v1/auth/login", json={
            "email": tenant.users["engineer"]["email"], "password": TEST_PASSWORD})
        assert login.status_code == 200
        handoff = escalate(http, tenant, psa_ticket_id=ticket, client_name="Contoso Pharma")
        rows = settled_rows(queue_app, handoff["id"])
        assert {row.channel for row in rows} == {"assessment", "psa", "email", "chat"}
        wait_for(lambda: total(scrape(http), "escalations_deliveries_finished_total")
                 == len(rows), 10, 0.2, message="every outcome counted")
        text = http.get("/metrics").text
    values = {value for _name, labels, _value in parse(text) for value in labels.values()}
    names = {"Zanzibar Widgets Ltd", "Zanzibar", "Contoso Pharma", SESSION_TITLE,
             *(user["email"] for user in tenant.users.values()),
             *(user["name"] for user in tenant.users.values()),
             f"@{tenant.account_id}.example"}
    for name in names:
        assert name not in text, f"{name!r} is in /metrics"
    for value in values:
        assert ticket not in value, f"a label value carries the ticket id: {value!r}"
        assert "@" not in value and "/" not in value, value


def test_every_gunicorn_worker_is_counted(tmp_path, app_env):
    directory = tmp_path / "metrics"
    directory.mkdir()
    web = WebProcess({**app_env, "PROMETHEUS_MULTIPROC_DIR": str(directory),
                      "WEB_CONCURRENCY": "2"}, artifacts_dir() / "web-metrics-2.log").start()

    def readyz():   # a connection of its own each time, so either worker may accept it
        return httpx.get(web.base_url + "/readyz", timeout=10).status_code

    def readyz_per_process() -> dict[int, float]:
        counts = {}
        for path in directory.glob("counter_*.db"):
            samples = [sample for metric in multiprocess.MultiProcessCollector.merge([path])
                       for sample in metric.samples]
            counts[int(path.stem.rsplit("_", 1)[1])] = sum(
                sample.value for sample in samples
                if sample.name == "escalations_http_requests_total"
                and sample.labels.get("endpoint") == "health.readyz")
        return counts

    try:
        with httpx.Client(base_url=web.base_url, timeout=10) as http:
            before = total(scrape(http), "escalations_http_requests_total",
                           endpoint="health.readyz")
        sent = 0
        with ThreadPoolExecutor(16) as pool:
            for _batch in range(10):   # until both workers have answered some
                statuses = list(pool.map(lambda _: readyz(), range(100)))
                assert statuses == [200] * 100
                sent += 100
                if sum(1 for count in readyz_per_process().values() if count) >= 2:
                    break
        with httpx.Client(base_url=web.base_url, timeout=10) as http:
            after = scrape(http)
        assert total(after, "escalations_http_requests_total", endpoint="health.readyz",
                     method="GET", status="200") - before == sent
        per_process = readyz_per_process()
        assert sum(1 for count in per_process.values() if count) == 2, per_process
        assert sum(per_process.values()) - before == sent
    finally:
        web.stop()
