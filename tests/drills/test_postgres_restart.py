"""Drill: the PostgreSQL server (a cluster of the drill's own) stops under a steady stream of
escalations, then starts again. While it is down every request answers 503 in the one error
shape; afterwards the API answers 201 again by itself. Nothing is lost: every escalation
answered 201 is delivered (emails, note), and none answered 503 was created."""
import time

import pytest
from flask_migrate import upgrade

from tests.conftest import wait_for
from tests.drills.conftest import Escalator, drill_counts, expected_counts, format_counts, settle
from tests.factories import create_tenant
from webapp.extensions import db
from webapp.models import Handoff

pytestmark = pytest.mark.drills

DOWN_AT_LEAST = 5.0   # seconds


@pytest.mark.timeout(240)
def test_postgres_restarted_under_load_answers_503_then_recovers_losing_nothing(
        app, drill_postgres, rig, drill_smtp, psa_server):
    # a restart shorter than the lease (45 s in production): a worker that sent an email as
    # the database went away records it once the database is back, and sends it once
    drill = rig("postgres", DATABASE_URL=drill_postgres.url, MAIL_PORT=str(drill_smtp.port),
                DELIVERY_LEASE_SECONDS="20")
    with drill.app.app_context():
        upgrade()
        db.session.remove()
    tenant = create_tenant(drill.app, "Postgres Drill MSP")
    with drill.app.test_client() as client:
        assert client.put("/api/v1/account/psa", headers=tenant.headers("admin"), json={
            "provider": "connectwise", **psa_server.settings("connectwise")}).status_code == 200
    with drill.app.app_context():
        db.engine.dispose()   # the drill's own reads reconnect after the restart
    web = drill.web()
    drill.worker()
    drill.beat()
    recipients = [tenant.users["owner"]["email"], tenant.users["admin"]["email"]]

    escalator = Escalator(web.base_url, tenant, psa_server)
    escalator.prepare(60)   # the load is handoffs alone: each one answered 201 or 503
    escalator.start(interval=0.2)
    wait_for(lambda: len(escalator.created) >= 5, 30, message="escalations before")
    drill_postgres.stop()
    stopped, answered_before = time.monotonic(), len(escalator.answers)
    wait_for(lambda: time.monotonic() - stopped >= DOWN_AT_LEAST
             and len(escalator.answers) - answered_before >= 10, 30, 0.1,
             lambda: f"answers while Postgres is down: {escalator.answers[answered_before:]}")
    during = list(escalator.answers[answered_before + 1:])   # the first may have been in flight
    created_before_start = len(escalator.created)
    drill_postgres.start()
    restarted = time.monotonic()
    wait_for(lambda: len(escalator.created) >= created_before_start + 5, 60,
             message=lambda: f"201s again after the restart: {escalator.answers[-5:]}")
    recovered_in = round(time.monotonic() - restarted, 1)
    escalator.stop()
    with drill.app.app_context():
        db.engine.dispose()

    def counts():
        found = drill_counts(drill.app, tenant.account_id, smtp=drill_smtp,
                             recipients=recipients, psa=psa_server)
        with drill.app.app_context():
            found["created_though_refused"] = db.session.scalar(
                db.select(db.func.count()).select_from(Handoff).where(
                    Handoff.session_id.in_(escalator.refused_sessions or [0])))
            created = set(db.session.scalars(db.select(Handoff.id).where(
                Handoff.account_id == tenant.account_id)))
            db.session.remove()
        found["created_but_not_201"] = len(created - set(escalator.created))
        return found

    def expected(_found):
        wanted = expected_counts(len(escalator.created), recipients, notes=True)
        wanted["created_though_refused"] = wanted["created_but_not_201"] = 0
        return wanted
    found, wanted = settle(counts, expected, 90)
    posts = escalator.statuses()
    found["posts"] = posts
    found["while_down"] = {str(status): sum(1 for _, s, *_ in during if s == status)
                           for status in sorted({s for _, s, *_ in during}, key=str)}
    found["recovered_in_seconds"] = recovered_in
    wanted["posts"] = {what: {code: n for code, n in by_status.items() if code in (201, 503)}
                       for what, by_status in posts.items()}
    wanted["while_down"] = {"503": len(during)}
    wanted["recovered_in_seconds"] = recovered_in
    line = format_counts(found)
    assert found == wanted, f"drill counts: {line}"
    misshapen = [a for a in during if a[1] == 503 and '"code": "unavailable"' not in a[2]
                 and '"code":"unavailable"' not in a[2]]
    assert misshapen == [], f"503 not in the one error shape: {misshapen[:3]}"
    assert posts["handoff"].get(503, 0) >= 10, f"drill counts: {line}"
    assert recovered_in < 30, f"drill counts: {line}"
