"""The PSA note through a real worker against a local server speaking each PSA's API."""
import base64
import html
import json
import threading
import time
from datetime import timedelta

import pytest

from tasks import maintenance
from tests.conftest import app_config, artifacts_dir, wait_for
from tests.factories import app_without_broker, escalate, undispatched_handoff
from tests.helpers import psa_row
from tests.servers import psa as fake
from webapp import create_app
from webapp.extensions import db
from webapp.integrations.psa.limits import MAX_WAIT
from webapp.live import stream_key
from webapp.models import Delivery, Handoff
from webapp.models.base import utcnow
from webapp.redis_client import get_redis
from webapp.services import deliveries, psa_push
from webapp.services.channels import channel

pytestmark = pytest.mark.pipeline

PROVIDERS = ["connectwise", "autotask", "halopsa"]
NOTE_PATH = {"connectwise": "/notes", "autotask": "/notes", "halopsa": "/api/actions"}


@pytest.fixture
def configure(client, tenant, psa_server):
    def configure(provider: str, **overrides):
        body = {"provider": provider, **psa_server.settings(provider), **overrides}
        response = client.put("/api/v1/account/psa", json=body, headers=tenant.headers())
        assert response.status_code == 200, response.get_json()
    return configure


def settled(app, handoff_id):
    row = psa_row(app, handoff_id)
    done = row.status in ("sent", "dead", "skipped")
    return row if done else None


def escalate_on_ticket(client, tenant, ticket="1001", **fields):
    return escalate(client, tenant, psa_ticket_id=ticket, **fields)


def marker_of(app, handoff_id):
    """The marker the handoff's note carries, with its random nonce."""
    with app.app_context():
        nonce = db.session.get(Handoff, handoff_id).marker_nonce
    assert nonce and len(nonce) >= 16
    return f"[escalation-handoff:{handoff_id}:{nonce}]"


def note_posts(server, provider):
    return server.requests_to("POST", NOTE_PATH[provider])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_one_note_on_the_right_ticket_with_the_right_auth(app, client, tenant, psa_server,
                                                          configure, provider,
                                                          celery_worker_process):
    configure(provider)
    handoff = escalate_on_ticket(client, tenant, note="Customer's DNS server is down")
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert row.status == "sent" and row.attempts == 1
    notes = psa_server.notes("1001")
    assert len(notes) == 1 and psa_server.notes("1002") == []
    text = notes[0].get("text") or notes[0].get("description") or notes[0].get("note_html")
    assert marker_of(app, handoff["id"]) in text
    assert "Customer" in text and "DNS server is down" in text
    assert tenant.users["engineer"]["name"] in text
    assert "AI assessment (heuristic" in text        # the push waited for the assessment
    assert row.external_id == str(notes[0]["id"])
    post = note_posts(psa_server, provider)[0]
    if provider == "connectwise":
        credentials = f"{fake.CW_COMPANY}+{fake.CW_PUBLIC_KEY}:{fake.CW_PRIVATE_KEY}"
        assert post.headers["authorization"] == "Basic " + base64.b64encode(
            credentials.encode()).decode()
        assert post.headers["clientid"] == fake.CW_CLIENT_ID
    elif provider == "autotask":
        assert post.headers["apiintegrationcode"] == fake.AT_INTEGRATION_CODE
        assert post.headers["username"] == fake.AT_USERNAME
        assert post.headers["secret"] == fake.AT_SECRET
    else:
        assert post.headers["authorization"].startswith("Bearer ")
        assert isinstance(post.json(), list) and post.json()[0]["hiddenfromuser"] is True
    body = client.get(f"/api/v1/handoffs/{handoff['id']}", headers=tenant.headers()).get_json()
    assert body["psa"]["status"] == "sent" and body["psa"]["note_id"] == row.external_id

    def announced():   # the queues hear of the note, with the assessment's and note's rows
        entries = get_redis(app).xrange(stream_key(tenant.account_id))
        events = [json.loads(fields[b"data"]) for _, fields in entries
                  if fields[b"event"] == b"handoff_updated"]
        return [e for e in events if e["handoff"]["id"] == handoff["id"]
                and e["handoff"]["psa"]["status"] == "sent"]
    event = wait_for(announced, 10, message="handoff_updated with the note")[0]
    assert event["handoff"]["psa"]["note_id"] == row.external_id
    assert event["handoff"]["assessment"]["status"] == "ready"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_retry_after_then_success_writes_one_note_after_the_wait(
        app, client, tenant, psa_server, configure, provider, celery_worker_process):
    configure(provider)
    psa_server.inject("POST", NOTE_PATH[provider], status=429, headers={"Retry-After": "2"})
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert row.status == "sent" and row.attempts == 2
    assert len(psa_server.notes("1001")) == 1
    posts = note_posts(psa_server, provider)
    assert posts[-1].time - posts[0].time >= 1.9


