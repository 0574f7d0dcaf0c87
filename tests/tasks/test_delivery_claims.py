"""How a task takes a delivery row: only when due, and only while its lease holds."""
import threading
import time
from datetime import timedelta

from tests.factories import undispatched_handoff
from tests.helpers import email_row_id, get_delivery, set_delivery
from webapp.extensions import db
from webapp.models import Delivery
from webapp.models.base import utcnow
from webapp.services import deliveries

POLICY = deliveries.RetryPolicy(base=1.0, cap=1.0, max_attempts=5)


def test_a_stray_task_for_a_row_still_backing_off_does_nothing(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_delivery(app, row_id, status="failed", attempts=2, last_error="451 try later",
                 next_attempt_at=utcnow() + timedelta(minutes=10))
    calls = []
    with app.app_context():
        assert deliveries.run(row_id, calls.append, POLICY) is None
    assert calls == []
    row = get_delivery(app, row_id)
    assert (row.status, row.attempts) == ("failed", 2)


def test_a_permanent_failure_waits_for_an_admin(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_delivery(app, row_id, status="dead", attempts=1, last_error="550 no such mailbox",
                 next_attempt_at=None)
    calls = []
    with app.app_context():
        deliveries.run(row_id, calls.append, POLICY)
    assert calls == [] and get_delivery(app, row_id).status == "dead"


def test_a_due_failed_row_is_taken(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_delivery(app, row_id, status="failed", attempts=1, next_attempt_at=utcnow())
    with app.app_context():
        deliveries.run(row_id, lambda row: "message-id", POLICY)
    row = get_delivery(app, row_id)
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
    row = get_delivery(app, row_id)
    # the first worker's late answer is not recorded: the row is the second worker's
    assert (row.status, row.external_id, row.attempts) == ("sending", None, 2)


def test_a_side_effect_longer_than_the_lease_is_never_retaken_by_beat(app, app_env, tenant):
    """The heartbeat renews the lease while the side effect runs; beat's sweeps in the
    meantime leave the row alone, and it is done once."""
    from tests.conftest import app_config
    from webapp import create_app
    short = create_app(app_config(app_env, DELIVERY_LEASE_SECONDS=1))
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    calls, swept, running = [], [], threading.Event()

    def slow(row):
        calls.append(row.id)
        running.set()
        time.sleep(3.5)     # three and a half leases
        return "message-id"

    worker = threading.Thread(target=lambda: _run_in(short, row_id, slow))
    worker.start()
    assert running.wait(10)
    with short.app_context():
        for _ in range(6):
            time.sleep(0.5)
            swept.extend(row.id for row in deliveries.take_due(
                utcnow(), timedelta(seconds=60)))
    worker.join(10)
    row = get_delivery(app, row_id)
    assert swept == [] and calls == [row_id]
    assert (row.status, row.attempts, row.external_id) == ("sent", 1, "message-id")


def test_claims_held_at_once_are_all_renewed_by_one_thread(app, app_env, make_tenant):
    """Two side effects, each longer than three leases, run side by side: neither row is
    retaken, each is done once, and one thread of the process renews both leases."""
    from tests.conftest import app_config
    from webapp import create_app
    short = create_app(app_config(app_env, DELIVERY_LEASE_SECONDS=1))
    tenant = make_tenant("Umbrella")
    row_ids = [email_row_id(app, undispatched_handoff(app_env, tenant)) for _ in range(2)]
    calls, swept, running, keepers = [], [], threading.Semaphore(0), []

    def slow(row):
        calls.append(row.id)
        running.release()
        time.sleep(3.5)     # three and a half leases
        return "message-id"

    workers = [threading.Thread(target=lambda row_id=row_id: _run_in(short, row_id, slow))
               for row_id in row_ids]
    for worker in workers:
        worker.start()
    assert running.acquire(timeout=10) and running.acquire(timeout=10)
    with short.app_context():
        for _ in range(6):
            time.sleep(0.5)
            keepers.append(sorted(thread.name for thread in threading.enumerate()
                                  if thread.name.startswith("lease")))
            swept.extend(row.id for row in deliveries.take_due(
                utcnow(), timedelta(seconds=60)))
    for worker in workers:
        worker.join(10)
    assert swept == [] and sorted(calls) == sorted(row_ids)
    assert all(names == ["lease-keeper"] for names in keepers), keepers
    rows = [get_delivery(app, row_id) for row_id in row_ids]
    assert [(row.status, row.attempts) for row in rows] == [("sent", 1)] * 2


def test_a_killed_workers_lease_runs_out_and_beat_retakes_the_row(app, app_env, tenant):
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    # claimed by a worker that died: nobody renews its lease
    set_delivery(app, row_id, status="sending", attempts=1,
                 lease_expires_at=utcnow() - timedelta(seconds=1))
    with app.app_context():
        taken = [row.id for row in deliveries.take_due(utcnow(), timedelta(seconds=60))]
    assert taken == [row_id] and get_delivery(app, row_id).status == "pending"
    # by default a lease lasts under a minute, so with beat's minute a killed worker's rows
    # are retaken within about two
    from webapp.config import Config
    assert Config.from_env(env={})["DELIVERY_LEASE_SECONDS"] <= 60


def test_beats_sweep_racing_a_workers_claim_hands_the_row_out_once(app, app_env, tenant):
    """A worker's claim holds the row's lock, uncommitted, while beat sweeps: the sweep must
    not wait for it and then hand the just-claimed row out again."""
    from sqlalchemy import text
    row_id = email_row_id(app, undispatched_handoff(app_env, tenant))
    set_delivery(app, row_id, status="failed", attempts=1, next_attempt_at=utcnow())
    swept: list = []
    with app.app_context():
        engine = db.engine
    claim = engine.connect()
    tx = claim.begin()
    claim.execute(db.update(Delivery).where(Delivery.id == row_id).values(
        status="sending", attempts=2, lease_expires_at=utcnow() + timedelta(minutes=5)))

    def sweep():
        with app.app_context():
            swept.extend(row.id for row in deliveries.take_due(utcnow(), timedelta(seconds=60)))

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    # let the sweep finish, or block on the claim's row lock
    with engine.connect() as watch:
        for _ in range(100):
            if not sweeper.is_alive() or watch.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar():
                break
            time.sleep(0.05)
    tx.commit()
    claim.close()
    sweeper.join(10)
    row = get_delivery(app, row_id)
    assert swept == [] and row.status == "sending" and row.attempts == 2, (swept, row.status)


def _run_in(app, row_id, side_effect):
    with app.app_context():
        deliveries.run(row_id, side_effect, POLICY)
