"""Reminders of unclaimed escalations, with real beats, a real worker, SMTP and a chat
webhook: due ones are sent once, claimed and cancelled ones never."""
import json
import threading

import pytest

from tests.conftest import wait_for
from tests.factories import app_without_broker, escalate
from tests.servers.beat import BeatProcess
from tests.servers.chat import TEAMS, ChatServer
from webapp.extensions import db
from webapp.live import stream_key
from webapp.models import Delivery, Handoff
from webapp.models.base import utcnow
from webapp.redis_client import get_redis
from webapp.services import reminders

pytestmark = pytest.mark.pipeline


@pytest.fixture
def chat_server():
    with ChatServer() as server:
        yield server


@pytest.fixture
def beats(app_env):
    started: list[BeatProcess] = []

    def start(queue: str, count: int = 1):
        import os
        env = {**os.environ, **app_env, "CELERY_QUEUE": queue, "BEAT_REMIND_SECONDS": "1",
               "BEAT_REDELIVER_SECONDS": "3600"}
        for number in range(count):
            beat = BeatProcess(env, f"{queue}-{number}")
            beat.start()
            started.append(beat)
        return started

    yield start
    for beat in started:
        beat.stop()


def backdate(app, handoff_id: int, minutes: float) -> None:
    """Make the escalation `minutes` older, as if the clock had moved on."""
    with app.app_context():
        db.session.execute(db.text(
            "UPDATE handoffs SET created_at = created_at - make_interval(secs => :s) "
            "WHERE id = :id"), {"s": minutes * 60, "id": handoff_id})
        db.session.commit()


def reminder_rows(app, handoff_id: int) -> list:
    with app.app_context():
        return list(db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.purpose == "reminder")
            .order_by(Delivery.id)))


def reminded_at(app, handoff_id: int):
    with app.app_context():
        return db.session.get(Handoff, handoff_id).reminded_at


def reminder_emails(smtp_server, handoff_id: int) -> list:
    return [m for m in smtp_server.about(handoff_id) if m.message["X-Escalation-Reminder"]]


def test_an_unclaimed_escalation_is_reminded_once_and_claimed_or_cancelled_ones_never(
        app_env, make_tenant, smtp_server, chat_server, private_worker, beats):
    _, queue_app = private_worker("remind")
    client = queue_app.test_client()
    tenant = make_tenant("Remind MSP", extra_engineers=1)
    admin = tenant.headers("admin")
    assert client.put("/api/v1/account/escalation-policy", headers=admin,
                      json={"remind_after_minutes": 1}).status_code == 200
    assert client.put("/api/v1/account/chat", headers=admin, json={
        "provider": "teams", "webhook_url": chat_server.teams_url}).status_code == 200

    waiting = escalate(client, tenant, title="Printer queue stuck")
    claimed = escalate(client, tenant, title="Claimed before its minute")
    cancelled = escalate(client, tenant, title="Cancelled before its minute")
    assert client.post(f"/api/v1/handoffs/{claimed['id']}/claim",
                       headers=tenant.headers("engineer2")).status_code == 200
    assert client.post(f"/api/v1/handoffs/{cancelled['id']}/cancel",
                       headers=tenant.headers("engineer")).status_code == 200
    for handoff in (waiting, claimed, cancelled):
        backdate(queue_app, handoff["id"], 2)
    beats("remind", count=2)   # two beats at once: still one reminder each

    wait_for(lambda: len(reminder_emails(smtp_server, waiting["id"])) >= 2, 30,
             message="the reminder emails")
    # a later escalation falling due shows the beats went on sweeping after the first
    later = escalate(client, tenant, title="Falls due later")
    backdate(queue_app, later["id"], 2)
    wait_for(lambda: len(reminder_emails(smtp_server, later["id"])) >= 2, 30,
             message="the later reminder")
    wait_for(lambda: all(row.status == "sent" for row in reminder_rows(queue_app, later["id"])),
             20, message="the later reminder rows")

    emails = reminder_emails(smtp_server, waiting["id"])
    recipients = sorted(address for m in emails for address in m.rcpt_tos)
    assert recipients == sorted([tenant.users["owner"]["email"], tenant.users["admin"]["email"]])
    for message in emails:
        subject = message.message["Subject"]
        assert "Still unclaimed" in subject and "Printer queue stuck" in subject
    engineers = (tenant.users["engineer"]["email"], tenant.users["engineer2"]["email"])
    assert not [m for m in emails if set(m.rcpt_tos) & set(engineers)]
    for handoff in (claimed, cancelled):
        assert reminder_emails(smtp_server, handoff["id"]) == []
        assert reminder_rows(queue_app, handoff["id"]) == []
        assert reminded_at(queue_app, handoff["id"]) is None
    assert reminded_at(queue_app, waiting["id"]) is not None

    rows = reminder_rows(queue_app, waiting["id"])
    assert sorted(row.channel for row in rows) == ["chat", "email", "email"]
    assert all(row.status == "sent" for row in rows)
    cards = [m for m in chat_server.messages_to(TEAMS) if "Printer queue stuck" in json.dumps(
        m.json)]
    assert len(cards) == 2   # the escalation's message, then its one reminder
    assert "still unclaimed" in json.dumps(cards[1].json).lower()

    entries = get_redis(queue_app).xrange(stream_key(tenant.account_id))
    updates = [json.loads(fields[b"data"])["handoff"] for _, fields in entries
               if fields[b"event"] == b"handoff_updated"]
    assert any(h["id"] == waiting["id"] and h["reminded_at"] for h in updates)