@pytest.mark.parametrize("provider", PROVIDERS)
def test_503_twice_then_success_writes_one_note(app, client, tenant, psa_server, configure,
                                                provider, celery_worker_process):
    configure(provider)
    psa_server.inject("POST", NOTE_PATH[provider], status=503, times=2)
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(psa_server.notes("1001")) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_accept_then_drop_still_writes_one_note(app, client, tenant, psa_server, configure,
                                                provider, celery_worker_process):
    configure(provider)
    psa_server.inject("POST", NOTE_PATH[provider], action="accept_then_drop")
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert row.status == "sent"
    notes = psa_server.notes("1001")
    assert len(notes) == 1 and row.external_id == str(notes[0]["id"])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_ticket_fails_permanently_with_the_reason(app, client, tenant, psa_server,
                                                          configure, provider,
                                                          celery_worker_process):
    configure(provider)
    handoff = escalate_on_ticket(client, tenant, ticket="4040")
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert (row.status, row.attempts, row.next_attempt_at) == ("dead", 1, None)
    assert "4040" in row.last_error and "not found" in row.last_error
    body = client.get(f"/api/v1/handoffs/{handoff['id']}", headers=tenant.headers()).get_json()
    assert body["psa"]["status"] == "dead" and "4040" in body["psa"]["last_error"]
    [psa] = [d for d in client.get(f"/api/v1/handoffs/{handoff['id']}/deliveries",
                                   headers=tenant.headers()).get_json()["items"]
             if d["channel"] == "psa"]
    assert psa["status"] == "dead" and psa["next_attempt_at"] is None


@pytest.mark.parametrize("provider", ["connectwise", "autotask"])
def test_rejected_credentials_fail_permanently(app, client, tenant, psa_server, configure,
                                               provider, celery_worker_process):
    configure(provider)
    psa_server.inject("POST", NOTE_PATH[provider], status=401, times=5)
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert (row.status, row.attempts) == ("dead", 1)
    assert psa_server.notes("1001") == []
    assert not [s for s in fake.SECRETS if s in row.last_error]


def test_halo_expired_token_is_refreshed_once_and_the_note_written(
        app, client, tenant, psa_server, configure, celery_worker_process):
    configure("halopsa")
    psa_server.inject("POST", "/api/actions", status=401)
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert (row.status, row.attempts) == ("sent", 1)
    assert len(psa_server.notes("1001")) == 1
    assert len(psa_server.requests_to("POST", "/auth/token")) == 2


def test_no_psa_configured_or_no_ticket_is_skipped(app, client, tenant, psa_server, configure,
                                                   celery_worker_process):
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert row.status == "skipped" and "no PSA" in row.last_error
    configure("connectwise")
    handoff = escalate_on_ticket(client, tenant, ticket=None)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert row.status == "skipped" and "no PSA ticket" in row.last_error


def test_a_failed_push_that_becomes_due_is_retried_by_beat_until_sent(
        app, app_env, tenant, psa_server, configure, celery_worker_process):
    configure("connectwise")
    handoff_id = undispatched_handoff(app_env, tenant, psa_ticket_id="1001")
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.handoff_id == handoff_id).values(
            status="failed", attempts=1, last_error="PSA answered 503",
            next_attempt_at=utcnow() + timedelta(minutes=45)))
        db.session.commit()
        assert maintenance.redeliver(utcnow()) == 0      # not due yet
        assert maintenance.redeliver(utcnow() + timedelta(minutes=46)) == 4
    row = wait_for(lambda: settled(app, handoff_id), 30, message="PSA push")
    assert row.status == "sent" and len(psa_server.notes("1001")) == 1


def test_secrets_never_reach_the_worker_log(app, client, tenant, psa_server, configure,
                                            celery_worker_process):
    configure("autotask")
    psa_server.inject("POST", "/notes", action="auth_500")
    handoff = escalate_on_ticket(client, tenant)
    wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    time.sleep(0.2)
    log = (artifacts_dir() / "celery-worker.log").read_text(errors="replace")
    assert not [s for s in fake.SECRETS if s in log]


