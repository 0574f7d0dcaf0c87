"""The chat channel through a real worker and a local webhook server that answers as Teams
Workflows, the legacy Teams connector and Slack do, with faults."""
import json

import pytest

from tests.conftest import artifacts_dir, wait_for
from tests.factories import escalate
from tests.servers.chat import SLACK, TEAMS, TEAMS_LEGACY, ChatServer
from webapp.extensions import db
from webapp.models import Delivery

pytestmark = pytest.mark.pipeline


@pytest.fixture
def chat_server():
    with ChatServer() as server:
        yield server


def set_chat(client, tenant, provider: str, url: str) -> None:
    answer = client.put("/api/v1/account/chat", headers=tenant.headers("admin"),
                        json={"provider": provider, "webhook_url": url})
    assert answer.status_code == 200, answer.get_data(as_text=True)


def chat_row(app, handoff_id: int):
    with app.app_context():
        return db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "chat")).one()


def settled_chat_row(app, handoff_id: int):
    row = chat_row(app, handoff_id)
    return row if row.status in ("sent", "dead", "skipped") else None


def card_text(message) -> str:
    return json.dumps(message.json)


def test_a_teams_workflows_webhook_gets_one_adaptive_card_also_after_a_503(
        app, client, tenant, chat_server, celery_worker_process):
    set_chat(client, tenant, "teams", chat_server.teams_url)
    chat_server.fail_next(503, path="/workflows/")
    handoff = escalate(client, tenant, title="VPN drops every hour", urgency="high")
    row = wait_for(lambda: settled_chat_row(app, handoff["id"]), 30, message="the chat row")
    assert (row.status, row.attempts, row.purpose) == ("sent", 2, "escalation")
    posted = chat_server.messages_to(TEAMS)
    assert len(posted) == 1, [m.json for m in posted]
    envelope = posted[0].json
    assert envelope["type"] == "message"
    (attachment,) = envelope["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    text = card_text(posted[0])
    assert "VPN drops every hour" in text
    assert f"http://escalations.test/queue#handoff-{handoff['id']}" in text
    assert "Contoso" in text and tenant.users["engineer"]["name"] in text
    # the 503 came first, then the one accepted message
    assert [r.path.split("/")[1] for r in chat_server.requests] == ["workflows", "workflows"]


def test_the_webhook_url_appears_in_no_answer_and_no_worker_log(
        app, client, tenant, chat_server, celery_worker_process):
    set_chat(client, tenant, "slack", chat_server.slack_url)
    chat_server.fail_next(410, path="/services/")
    handoff = escalate(client, tenant)
    row = wait_for(lambda: settled_chat_row(app, handoff["id"]), 30, message="the chat row")
    assert row.status == "dead" and row.next_attempt_at is None
    assert "Slack" in row.last_error and "channel_is_archived" in row.last_error
    secret = chat_server.slack_url.rsplit("/", 1)[1]
    answers = [client.get(path, headers=tenant.headers()).get_data(as_text=True) for path in (
        "/api/v1/account/chat", f"/api/v1/handoffs/{handoff['id']}",
        f"/api/v1/handoffs/{handoff['id']}/deliveries")]
    assert '"chat"' in answers[2]
    for text in answers:
        assert secret not in text and chat_server.slack_url not in text
    log = (artifacts_dir() / "celery-worker.log").read_text(errors="replace")
    assert str(handoff["id"]) in log or "chat.post_message" in log
    assert secret not in log


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_slack_refusals_are_permanent_with_the_reason(app, client, tenant, chat_server,
                                                      celery_worker_process, status):
    set_chat(client, tenant, "slack", chat_server.slack_url)
    chat_server.fail_next(status, path="/services/")
    handoff = escalate(client, tenant)
    row = wait_for(lambda: settled_chat_row(app, handoff["id"]), 30, message="the chat row")
    code = {400: "invalid_payload", 403: "action_prohibited", 404: "channel_not_found",
            410: "channel_is_archived"}[status]
    assert (row.status, row.attempts) == ("dead", 1)
    assert str(status) in row.last_error and code in row.last_error
    assert chat_server.messages_to(SLACK) == []


def test_a_429_is_retried_after_its_retry_after(app, client, tenant, chat_server,
                                                celery_worker_process):
    set_chat(client, tenant, "slack", chat_server.slack_url)
    chat_server.fail_next(429, retry_after=1, path="/services/")
    handoff = escalate(client, tenant)
    row = wait_for(lambda: settled_chat_row(app, handoff["id"]), 30, message="the chat row")
    assert (row.status, row.attempts) == ("sent", 2)
    first, second = chat_server.requests
    assert second.time - first.time >= 1.0
    (message,) = chat_server.messages_to(SLACK)
    assert message.json["text"] and message.json["blocks"]
    assert f"/queue#handoff-{handoff['id']}" in card_text(message)


def test_a_legacy_teams_connector_answering_200_1_counts_as_sent(
        app, client, tenant, chat_server, celery_worker_process):
    set_chat(client, tenant, "teams", chat_server.teams_legacy_url)
    handoff = escalate(client, tenant)
    row = wait_for(lambda: settled_chat_row(app, handoff["id"]), 30, message="the chat row")
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(chat_server.messages_to(TEAMS_LEGACY)) == 1


def test_a_park_and_an_account_without_chat_post_nothing(app, client, tenant, other_tenant,
                                                         chat_server, celery_worker_process):
    set_chat(client, tenant, "slack", chat_server.slack_url)
    parked = escalate(client, tenant, intent="park")
    plain = escalate(client, other_tenant)
    with app.app_context():
        channels = db.session.scalars(db.select(Delivery.channel).where(
            Delivery.handoff_id.in_((parked["id"], plain["id"])))).all()
    assert "chat" not in channels and "email" in channels
    assert chat_server.requests == []
