"""The AI assessment through a real worker: heuristic default and an OpenAI-compatible server."""
import json

import pytest

from tests.conftest import wait_for
from tests.factories import escalate
from tests.servers.openai_compat import OpenAICompatServer
from webapp.extensions import db
from webapp.live import stream_key
from webapp.models import Delivery, Handoff
from webapp.redis_client import get_redis

pytestmark = pytest.mark.pipeline


def assessment_row(app, handoff_id):
    with app.app_context():
        return db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "assessment")).one()


def settled(app, handoff_id):
    """The row once it needs nothing more: sent, or dead (failed for good)."""
    row = assessment_row(app, handoff_id)
    done = row.status in ("sent", "dead")
    return row if done else None


def test_heuristic_assessment_is_stored_and_announced(app, client, tenant,
                                                      celery_worker_process):
    handoff = escalate(client, tenant, note="Users get 'the trust relationship failed'")
    row = wait_for(lambda: settled(app, handoff["id"]), 20, message="assessment")
    assert row.status == "sent" and row.attempts == 1
    body = client.get(f"/api/v1/handoffs/{handoff['id']}", headers=tenant.headers()).get_json()
    assessment = body["assessment"]
    assert assessment["status"] == "ready" and assessment["provider"] == "heuristic"
    assert assessment["summary"] and assessment["likely_causes"] and assessment["next_steps"]
    assert 0 <= assessment["confidence"] <= 1

    def updated_event():
        entries = get_redis(app).xrange(stream_key(tenant.account_id))
        events = [json.loads(fields[b"data"]) for _, fields in entries
                  if fields[b"event"] == b"handoff_updated"]
        return [e for e in events if e["handoff"]["assessment"]["status"] == "ready"]
    event = wait_for(updated_event, 10, message="handoff_updated event")[0]
    assert event["handoff"]["id"] == handoff["id"] and event["type"] == "handoff_updated"


@pytest.fixture
def ai_server():
    with OpenAICompatServer(api_key="sk-test") as server:
        yield server


@pytest.fixture
def openai_worker(private_worker, ai_server):
    return private_worker("openai-assess", AI_PROVIDER="openai", AI_BASE_URL=ai_server.url,
                          AI_API_KEY="sk-test", AI_MODEL="diag-1", AI_TIMEOUT="1")


def escalate_via(queue_app, tenant, **fields):
    return escalate(queue_app.test_client(), tenant, **fields)


def test_openai_compatible_assessment_is_stored(app, tenant, ai_server, openai_worker):
    _, queue_app = openai_worker
    handoff = escalate_via(queue_app, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 20, message="assessment")
    assert row.status == "sent"
    with app.app_context():
        stored = db.session.get(Handoff, handoff["id"]).assessment
    assert stored["provider"] == "openai" and stored["model"]
    assert stored["summary"] == ai_server.assessment["summary"]
    assert "Need someone with Exchange admin rights" in ai_server.requests[-1].user_text


def test_provider_timeouts_are_retried_then_failed_with_the_reason(app, tenant, ai_server,
                                                                   openai_worker):
    _, queue_app = openai_worker
    ai_server.delay_next(2.5, times=10)
    handoff = escalate_via(queue_app, tenant)
    row = wait_for(lambda: assessment_row(app, handoff["id"]).status == "dead"
                   and assessment_row(app, handoff["id"]), 40, message="assessment dead")
    assert row.attempts == 3
    assert "gave up after 3 attempts" in row.last_error and "tim" in row.last_error.lower()
    body = queue_app.test_client().get(f"/api/v1/handoffs/{handoff['id']}",
                                       headers=tenant.headers()).get_json()
    assert body["status"] == "open" and body["note"] == "Need someone with Exchange admin rights"
    assert body["assessment"]["status"] == "failed" and body["assessment"]["summary"] is None


def test_invalid_json_is_retried_and_a_good_answer_then_wins(app, tenant, ai_server,
                                                            openai_worker):
    _, queue_app = openai_worker
    ai_server.invalid_json_next(times=1)
    handoff = escalate_via(queue_app, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 20, message="assessment")
    assert (row.status, row.attempts) == ("sent", 2), row.last_error


def test_invalid_json_every_time_ends_dead_with_the_reason(app, tenant, ai_server,
                                                           openai_worker):
    _, queue_app = openai_worker
    ai_server.invalid_json_next(times=10)
    handoff = escalate_via(queue_app, tenant)
    row = wait_for(lambda: assessment_row(app, handoff["id"]).status == "dead"
                   and assessment_row(app, handoff["id"]), 30, message="assessment dead")
    assert "invalid assessment JSON" in row.last_error
    with app.app_context():
        assert db.session.get(Handoff, handoff["id"]).assessment is None