def test_credentials_under_a_lost_key_fail_permanently_with_the_reason(
        app, client, tenant, psa_server, configure, celery_worker_process):
    from cryptography.fernet import Fernet
    from sqlalchemy import text
    configure("connectwise")
    foreign = Fernet(Fernet.generate_key()).encrypt(b'{"private_key": "x"}').decode()
    with app.app_context():
        db.session.execute(text("UPDATE accounts SET psa_secrets = :t WHERE id = :id"),
                           {"t": foreign, "id": tenant.account_id})
        db.session.commit()
    handoff = escalate_on_ticket(client, tenant)
    row = wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert (row.status, row.attempts) == ("dead", 1)
    assert "cannot be decrypted" in row.last_error
    assert psa_server.notes("1001") == []


def test_an_admin_retry_after_an_ambiguous_write_finds_the_note_instead_of_posting_again(
        app, client, tenant, psa_server, configure, celery_worker_process):
    configure("connectwise")
    handoff = escalate_on_ticket(client, tenant)
    wait_for(lambda: settled(app, handoff["id"]), 30, message="PSA push")
    assert len(psa_server.notes("1001")) == 1
    row = psa_row(app, handoff["id"])
    # as if the answer had been lost every time and the push gave up
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.id == row.id).values(
            status="dead", external_id=None, last_error="gave up after 8 attempts: no answer"))
        db.session.commit()
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/deliveries/{row.id}/retry",
                           headers=tenant.headers("admin"))
    assert response.status_code == 202
    retried = wait_for(lambda: psa_row(app, handoff["id"]).status == "sent"
                       and psa_row(app, handoff["id"]), 30, message="retried push")
    notes = psa_server.notes("1001")
    assert len(notes) == 1 and retried.external_id == str(notes[0]["id"])


# ---- the push service driven directly, on handoffs no worker will touch ---------------------

@pytest.fixture
def offline_client(app_env):
    """A client whose app cannot reach the broker: handoffs are written, never dispatched, so
    only the test drives their rows."""
    return app_without_broker(app_env).test_client()


def pusher(app_env, wait_for_assessment: int = 0, **overrides):
    """An app whose pushes wait this long for the assessment."""
    return create_app(app_config(app_env, PSA_WAIT_FOR_ASSESSMENT_SECONDS=wait_for_assessment,
                                 **overrides))


def offline_handoff(offline_client, tenant, ticket="1001", **fields) -> int:
    return escalate(offline_client, tenant, psa_ticket_id=ticket, **fields)["id"]


def push(app, row_id: int) -> float | None:
    """One run of the PSA row, as the task body runs it."""
    with app.app_context():
        return deliveries.run(row_id, psa_push.push_note, channel("psa").policy)


def set_assessment(app, handoff_id: int, **values) -> None:
    with app.app_context():
        db.session.execute(db.update(Delivery).where(
            Delivery.handoff_id == handoff_id, Delivery.channel == "assessment").values(**values))
        db.session.commit()


def handoff_with_a_retrying_assessment(app, offline_client, tenant) -> tuple[int, int]:
    """An escalation whose AI assessment failed and will be tried again in 30 s; its handoff
    and PSA row ids."""
    handoff_id = offline_handoff(offline_client, tenant)
    set_assessment(app, handoff_id, status="failed", attempts=1,
                   last_error="AI provider: timed out",
                   next_attempt_at=utcnow() + timedelta(seconds=30))
    return handoff_id, psa_row(app, handoff_id).id


def assert_deferred(row) -> None:
    """Put back for later without counting an attempt."""
    assert (row.status, row.attempts) == ("pending", 0), (row.status, row.last_error)
    assert row.next_attempt_at > utcnow()


