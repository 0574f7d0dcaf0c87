"""No tenant can stop the product for the others: one account's PSA that accepts and then
trickles a byte every few seconds holds only that account's share of the PSA workers, and
never delays another account's email or PSA note."""
import time

import pytest

from tests.conftest import WorkerProcess, app_config, artifacts_dir, purge_queues, wait_for
from tests.factories import make_session, post_handoff
from tests.servers.psa import PsaServer
from webapp import create_app
from webapp.extensions import db
from webapp.models import Delivery

QUEUE = "noisy"
HUNG_PUSHES = 12


@pytest.fixture
def split_workers(app_env):
    """The Procfile's roles as separate processes: one for email and dispatch, one for PSA
    and AI, each on this test's own queues."""
    env = {**app_env, "CELERY_QUEUE": QUEUE}
    queue_app = create_app(app_config(env))
    workers = [WorkerProcess(env, artifacts_dir() / "celery-noisy-default.log", queue=QUEUE,
                             roles=("default",)),
               WorkerProcess(env, artifacts_dir() / "celery-noisy-psa.log", queue=QUEUE,
                             roles=("psa", "ai"))]
    for worker in workers:
        worker.start()
    from tests.conftest import _wait_worker_ready
    _wait_worker_ready(queue_app)
    yield queue_app
    for worker in workers:
        worker.kill()    # the hung pushes would hold a graceful stop
    purge_queues(app_env["CELERY_BROKER_URL"], (q for w in workers for q in w.queues))


def configure_psa(client, tenant, server):
    response = client.put("/api/v1/account/psa", headers=tenant.headers(),
                          json={"provider": "connectwise", **server.settings("connectwise")})
    assert response.status_code == 200, response.get_json()


def psa_rows(app, account_id):
    with app.app_context():
        return list(db.session.scalars(db.select(Delivery).where(
            Delivery.account_id == account_id, Delivery.channel == "psa")))


@pytest.mark.timeout(300)
def test_a_trickling_psa_of_one_tenant_delays_nobody_else(
        app, split_workers, make_tenant, smtp_server):
    client = split_workers.test_client()
    noisy, quiet = make_tenant("Noisy MSP"), make_tenant("Quiet MSP", extra_engineers=2)
    with PsaServer(tickets=("1001",)) as hostile, PsaServer(tickets=("1001",)) as healthy:
        for method in ("GET", "POST"):    # accepts, then one byte every 3 s, on every call
            hostile.inject(method, "", action="trickle", delay=3.0, times=10_000)
        configure_psa(client, noisy, hostile)
        configure_psa(client, quiet, healthy)
        for n in range(HUNG_PUSHES):
            session_id = make_session(client, noisy, psa_ticket_id="1001", title=f"Noisy {n}")
            assert post_handoff(client, noisy, session_id).status_code == 201
        # the hostile PSA holds its pushes now
        wait_for(lambda: len(hostile.requests) >= 2, 30, message="the hung pushes to start")

        posted = time.monotonic()
        session_id = make_session(client, quiet, psa_ticket_id="1001")
        response = post_handoff(client, quiet, session_id)
        assert response.status_code == 201, response.get_json()
        handoff_id = response.get_json()["id"]
        seniors = {quiet.users[label]["email"].lower()
                   for label in ("owner", "admin", "engineer2", "engineer3")}

        def all_emailed():
            got = sorted(r for m in smtp_server.about(handoff_id) for r in m.rcpt_tos)
            return got == sorted(seniors)

        wait_for(all_emailed, 15, 0.05, message=lambda: (
            "the quiet tenant's emails: got "
            f"{[m.rcpt_tos for m in smtp_server.about(handoff_id)]}"))
        email_delay = time.monotonic() - posted
        wait_for(lambda: healthy.notes("1001"), 60, 0.1, message="the quiet tenant's PSA note")
        note_delay = time.monotonic() - posted
        assert len(healthy.notes("1001")) == 1

        def hung_pushes_gave_up():
            """Every hung push has ended an attempt as failed (retrying) or dead, with the
            reason; retries may be under way again."""
            rows = psa_rows(app, noisy.account_id)
            return len(rows) == HUNG_PUSHES and all(
                r.attempts >= 1 and r.last_error and "no complete answer" in r.last_error
                for r in rows) and rows

        rows = wait_for(hung_pushes_gave_up, 120, 0.5, message=lambda: [
            (r.status, r.attempts, r.last_error) for r in psa_rows(app, noisy.account_id)])
        gave_up = time.monotonic() - posted
        # at most the account's cap of pushes were ever at the hostile PSA at once
        assert hostile.max_in_flight("/v4_6_release/apis/3.0/service/tickets/{id}/notes") <= 2
    print(f"\nquiet tenant: emails in {email_delay:.2f}s, PSA note in {note_delay:.2f}s; "
          f"{HUNG_PUSHES} hung pushes all failed with a reason within {gave_up:.1f}s "
          f"(e.g. {rows[0].last_error!r})")