def test_rejected_api_key_fails_at_once_without_leaking_it(app, tenant, ai_server,
                                                          private_worker):
    _, queue_app = private_worker("ai-badkey", AI_PROVIDER="openai", AI_BASE_URL=ai_server.url,
                                  AI_API_KEY="sk-wrong-secret", AI_MODEL="diag-1")
    handoff = escalate_via(queue_app, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 20, message="assessment")
    assert row.status == "dead" and row.attempts == 1 and row.next_attempt_at is None
    assert "sk-wrong-secret" not in row.last_error


@pytest.mark.parametrize(("provider", "by_dispatch"), [("heuristic", True), ("openai", False)])
def test_dispatch_runs_the_local_heuristic_itself_and_leaves_a_remote_provider_to_its_task(
        app_env, tenant, provider, by_dispatch):
    """The heuristic calls no server: dispatch assesses before it enqueues the PSA note (which
    then finds the assessment there); a remote model's call stays a task of its own."""
    from tasks.dispatch import dispatch_handoff
    from tests.conftest import app_config
    from tests.factories import UNREACHABLE_AMQP, UNREACHABLE_REDIS, undispatched_handoff
    from webapp import create_app
    from webapp.config import broker_is_amqp
    handoff_id = undispatched_handoff(app_env, tenant, note="DNS fails on DC01")
    # a dispatching app whose enqueues reach no broker: what it does not run itself stays
    broker = UNREACHABLE_AMQP if broker_is_amqp(app_env["CELERY_BROKER_URL"]) \
        else UNREACHABLE_REDIS
    dispatcher = create_app(app_config(app_env, REDIS_URL=UNREACHABLE_REDIS,
                                       CELERY_BROKER_URL=broker,
                                       AI_PROVIDER=provider, AI_BASE_URL="http://127.0.0.1:9"))
    with dispatcher.app_context():
        dispatch_handoff(handoff_id)
    with dispatcher.app_context():
        row = db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "assessment")).one()
        handoff = db.session.get(Handoff, handoff_id)
        assert (row.status, row.attempts) == (("sent", 1) if by_dispatch else ("pending", 0))
        assert (handoff.assessment is not None) is by_dispatch
        if by_dispatch:
            assert handoff.assessment["provider"] == "heuristic"


def test_dispatch_keeps_the_assessment_when_an_email_of_its_group_is_not_sent(
        app, app_env, make_tenant, smtp_server):
    """Dispatch claims the heuristic assessment and the first emails together, then records
    the assessment before the emails go out. An email that is not sent (its recipient is no
    longer a senior, so its outcome rolls the session back) undoes neither the assessment
    nor the other emails."""
    from tasks.dispatch import dispatch_handoff
    from tests.conftest import app_config
    from tests.factories import UNREACHABLE_AMQP, UNREACHABLE_REDIS, undispatched_handoff
    from webapp import create_app
    from webapp.config import broker_is_amqp
    from webapp.models import User
    tenant = make_tenant("Initech", extra_engineers=1)
    handoff_id = undispatched_handoff(app_env, tenant, note="DNS fails on DC01")
    demoted = tenant.users["admin"]["id"]
    with app.app_context():
        db.session.get(User, demoted).role = "viewer"
        db.session.commit()
    broker = UNREACHABLE_AMQP if broker_is_amqp(app_env["CELERY_BROKER_URL"]) \
        else UNREACHABLE_REDIS
    dispatcher = create_app(app_config(app_env, REDIS_URL=UNREACHABLE_REDIS,
                                       CELERY_BROKER_URL=broker, AI_PROVIDER="heuristic"))
    with dispatcher.app_context():
        dispatch_handoff(handoff_id)
    with app.app_context():
        rows = db.session.scalars(db.select(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel.in_(("assessment", "email")))
            .order_by(Delivery.id)).all()
        handoff = db.session.get(Handoff, handoff_id)
        by_recipient = {row.recipient_user_id: row for row in rows if row.channel == "email"}
        assessment = next(row for row in rows if row.channel == "assessment")
        assert (assessment.status, assessment.attempts) == ("sent", 1)
        assert handoff.assessment is not None and handoff.assessment["provider"] == "heuristic"
        assert len(by_recipient) == 3 and demoted in by_recipient
        assert (by_recipient[demoted].status, by_recipient[demoted].last_error) == (
            "skipped", "recipient is no longer an active senior")
        sent = [row for row in by_recipient.values() if row.status == "sent"]
        assert len(sent) == 2 and all(row.attempts == 1 for row in sent)
        recipients = sorted(row.recipient for row in sent)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.about(handoff_id)) == recipients
