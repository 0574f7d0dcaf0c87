"""Escalation emails through a real worker, a real Redis broker and a real SMTP server."""
import pytest

from tests.conftest import wait_for
from tests.factories import escalate, make_session, post_handoff, undispatched_handoff
from tests.helpers import email_rows

pytestmark = pytest.mark.pipeline


def all_emails_settled(app, handoff_id):
    rows = email_rows(app, handoff_id)
    return rows if rows and all(r.status in ("sent", "failed", "dead", "skipped")
                                for r in rows) else None


@pytest.fixture
def team(make_tenant, smtp_server, celery_worker_process):
    """A tenant whose escalator has five senior teammates (owner, admin, three engineers)."""
    smtp_server.reset()
    return make_tenant("Acme", extra_engineers=3)


def test_escalation_to_five_teammates_sends_five_emails_one_each(app, client, team,
                                                                 smtp_server):
    handoff = escalate(client, team, role="engineer", urgency="high",
                       note="Mail flow broken for the whole office")
    rows = wait_for(lambda: all_emails_settled(app, handoff["id"]), 20, message="emails")
    assert len(rows) == 5 and all(r.status == "sent" for r in rows)
    expected = {team.users[label]["email"].lower()
                for label in ("owner", "admin", "engineer2", "engineer3", "engineer4")}
    received = smtp_server.about(handoff["id"])
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(expected)
    # each message is addressed in its headers to its own recipient, with its own id
    assert all(m.message["To"].lower() == m.rcpt_tos[0] for m in received)
    assert len({m.message["Message-ID"] for m in received}) == 5
    message = smtp_server.to(team.users["admin"]["email"])[0]
    assert message.subject.startswith("[URGENT] Escalation: Exchange mail stuck (Contoso)")
    assert team.users["engineer"]["name"] in message.subject
    body = message.body
    assert "Mail flow broken for the whole office" in body
    assert "Client:    Contoso" in body and "Urgency:   HIGH" in body
    assert f"http://escalations.test/queue#handoff-{handoff['id']}" in body
    assert message.message["X-Escalation-Handoff"] == str(handoff["id"])


def test_tasks_delivered_twice_still_send_each_email_once(app, client, team, smtp_server):
    handoff = escalate(client, team)
    rows = wait_for(lambda: all_emails_settled(app, handoff["id"]), 20, message="emails")
    celery = app.extensions["celery"]
    celery.send_task("handoffs.dispatch", args=(handoff["id"],))
    for _ in range(2):   # the group task too, as a redelivered message would run it again
        celery.send_task("notifications.send_emails", args=([row.id for row in rows],))
    for row in rows:
        celery.send_task("notifications.send_email", args=(row.id,))
        celery.send_task("notifications.send_email", args=(row.id,))
    # a marker task queued after the duplicates: once it ran, the duplicates have run too
    from webapp.redis_client import get_redis, key
    get_redis(app).delete(key("worker", "heartbeat"))
    celery.send_task("maintenance.heartbeat")
    wait_for(lambda: get_redis(app).get(key("worker", "heartbeat")), 15, message="drain")
    wait_for(lambda: all_emails_settled(app, handoff["id"]), 10)
    assert len(smtp_server.about(handoff["id"])) == 5
    assert all(r.attempts == 1 for r in email_rows(app, handoff["id"]))


def test_smtp_refusing_for_a_while_then_accepting_delivers_each_once(app, client, team,
                                                                     smtp_server):
    smtp_server.handler.refuse_next = 7      # 451 for the first seven recipients tried
    smtp_server.handler.refuse_next_only = f"@{team.account_id}.example"  # of this team
    handoff = escalate(client, team)

    def delivered():
        rows = email_rows(app, handoff["id"])
        return rows if all(r.status == "sent" for r in rows) else None
    rows = wait_for(delivered, 30, message="emails after SMTP recovers")
    received = smtp_server.about(handoff["id"])
    assert len(received) == 5
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(
        r.recipient for r in rows)
    assert sum(r.attempts for r in rows) == 5 + 7
    assert any(r.attempts > 1 for r in rows)


def test_one_refused_recipient_never_resends_to_the_others(app, client, team, smtp_server):
    bad = team.users["admin"]["email"].lower()
    smtp_server.handler.refuse_addresses = {bad}
    try:
        handoff = escalate(client, team)
        rows = wait_for(lambda: all_emails_settled(app, handoff["id"]), 20)
    finally:
        smtp_server.handler.refuse_addresses = set()
    by_recipient = {r.recipient: r for r in rows}
    assert by_recipient[bad].status == "dead" and by_recipient[bad].next_attempt_at is None
    assert "550" in by_recipient[bad].last_error
    assert all(r.status == "sent" and r.attempts == 1 for k, r in by_recipient.items()
               if k != bad)
    assert len(smtp_server.about(handoff["id"])) == 4


def test_a_title_with_a_header_injection_emails_every_senior_once_and_nobody_else(
        app, client, team, smtp_server):
    session_id = make_session(client, team, title="Printer down\r\nBcc: intruder@evil.example",
                              client_name="Contoso\nX-Injected: yes")
    response = post_handoff(client, team, session_id)
    assert response.status_code == 201, response.get_json()
    handoff = response.get_json()
    rows = wait_for(lambda: all_emails_settled(app, handoff["id"]), 20, message="emails")
    assert [r.status for r in rows] == ["sent"] * 5, [(r.status, r.last_error) for r in rows]
    expected = {team.users[label]["email"].lower()
                for label in ("owner", "admin", "engineer2", "engineer3", "engineer4")}
    received = smtp_server.about(handoff["id"])
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(expected)
    assert smtp_server.to("intruder@evil.example") == []
    for message in received:
        assert message.message["Bcc"] is None and message.message["X-Injected"] is None
        assert message.subject.startswith(
            "Escalation: Printer down Bcc: intruder@evil.example (Contoso X-Injected: yes)")


def test_a_bad_header_is_a_permanent_failure_with_a_reason(app, app_env, tenant):
    """Should a line break reach a header some other way, the row ends with its reason
    instead of being retried for nothing."""
    from webapp.services import deliveries, notifications
    from webapp.services.channels import channel
    handoff_id = undispatched_handoff(app_env, tenant)
    [row] = [r for r in email_rows(app, handoff_id)][:1]
    compose = notifications.compose

    def with_bad_header(handoff, delivery):
        message = compose(handoff, delivery)
        message.subject = "broken\nBcc: x@evil.example"
        return message

    notifications.compose = with_bad_header
    try:
        with app.app_context():
            deliveries.run(row.id, notifications.send_escalation_email,
                           channel("email").policy)
    finally:
        notifications.compose = compose
    [settled] = [r for r in email_rows(app, handoff_id) if r.id == row.id]
    assert settled.status == "dead" and settled.next_attempt_at is None
    assert settled.last_error == "the message has a line break in a header; not sent"