def test_a_burst_beyond_the_halo_budget_is_deferred_instead_of_held_in_worker_threads(
        app, app_env, tenant, offline_client, psa_server, configure):
    configure("halopsa")    # hosted Halo's spacing: one request a second
    pushing = pusher(app_env, PSA_MAX_CONCURRENT_PER_ACCOUNT=10)   # the budget, not the cap
    rows = [psa_row(app, offline_handoff(offline_client, tenant)).id for _ in range(7)]
    push(pushing, rows[0])     # takes the token and one turn
    took: dict[int, float] = {}

    def run(row_id: int) -> None:
        started = time.monotonic()
        push(pushing, row_id)
        took[row_id] = time.monotonic() - started

    threads = [threading.Thread(target=run, args=(row_id,)) for row_id in rows[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert len(took) == 6
    assert max(took.values()) < MAX_WAIT + 0.8, took      # nobody slept past the cap
    with app.app_context():
        burst = list(db.session.scalars(db.select(Delivery).where(Delivery.id.in_(rows[1:]))))
    sent = [row for row in burst if row.status == "sent"]
    deferred = [row for row in burst if row.status != "sent"]
    assert sent and len(deferred) >= 3, [(r.status, r.last_error) for r in burst]
    for row in deferred:
        assert_deferred(row)
    assert len(psa_server.notes("1001")) == 1 + len(sent)


def test_pushes_turned_away_by_the_budget_come_back_spread_by_their_number(
        app, app_env, tenant, offline_client, psa_server, configure):
    """Six pushes already set aside: the next one turned away comes back after the time
    those six need, not a few seconds later with all of them."""
    from webapp.integrations.psa.base import base_url
    from webapp.integrations.psa.limits import RequestSpacing, budget_key
    from webapp.redis_client import get_redis
    configure("halopsa")
    pushing = pusher(app_env)
    waiting = [psa_row(app, offline_handoff(offline_client, tenant)).id for _ in range(6)]
    later = utcnow() + timedelta(seconds=60)
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.id.in_(waiting))
                           .values(next_attempt_at=later))
        db.session.commit()
        # Halo's one-a-second budget, booked 3 s ahead by other workers
        spacing = RequestSpacing(budget_key("halopsa", base_url(psa_server.url, "base_url",
                                                                "halopsa")),
                                 1.0, redis=get_redis(), max_wait=30)
        for _ in range(4):
            spacing._reserve()
    handoff_id = offline_handoff(offline_client, tenant)
    started = utcnow()
    push(pushing, psa_row(app, handoff_id).id)
    row = psa_row(app, handoff_id)
    assert_deferred(row)
    delay = (row.next_attempt_at - started).total_seconds()
    # six set aside before it and itself, 2 s of budget each, times a jitter of 0.5 to 1
    spread = 7 * psa_push.BUSY_SPREAD_SECONDS
    assert 0.5 * spread - 1 <= delay <= spread + 1, delay
    assert psa_server.notes("1001") == []


def test_the_push_waits_while_the_assessment_failed_but_will_be_retried(
        app, app_env, tenant, offline_client, psa_server, configure):
    configure("connectwise")
    pushing = pusher(app_env, wait_for_assessment=60)
    handoff_id, row_id = handoff_with_a_retrying_assessment(app, offline_client, tenant)

    push(pushing, row_id)

    assert_deferred(psa_row(app, handoff_id))
    assert psa_server.notes("1001") == []
    # dead (failed for good): nothing more is coming, so the note goes without it
    set_assessment(app, handoff_id, status="dead", next_attempt_at=None)
    push(pushing, row_id)
    assert psa_row(app, handoff_id).status == "sent"
    [note] = psa_server.notes("1001")
    assert "AI assessment: not available yet." in note["text"]


def test_the_push_stops_waiting_for_a_retrying_assessment_after_the_configured_wait(
        app, app_env, tenant, offline_client, psa_server, configure):
    configure("connectwise")
    pushing = pusher(app_env, wait_for_assessment=1)
    handoff_id, row_id = handoff_with_a_retrying_assessment(app, offline_client, tenant)
    push(pushing, row_id)
    assert_deferred(psa_row(app, handoff_id))
    with app.app_context():
        created = db.session.get(Handoff, handoff_id).created_at
    time.sleep(max(0.0, (created + timedelta(seconds=1.1) - utcnow()).total_seconds()))

    push(pushing, row_id)

    assert psa_row(app, handoff_id).status == "sent"
    [note] = psa_server.notes("1001")
    assert "AI assessment: not available yet." in note["text"]


