"""Nothing is lost: a broker outage at POST time, a killed worker, and beat's lock."""
import contextlib
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from tasks import maintenance
from tests.conftest import app_config, wait_for
from tests.factories import (
    app_without_broker,
    escalate,
    make_session,
    post_handoff,
    undispatched_handoff,
)
from tests.helpers import email_rows
from webapp import create_app
from webapp.extensions import db
from webapp.models import Delivery
from webapp.models.base import utcnow
from webapp.services.locks import single_run

pytestmark = pytest.mark.pipeline


def test_broker_down_at_post_still_201_fast_and_beat_delivers_later(
        app, app_env, make_tenant, smtp_server, celery_worker_process):
    smtp_server.reset()
    tenant = make_tenant("Acme", extra_engineers=1)
    client = app_without_broker(app_env).test_client()
    session_id = make_session(client, tenant)
    started = time.monotonic()
    response = client.post(f"/api/v1/ai-sessions/{session_id}/handoff",
                           json={"intent": "escalate", "note": "broker is down"},
                           headers=tenant.headers("engineer"))
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert elapsed < 1.5, f"POST took {elapsed:.2f}s with the broker down"
    handoff_id = response.get_json()["id"]
    time.sleep(1.0)
    assert smtp_server.about(handoff_id) == []
    assert {r.status for r in email_rows(app, handoff_id)} == {"pending"}

    with app.app_context():   # the broker is back: beat's next run finds the forgotten rows
        assert maintenance.redeliver(utcnow() + timedelta(seconds=61)) >= 5
    wait_for(lambda: all(r.status == "sent" for r in email_rows(app, handoff_id)), 20,
             message="emails after the broker came back")
    assert len(smtp_server.about(handoff_id)) == 3


