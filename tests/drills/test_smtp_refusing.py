"""Drill: the SMTP server answers every recipient with 451 for a while, then accepts. Every
email is retried with backoff (each row refused at least twice) and arrives once."""
import time

import httpx
import pytest

from tests.conftest import wait_for
from tests.drills.conftest import Escalator, drill_counts, expected_counts, format_counts, settle
from tests.helpers import email_rows

pytestmark = pytest.mark.drills

REFUSING_AT_LEAST = 6.0   # seconds


@pytest.mark.timeout(180)
def test_smtp_refusing_with_4xx_then_accepting_sends_every_email_once(
        rig, drill_smtp, make_tenant):
    # backoff a little slower than the run's: the refusal spans several attempts of each row
    # (one on its third attempt has been refused twice) and stays well inside its budget of 8
    drill = rig("smtp", MAIL_PORT=str(drill_smtp.port), DELIVERY_BACKOFF_SCALE="0.1")
    web = drill.web()
    drill.worker()
    drill.beat()
    tenant = make_tenant("SMTP Drill MSP", extra_engineers=3)
    recipients = [tenant.users[label]["email"] for label in
                  ("owner", "admin", "engineer2", "engineer3", "engineer4")]
    drill_smtp.handler.refusing = "451 4.3.0 Mailbox busy, try again later"
    refusing_since = time.monotonic()
    escalator = Escalator(web.base_url, tenant)
    with httpx.Client(base_url=web.base_url, timeout=10) as http:
        for _ in range(6):
            escalator.one(http)

    def each_row_refused_twice():
        rows = [row for handoff_id in escalator.created
                for row in email_rows(drill.app, handoff_id)]
        return (len(rows) == 30 and all(row.attempts >= 3 for row in rows)
                and time.monotonic() - refusing_since >= REFUSING_AT_LEAST)
    wait_for(each_row_refused_twice, 60, 0.1,
             lambda: f"every row refused twice: {len(drill_smtp.handler.refused)} refusals")
    drill_smtp.handler.refusing = None
    refusals = len(drill_smtp.handler.refused)

    def counts():
        found = drill_counts(drill.app, tenant.account_id, smtp=drill_smtp,
                             recipients=recipients)
        found["posts"] = escalator.statuses()
        return found

    def expected(_found):
        wanted = expected_counts(6, recipients)
        wanted["posts"] = {what: {201: 6} for what in ("handoff", "message", "session")}
        return wanted
    found, wanted = settle(counts, expected, 60)
    found["smtp_refusals"] = wanted["smtp_refusals"] = refusals
    line = format_counts(found)
    assert found == wanted, f"drill counts: {line}"
    assert refusals >= 60, f"drill counts: {line}"
