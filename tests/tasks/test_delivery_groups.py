"""A group of rows driven together (deliveries.run_many, the email channel's groups): one
claim, one lease, one outcome write, and still each row's own outcome, once."""
import threading
import time
from datetime import timedelta

import pytest

from tests.factories import undispatched_handoff
from tests.helpers import get_delivery, set_delivery
from webapp.extensions import db
from webapp.models import Delivery
from webapp.models.base import utcnow
from webapp.services import deliveries

POLICY = deliveries.RetryPolicy(base=1.0, cap=1.0, max_attempts=5)


@pytest.fixture
def tenant(make_tenant):
    """An escalator with four senior teammates: four email rows per escalation."""
    return make_tenant("Acme", extra_engineers=2)


def email_row_ids(app, handoff_id: int) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(db.select(Delivery.id).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "email")
            .order_by(Delivery.id)))


def side_effects_of(effects: dict):
    """A group's side effects from {row id: function of the row}; records the rows read."""
    read: list[list[int]] = []

    def side_effects(rows):
        read.append([row.id for row in rows])
        return lambda row: effects[row.id](row)
    return side_effects, read


def fails(error):
    def side_effect(row):
        raise error
    return side_effect


def test_a_group_is_claimed_once_and_each_row_gets_its_own_outcome(app, app_env, tenant):
    sent, dead, failed = email_row_ids(app, undispatched_handoff(app_env, tenant))[:3]
    side_effects, read = side_effects_of({
        sent: lambda row: f"message-{row.id}",
        dead: fails(deliveries.Permanent("550 no such mailbox")),
        failed: fails(deliveries.Retryable("451 try later"))})
    before = utcnow()
    with app.app_context():
        retries = deliveries.run_many([failed, sent, dead], side_effects, POLICY)
    assert read == [[sent, dead, failed]]   # one read for the whole group, in id order
    assert set(retries) == {failed} and retries[failed] > 0
    rows = {row_id: get_delivery(app, row_id) for row_id in (sent, dead, failed)}
    assert (rows[sent].status, rows[sent].external_id, rows[sent].last_error) == (
        "sent", f"message-{sent}", None)
    assert rows[sent].sent_at is not None
    assert (rows[dead].status, rows[dead].last_error, rows[dead].next_attempt_at) == (
        "dead", "550 no such mailbox", None)
    assert (rows[failed].status, rows[failed].last_error) == ("failed", "451 try later")
    # (the tests' backoff scale makes the wait a few milliseconds: after the run began)
    assert rows[failed].next_attempt_at > before
    assert all(row.attempts == 1 and row.lease_expires_at is None for row in rows.values())


def test_a_group_run_again_sends_nothing_more(app, app_env, tenant):
    ids = email_row_ids(app, undispatched_handoff(app_env, tenant))
    calls: list[int] = []

    def side_effects(rows):
        return lambda row: calls.append(row.id) or "message-id"

    with app.app_context():
        deliveries.run_many(ids, side_effects, POLICY)
        deliveries.run_many(ids, side_effects, POLICY)   # a redelivered message
    assert calls == ids
    assert {get_delivery(app, row_id).status for row_id in ids} == {"sent"}


def test_a_row_retaken_while_its_group_ran_keeps_the_newer_claim(app, app_env, tenant):
    first, second = email_row_ids(app, undispatched_handoff(app_env, tenant))[:2]
    theirs = utcnow() + timedelta(minutes=5)

    def side_effect(row):
        if row.id == first:   # meanwhile another worker holds the second row
            set_delivery(app, second, status="sending", attempts=2, lease_expires_at=theirs)
        return f"message-{row.id}"

    with app.app_context():
        deliveries.run_many([first, second], lambda rows: side_effect, POLICY)
    assert get_delivery(app, first).status == "sent"
    row = get_delivery(app, second)
    assert (row.status, row.external_id, row.attempts, row.lease_expires_at) == (
        "sending", None, 2, theirs)


def test_a_group_longer_than_the_lease_is_never_retaken_by_beat(app, app_env, tenant):
    """One heartbeat renews the whole group's lease until each row's outcome is written."""
    from tests.conftest import app_config
    from webapp import create_app
    short = create_app(app_config(app_env, DELIVERY_LEASE_SECONDS=1))
    ids = email_row_ids(app, undispatched_handoff(app_env, tenant))[:3]
    calls, swept, running = [], [], threading.Event()

    def slow(row):
        calls.append(row.id)
        running.set()
        time.sleep(1.2)    # the three rows together take over three leases
        return "message-id"

    def run():
        with short.app_context():
            deliveries.run_many(ids, lambda rows: slow, POLICY)

    worker = threading.Thread(target=run)
    worker.start()
    assert running.wait(10)
    with short.app_context():
        while worker.is_alive():
            time.sleep(0.3)
            swept.extend(row.id for row in deliveries.take_due(
                utcnow(), timedelta(seconds=60)))
    worker.join(10)
    assert swept == [] and calls == ids
    assert [get_delivery(app, row_id).status for row_id in ids] == ["sent"] * 3


def test_a_deferred_row_of_a_group_gives_back_its_attempt(app, app_env, tenant):
    later, now_ = email_row_ids(app, undispatched_handoff(app_env, tenant))[:2]
    effects = {later: fails(deliveries.Defer(30, "not yet")), now_: lambda row: "message-id"}
    with app.app_context():
        retries = deliveries.run_many([later, now_], lambda rows: lambda row:
                                      effects[row.id](row), POLICY)
    assert retries == {later: 30}
    row = get_delivery(app, later)
    assert (row.status, row.attempts, row.lease_expires_at) == ("pending", 0, None)
    assert get_delivery(app, now_).status == "sent"


def test_a_group_of_a_claimed_escalation_sends_nothing_and_names_its_claimer(
        app, app_env, tenant):
    from webapp.models import Handoff, User
    from webapp.services import notifications
    handoff_id = undispatched_handoff(app_env, tenant)
    ids = email_row_ids(app, handoff_id)
    with app.app_context():
        claimer = db.session.get(User, tenant.users["admin"]["id"])
        db.session.execute(db.update(Handoff).where(Handoff.id == handoff_id).values(
            status="claimed", claimed_by=claimer.id, claimed_at=utcnow()))
        db.session.commit()
        name = claimer.name
        deliveries.run_many(ids, notifications.escalation_emails, POLICY)
    rows = [get_delivery(app, row_id) for row_id in ids]
    assert {(row.status, row.last_error, row.external_id) for row in rows} == {
        ("skipped", f"already claimed by {name}", None)}


def test_a_group_sends_to_its_active_seniors_and_skips_one_removed_meanwhile(
        app, app_env, tenant, smtp_server):
    from webapp.models import User
    from webapp.services import notifications
    ids = email_row_ids(app, undispatched_handoff(app_env, tenant))
    with app.app_context():
        rows = [get_delivery(app, row_id) for row_id in ids]
        removed = rows[1]
        db.session.execute(db.update(User).where(User.id == removed.recipient_user_id)
                           .values(deleted_at=utcnow()))
        db.session.commit()
        deliveries.run_many(ids, notifications.escalation_emails, POLICY)
    after = {row_id: get_delivery(app, row_id) for row_id in ids}
    assert (after[removed.id].status, after[removed.id].last_error) == (
        "skipped", "recipient is no longer an active senior")
    sent = [row for row_id, row in after.items() if row_id != removed.id]
    assert {row.status for row in sent} == {"sent"}
    assert all(row.external_id == f"<handoff-{row.handoff_id}.delivery-{row.id}@escalations>"
               for row in sent)