@pytest.fixture
def hung_redis():
    """A server that accepts connections and never answers: Redis hung, not down."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for connection in held:
        connection.close()
    listener.close()


def timed_escalations(client, tenant, count: int = 3) -> tuple[list[float], list[int]]:
    """Escalate `count` sessions one after another: how long each POST took, and the ids;
    every answer must be 201."""
    timings, handoff_ids = [], []
    for _ in range(count):
        session_id = make_session(client, tenant)
        started = time.monotonic()
        response = post_handoff(client, tenant, session_id)
        timings.append(time.monotonic() - started)
        assert response.status_code == 201
        handoff_ids.append(response.get_json()["id"])
    return timings, handoff_ids


def test_hung_redis_and_broker_do_not_hold_up_the_post(app_env, tenant, hung_redis):
    hung = create_app(app_config(app_env, REDIS_URL=hung_redis, CELERY_BROKER_URL=hung_redis))
    timings, _ = timed_escalations(hung.test_client(), tenant)
    assert timings[0] < 1.5, timings          # one short timeout, then the breaker
    assert max(timings[1:]) < 0.5, timings    # the breaker skips the hung server at once


@pytest.mark.parametrize("rabbitmq", ["refusing", "hung"])
def test_an_unreachable_rabbitmq_broker_does_not_hold_up_the_post(
        app, app_env, tenant, hung_redis, rabbitmq):
    """RabbitMQ by its URL alone, never pinged: one refusing connections, or taking them and
    never answering, costs at most the connect timeout once, then the breaker; rows wait."""
    port = 1 if rabbitmq == "refusing" else urlsplit(hung_redis).port
    amqp_app = create_app(app_config(
        app_env, CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{port}//"))
    assert amqp_app.extensions["celery"].conf.broker_transport_options == {
        "confirm_publish": True}
    timings, handoff_ids = timed_escalations(amqp_app.test_client(), tenant)
    assert timings[0] < 1.5, timings
    assert max(timings[1:]) < 0.5, timings
    with app.app_context():
        statuses = set(db.session.scalars(db.select(Delivery.status).where(
            Delivery.handoff_id.in_(handoff_ids))))
    assert statuses == {"pending"}


def test_pending_rows_younger_than_the_grace_are_left_alone(app, app_env, tenant):
    handoff_id = undispatched_handoff(app_env, tenant)
    with app.app_context():
        assert maintenance.redeliver(utcnow()) == 0
        grace = app.config["DELIVERY_PENDING_GRACE_SECONDS"]
        assert maintenance.redeliver(utcnow() + timedelta(seconds=grace + 1)) == 4
        statuses = {row.status for row in db.session.scalars(
            db.select(Delivery).where(Delivery.handoff_id == handoff_id))}
    assert statuses <= {"pending", "sending", "sent", "skipped"}


def test_worker_killed_mid_task_the_work_completes_after_redelivery(
        app, make_tenant, smtp_server, private_worker):
    smtp_server.reset()
    tenant = make_tenant("Acme")
    first, queue_app = private_worker("kill")
    smtp_server.handler.stall_rcpt_seconds = 30      # every send hangs at RCPT
    handoff = escalate(queue_app.test_client(), tenant)
    wait_for(lambda: all(r.status == "sending" for r in email_rows(app, handoff["id"])), 20,
             message="both sends in flight")
    first.kill()
    smtp_server.handler.stall_rcpt_seconds = 0
    assert smtp_server.about(handoff["id"]) == []
    second, _ = private_worker("kill")
    # the dead worker's leases run out; beat hands its rows to the living worker: those it
    # was sending (lease expired) and those whose messages it held unstarted (still pending,
    # found once the pending grace has passed)
    time.sleep(int(queue_app.config["DELIVERY_LEASE_SECONDS"]) + 0.5)
    grace = queue_app.config["DELIVERY_PENDING_GRACE_SECONDS"]
    with queue_app.app_context():
        maintenance.redeliver(utcnow() + timedelta(seconds=grace + 1))
    wait_for(lambda: all(r.status == "sent" for r in email_rows(app, handoff["id"])), 30,
             message=lambda: "emails after the worker was killed: " + repr(
                 [(r.status, r.attempts, r.last_error) for r in email_rows(app, handoff["id"])]))
    rows = email_rows(app, handoff["id"])
    received = smtp_server.about(handoff["id"])
    assert len(received) == len(rows) == 2
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(
        r.recipient for r in rows)


def test_rows_that_keep_killing_workers_end_dead(app, app_env, client, tenant):
    handoff = {"id": undispatched_handoff(app_env, tenant)}
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.handoff_id == handoff["id"],
                                                     Delivery.channel == "email").values(
            status="sending", attempts=app.config["DELIVERY_MAX_ATTEMPTS"],
            lease_expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        maintenance.redeliver(utcnow())
    rows = client.get(f"/api/v1/handoffs/{handoff['id']}/deliveries",
                      headers=tenant.headers()).get_json()["items"]
    emails = [d for d in rows if d["channel"] == "email"]
    assert emails and all(d["status"] == "dead" for d in emails)
    assert all("gave up" in d["last_error"] for d in emails)


def test_a_channel_with_a_smaller_budget_ends_dead_sooner(app, app_env, tenant):
    """The assessment allows 3 attempts: 3 killed workers bury it, while an email row with
    as many is handed back for another try."""
    from webapp.services.channels import channel
    handoff_id = undispatched_handoff(app_env, tenant)
    budget = channel("assessment").policy.max_attempts
    assert budget < app.config["DELIVERY_MAX_ATTEMPTS"]
    with app.app_context():
        db.session.execute(db.update(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel.in_(("assessment", "email")),
        ).values(status="sending", attempts=budget,
                 lease_expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        maintenance.redeliver(utcnow())
        rows = db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id)).all()
    by_channel = {}
    for row in rows:
        by_channel.setdefault(row.channel, set()).add(row.status)
    assert by_channel["assessment"] == {"dead"}
    assert by_channel["email"] <= {"pending", "sending", "sent", "skipped"}
    assert "dead" not in by_channel["email"]


def test_two_beats_never_run_the_same_job_at_once(app):
    held, release = threading.Event(), threading.Event()

    def other_beat():
        with app.app_context(), single_run("redeliver_due") as acquired:
            assert acquired
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_beat)
    thread.start()
    try:
        assert held.wait(10)
        with app.app_context():
            assert maintenance.redeliver_due() == -1     # the job body did not run
    finally:
        release.set()
        thread.join(10)
    with app.app_context():
        assert maintenance.redeliver_due() >= 0


def test_concurrent_beat_runs_enqueue_each_due_row_once(app, app_env, tenant):
    handoff_id = undispatched_handoff(app_env, tenant)
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.handoff_id == handoff_id)
                           .values(status="failed", next_attempt_at=utcnow()))
        db.session.commit()
    results, barrier = [], threading.Barrier(4)

    def beat():
        with app.app_context():
            barrier.wait()
            results.append(maintenance.redeliver_due())

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 4
    assert sum(r for r in results if r > 0) == 4     # assessment, PSA, two emails: once each
    assert all(r in (-1, 0, 4) for r in results)


def test_a_long_waiting_pending_row_is_handed_back_less_and_less_often(app, app_env, tenant):
    """A backlog in the queue: beat does not add a copy of every waiting row each minute."""
    handoff_id = undispatched_handoff(app_env, tenant)
    now = utcnow()
    # the broker is unreachable throughout, so no worker touches the rows meanwhile
    beat = app_without_broker(app_env)
    with beat.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.handoff_id == handoff_id)
                           .values(created_at=now - timedelta(minutes=10),
                                   next_attempt_at=now - timedelta(minutes=10)))
        db.session.commit()
        assert maintenance.redeliver(now) == 4
        for minute in range(1, 10):       # the next nine beat runs leave them alone
            assert maintenance.redeliver(now + timedelta(minutes=minute)) == 0, minute
        assert maintenance.redeliver(now + timedelta(minutes=11, seconds=1)) == 4