def test_the_reminder_statement_holds_under_two_sweeps_at_once(app_env, make_tenant):
    """A second sweep that starts while the first one's transaction is still open (as two
    beats, or a job overlapping itself, would, without the advisory lock): each due
    escalation is reminded by exactly one of them."""
    quiet = app_without_broker(app_env)
    client = quiet.test_client()
    tenant = make_tenant("Race MSP")
    ids = [escalate(client, tenant, title=f"Race {n}")["id"] for n in range(6)]
    for handoff_id in ids:
        backdate(quiet, handoff_id, 30)
    with quiet.app_context():
        first = db.engine.connect()
        held = first.execute(reminders.REMIND_DUE, {"now": utcnow(), "limit": 500,
                                                    "waiting": "pending"}).all()
        second: list = []

        def sweep():
            with quiet.app_context():
                second.append(reminders.remind_due(utcnow()))
                db.session.remove()
        thread = threading.Thread(target=sweep)
        thread.start()
        thread.join(2)          # it either returns at once, or waits for the first's locks
        first.commit()
        first.close()
        thread.join(30)
    assert sorted({row.handoff_id for row in held}) == sorted(ids)
    assert second == [{}], second
    for handoff_id in ids:   # owner and admin, once each (the engineer escalated)
        rows = reminder_rows(quiet, handoff_id)
        assert sorted(row.recipient for row in rows) == sorted(
            [tenant.users["owner"]["email"], tenant.users["admin"]["email"]])
    with quiet.app_context():   # a third sweep finds nothing left to remind
        assert reminders.remind_due(utcnow()) == {}


@pytest.mark.parametrize("action, role, reason", [("claim", "admin", "already claimed"),
                                                   ("cancel", "engineer", "cancelled")])
def test_a_claim_or_cancel_turns_pending_reminders_to_skipped(app_env, make_tenant, action,
                                                               role, reason):
    quiet = app_without_broker(app_env)   # rows stay pending: no worker will take them
    client = quiet.test_client()
    tenant = make_tenant("Skip MSP")
    handoff = escalate(client, tenant)
    backdate(quiet, handoff["id"], 30)
    with quiet.app_context():
        assert list(reminders.remind_due(utcnow())) == [handoff["id"]]
    assert [row.status for row in reminder_rows(quiet, handoff["id"])] == ["pending"] * 2
    assert client.post(f"/api/v1/handoffs/{handoff['id']}/{action}",
                       headers=tenant.headers(role)).status_code == 200
    rows = reminder_rows(quiet, handoff["id"])
    assert [row.status for row in rows] == ["skipped"] * 2
    assert all(reason in row.last_error for row in rows)


def test_reminders_off_and_not_yet_due_escalations_are_left_alone(app_env, make_tenant):
    quiet = app_without_broker(app_env)
    client = quiet.test_client()
    off, on = make_tenant("Off MSP"), make_tenant("On MSP")
    assert client.put("/api/v1/account/escalation-policy", headers=off.headers("admin"),
                      json={"remind_after_minutes": 0}).status_code == 200
    old_off = escalate(client, off)
    young = escalate(client, on)
    parked = escalate(client, on, intent="park", title="Parked long ago")
    backdate(quiet, old_off["id"], 600)
    backdate(quiet, young["id"], 14)      # the default is 15 minutes
    backdate(quiet, parked["id"], 600)
    with quiet.app_context():
        assert reminders.remind_due(utcnow()) == {}
    backdate(quiet, young["id"], 1.5)
    with quiet.app_context():
        assert list(reminders.remind_due(utcnow())) == [young["id"]]


def test_a_reminder_reaches_only_its_own_accounts_people(app_env, make_tenant):
    """Two accounts' escalations fall due in one sweep: each is reminded to its own owner and
    admin, never the other account's."""
    quiet = app_without_broker(app_env)
    client = quiet.test_client()
    first, second = make_tenant("First MSP"), make_tenant("Second MSP")
    ours, theirs = escalate(client, first), escalate(client, second)
    for handoff in (ours, theirs):
        backdate(quiet, handoff["id"], 30)
    with quiet.app_context():
        assert sorted(reminders.remind_due(utcnow())) == sorted([ours["id"], theirs["id"]])
    for tenant, handoff in ((first, ours), (second, theirs)):
        rows = reminder_rows(quiet, handoff["id"])
        assert sorted(row.recipient_user_id for row in rows) == sorted(
            [tenant.users["owner"]["id"], tenant.users["admin"]["id"]])
        assert {row.account_id for row in rows} == {tenant.account_id}
