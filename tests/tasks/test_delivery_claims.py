"""How a task takes a delivery row: only when due, and only while its lease holds."""
from datetime import timedelta

from tests.tasks.test_redelivery import undispatched_handoff
from webapp.extensions import db
from webapp.models import Delivery
from webapp.models.base import utcnow
from webapp.services import deliveries

POLICY = deliveries.RetryPolicy(base=1.0, cap=1.0, max_attempts=5)


def email_row_id(app, handoff_id):
    with app.app_context():
        return db.session.scalar(db.select(Delivery.id).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "email").limit(1))


def set_row(app, row_id, **values):
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.id == row_id).values(**values))
        db.session.commit()


def get_row(app, row_id):
    with app.app_context():
        return db.session.get(Delivery, row_id)


def test_a_stray_task_for_a_row_still_backing_off_does_nothing(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_row(app, row_id, status="failed", attempts=2, last_error="451 try later",
            next_attempt_at=utcnow() + timedelta(minutes=10))
    calls = []
    with app.app_context():
        assert deliveries.run(row_id, calls.append, POLICY) is None
    assert calls == []
    row = get_row(app, row_id)
    assert (row.status, row.attempts) == ("failed", 2)


def test_a_permanent_failure_waits_for_an_admin(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_row(app, row_id, status="failed", attempts=1, last_error="550 no such mailbox",
            next_attempt_at=None)
    calls = []
    with app.app_context():
        deliveries.run(row_id, calls.append, POLICY)
    assert calls == [] and get_row(app, row_id).status == "failed"


def test_a_due_failed_row_is_taken(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_row(app, row_id, status="failed", attempts=1, next_attempt_at=utcnow())
    with app.app_context():
        deliveries.run(row_id, lambda row: "message-id", POLICY)
    row = get_row(app, row_id)
    assert (row.status, row.attempts, row.external_id) == ("sent", 2, "message-id")


def test_a_worker_that_outlived_its_lease_cannot_overwrite_the_newer_outcome(
        app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    lease = timedelta(seconds=app.config["DELIVERY_LEASE_SECONDS"])

    def slow_side_effect(row):
        # meanwhile the lease ran out: beat hands the row back and another worker takes it
        with app.app_context():
            assert deliveries.take_due(utcnow() + lease + timedelta(seconds=1),
                                       timedelta(seconds=60))
            assert deliveries.claim(row_id) is not None
        return "first-worker"

    with app.app_context():
        deliveries.run(row_id, slow_side_effect, POLICY)
    row = get_row(app, row_id)
    # the first worker's late answer is not recorded: the row is the second worker's
    assert (row.status, row.external_id, row.attempts) == ("sending", None, 2)