MARKUP_LIKE = ("Run Set-Mailbox -Identity <UserPrincipalName> with <Enabled>true</Enabled>; "
               "the log said &lt;none&gt; and <b>x</b>")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_note_that_looks_like_markup_reaches_the_psa_as_written(
        app, app_env, tenant, offline_client, psa_server, configure, provider):
    configure(provider)
    handoff_id = offline_handoff(offline_client, tenant, note=MARKUP_LIKE)

    push(pusher(app_env), psa_row(app, handoff_id).id)

    assert psa_row(app, handoff_id).status == "sent"
    [note] = psa_server.notes("1001")
    if provider == "halopsa":   # Halo's notes are HTML: the text is escaped into it
        assert html.escape(MARKUP_LIKE, quote=False) in note["note_html"]
        assert MARKUP_LIKE in note["note"]
    else:
        sent = note_posts(psa_server, provider)[0].json()
        assert MARKUP_LIKE in (sent.get("text") or sent.get("description"))


def test_a_pushed_park_reads_as_a_park_with_nothing_to_claim(
        app, app_env, tenant, offline_client, psa_server, configure):
    configure("connectwise", push_parks=True)
    handoff_id = offline_handoff(offline_client, tenant, intent="park",
                                 note="Waiting on the client's maintenance window")

    push(pusher(app_env), psa_row(app, handoff_id).id)

    assert psa_row(app, handoff_id).status == "sent"
    [note] = psa_server.notes("1001")
    text = note["text"]
    name = tenant.users["engineer"]["name"]
    assert text.startswith(f"PARKED by {name} on ") and text.splitlines()[0].endswith("for later")
    assert "Park note:\nWaiting on the client's maintenance window" in text
    assert "ESCALATED" not in text and "Escalation note" not in text
    assert "/queue#handoff" not in text and "Open in Escalations" not in text
    assert marker_of(app, handoff_id) in text


def test_a_marker_typed_into_a_ticket_note_does_not_pass_for_the_real_note(
        app, app_env, tenant, offline_client, psa_server, configure):
    """The reconciling search (after an earlier attempt) must not take a note someone typed,
    quoting the handoff's id, for the escalation note."""
    configure("connectwise")
    handoff_id = offline_handoff(offline_client, tenant)
    psa_server.seed_note("1001", f"see [escalation-handoff:{handoff_id}] and "
                                 f"[escalation-handoff:{handoff_id}:0000000000000000]")
    row_id = psa_row(app, handoff_id).id
    with app.app_context():   # as after an earlier attempt, so the push searches first
        db.session.execute(db.update(Delivery).where(Delivery.id == row_id).values(
            last_error="ConnectWise: no answer to the write"))
        db.session.commit()
    push(pusher(app_env), row_id)
    row = psa_row(app, handoff_id)
    notes = psa_server.notes("1001")
    assert row.status == "sent" and len(notes) == 2, (row.status, row.last_error, notes)
    assert marker_of(app, handoff_id) in notes[1]["text"]
    assert row.external_id == str(notes[1]["id"])


def test_a_note_id_too_long_to_record_is_a_permanent_readable_failure(
        app, app_env, tenant, offline_client, psa_server, configure):
    configure("connectwise")
    handoff_id = offline_handoff(offline_client, tenant)
    psa_server.inject("POST", "/notes", status=201, body={"id": "7" * 500})
    push(pusher(app_env), psa_row(app, handoff_id).id)
    row = psa_row(app, handoff_id)
    assert row.status == "dead" and row.next_attempt_at is None, row.status
    assert "note id of 500 characters" in row.last_error
    assert row.external_id is None


def test_a_push_over_the_accounts_concurrency_cap_is_deferred_without_an_attempt(
        app, app_env, tenant, offline_client, psa_server, configure):
    configure("connectwise")
    handoff_id = offline_handoff(offline_client, tenant)
    capped = create_app(app_config(app_env, PSA_WAIT_FOR_ASSESSMENT_SECONDS=0,
                                   PSA_MAX_CONCURRENT_PER_ACCOUNT=2))
    with capped.app_context(), psa_push.account_slot(tenant.account_id) as first, \
            psa_push.account_slot(tenant.account_id) as second:
        assert first and second     # two pushes of the account hold both slots
        push(capped, psa_row(app, handoff_id).id)
        assert_deferred(psa_row(app, handoff_id))
        assert psa_server.requests == []
    with capped.app_context(), psa_push.account_slot(tenant.account_id + 1) as elsewhere:
        assert elsewhere            # another account's slots are its own
    # the slots are free again: the push goes through
    with capped.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.handoff_id == handoff_id,
                                                     Delivery.channel == "psa").values(
            next_attempt_at=utcnow()))
        db.session.commit()
    push(capped, psa_row(app, handoff_id).id)
    assert psa_row(app, handoff_id).status == "sent"
    assert len(psa_server.notes("1001")) == 1
