"""Drill: the worker is killed with SIGKILL in the middle of a fan-out (emails going out one
by one, a PSA note stored but its answer not yet back), then another starts. Every email
arrives; repeats are bounded by the email rows that were in flight at the kill (the counts
say how many); each ticket has one note; nothing is left unfinished within two minutes
(beat retakes the dead worker's rows once their leases run out)."""
import time

import httpx
import pytest

from tests.conftest import wait_for
from tests.drills.conftest import Escalator, drill_counts, expected_counts, format_counts, settle
from webapp.extensions import db
from webapp.models import Delivery

pytestmark = pytest.mark.drills

ESCALATIONS = 2
NOTE_ANSWER_DELAY = 4.0   # the PSA stores the note, then holds its answer this long


def in_flight(app, account_id: int) -> dict[str, int]:
    """The account's rows a worker holds now, by channel."""
    with app.app_context():
        rows = db.session.execute(db.select(Delivery.channel, db.func.count()).where(
            Delivery.account_id == account_id, Delivery.status == "sending")
            .group_by(Delivery.channel)).all()
        db.session.remove()
    return dict(sorted((channel, count) for channel, count in rows))


@pytest.mark.timeout(240)
def test_a_worker_killed_mid_fan_out_loses_nothing_and_repeats_at_most_what_was_in_flight(
        rig, drill_smtp, psa_server, make_tenant):
    # the dead worker's two PSA slots free themselves only when their hold runs out (tens of
    # seconds, from PSA_TIMEOUT): room for two more keeps the drill short
    drill = rig("kill", MAIL_PORT=str(drill_smtp.port), PSA_TIMEOUT="8",
                PSA_MAX_CONCURRENT_PER_ACCOUNT="4")
    web = drill.web()
    first = drill.worker(concurrency=8)
    drill.beat()
    tenant = make_tenant("Kill Drill MSP", extra_engineers=14)
    recipients = [user["email"] for label, user in tenant.users.items()
                  if label not in ("engineer", "viewer")]
    assert len(recipients) == 16
    drill_smtp.handler.stall_rcpt_seconds = 0.5   # the fan-out takes seconds: kill it midway
    psa_server.inject("POST", "/notes", delay=NOTE_ANSWER_DELAY, times=ESCALATIONS)
    escalator = Escalator(web.base_url, tenant, psa_server)
    with httpx.Client(base_url=web.base_url, timeout=10) as http:
        assert http.put("/api/v1/account/psa", headers=tenant.headers("admin"), json={
            "provider": "connectwise", **psa_server.settings("connectwise")}).status_code == 200
        for _ in range(ESCALATIONS):
            escalator.one(http)

    def emails_sent() -> int:
        return sum(len(drill_smtp.about(handoff_id)) for handoff_id in escalator.created)

    def note_awaiting_answer() -> bool:
        return any(r.method == "POST" and r.path.endswith("/notes")
                   and time.monotonic() - r.time < NOTE_ANSWER_DELAY - 1.0
                   for r in psa_server.requests)
    wait_for(lambda: emails_sent() >= 2 and note_awaiting_answer(), 60, 0.02,
             lambda: f"the fan-out under way: {emails_sent()} emails, {psa_server.requests}")
    first.kill()
    held = in_flight(drill.app, tenant.account_id)
    sent_at_kill = emails_sent()
    drill_smtp.handler.stall_rcpt_seconds = 0.0
    drill.worker(concurrency=8)

    def counts():
        found = drill_counts(drill.app, tenant.account_id, smtp=drill_smtp,
                             recipients=recipients, psa=psa_server)
        found["in_flight_at_kill"] = held
        found["emails_at_kill"] = sent_at_kill
        return found

    def expected(found):
        wanted = expected_counts(ESCALATIONS, recipients, notes=True)
        wanted["in_flight_at_kill"], wanted["emails_at_kill"] = held, sent_at_kill
        # a repeat is an email accepted just before the kill whose row was still `sending`:
        # there can be no more of them than such rows, and they are counted, not hidden
        allowed = min(found["emails_repeated"], held.get("email", 0))
        wanted["emails_repeated"] = allowed
        per_recipient = found["emails_per_recipient"]
        if (per_recipient.keys() == wanted["emails_per_recipient"].keys()
                and min(per_recipient.values()) >= ESCALATIONS
                and sum(per_recipient.values()) == ESCALATIONS * len(recipients) + allowed):
            wanted["emails_per_recipient"] = per_recipient
        return wanted
    started = time.monotonic()
    found, wanted = settle(counts, expected, 120)
    found["seconds_to_settle"] = wanted["seconds_to_settle"] = round(
        time.monotonic() - started, 1)
    line = format_counts(found)
    assert found == wanted, f"drill counts: {line}"
    assert 2 <= sent_at_kill < ESCALATIONS * len(recipients), f"not mid fan-out: {line}"
    assert held.get("email", 0) >= 1 and held.get("psa", 0) >= 1, f"drill counts: {line}"
