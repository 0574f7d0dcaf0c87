"""Drill: the PSA (ConnectWise) answers every note with 429 and Retry-After, then with 503,
then is healthy. Each ticket gets one note, and no ticket is asked again sooner than the
Retry-After it was given."""
import httpx
import pytest

from tests.conftest import wait_for
from tests.drills.conftest import Escalator, drill_counts, expected_counts, format_counts, settle

pytestmark = pytest.mark.drills

RETRY_AFTER = 2
ESCALATIONS = 4
NOTES = "/notes"


def note_posts(requests) -> list:
    return [r for r in requests if r.method == "POST" and r.path.endswith(NOTES)]


def ticket_of(request) -> str:
    return request.path.split("/")[-2]


def posted_tickets(psa, since: int = 0) -> set[str]:
    """The tickets a note was POSTed to, in the PSA's requests from `since` on."""
    return {ticket_of(r) for r in note_posts(psa.requests[since:])}


@pytest.mark.timeout(180)
def test_psa_answering_429_then_5xx_then_healthy_gets_one_note_per_ticket(
        rig, drill_smtp, psa_server, make_tenant):
    drill = rig("psa", MAIL_PORT=str(drill_smtp.port))
    web = drill.web()
    drill.worker()
    drill.beat()
    tenant = make_tenant("PSA Drill MSP")
    recipients = [tenant.users["owner"]["email"], tenant.users["admin"]["email"]]
    psa_server.inject("POST", NOTES, status=429, headers={"Retry-After": str(RETRY_AFTER)},
                      body={"code": "TooManyRequests", "message": "Rate limit exceeded"},
                      times=10_000)
    escalator = Escalator(web.base_url, tenant, psa_server)
    with httpx.Client(base_url=web.base_url, timeout=10) as http:
        assert http.put("/api/v1/account/psa", headers=tenant.headers("admin"), json={
            "provider": "connectwise", **psa_server.settings("connectwise")}).status_code == 200
        for _ in range(ESCALATIONS):
            escalator.one(http)
    tickets = {str(ticket) for ticket in range(3001, 3001 + ESCALATIONS)}
    wait_for(lambda: posted_tickets(psa_server) >= tickets, 60, 0.1,
             lambda: f"a 429 for every ticket; got {posted_tickets(psa_server)}")
    psa_server.clear_faults()
    psa_server.inject("POST", NOTES, status=503, body={"code": "ServiceUnavailable",
                                                      "message": "Try again later"},
                      times=10_000)
    since = len(psa_server.requests)
    wait_for(lambda: posted_tickets(psa_server, since) >= tickets, 60, 0.1,
             lambda: f"a 503 for every ticket; got {posted_tickets(psa_server, since)}")
    psa_server.clear_faults()
    healthy_since = len(psa_server.requests)

    def counts():
        found = drill_counts(drill.app, tenant.account_id, smtp=drill_smtp,
                             recipients=recipients, psa=psa_server)
        found["posts"] = escalator.statuses()
        return found

    def expected(_found):
        wanted = expected_counts(ESCALATIONS, recipients, notes=True)
        wanted["posts"] = {what: {201: ESCALATIONS} for what in ("handoff", "message", "session")}
        return wanted
    found, wanted = settle(counts, expected, 60)
    # after each 429, that ticket's next POST waited out the Retry-After
    requests = psa_server.requests
    throttled, failed = note_posts(requests[:since]), note_posts(requests[since:healthy_since])
    every = note_posts(requests)
    gaps = [round(min(later) - first.time, 2) for first in throttled
            if (later := [r.time for r in every if ticket_of(r) == ticket_of(first)
                          and r.time > first.time])]
    found["note_posts"] = {"throttled": len(throttled), "failed_5xx": len(failed),
                           "shortest_wait_after_429": min(gaps) if gaps else None}
    wanted["note_posts"] = dict(found["note_posts"])
    line = format_counts(found)
    assert found == wanted, f"drill counts: {line}"
    assert len(throttled) >= ESCALATIONS and gaps, f"drill counts: {line}"
    assert min(gaps) >= RETRY_AFTER - 0.1, f"a ticket was asked before its Retry-After: {line}"
