"""Park and escalate, claim, resume, cancel, the queue and the delivery records."""
import threading

import pytest
from sqlalchemy import text

from tests.factories import app_without_broker, escalate, make_session, post_handoff
from webapp.extensions import db
from webapp.models import AiSession, Delivery, Handoff


def deliveries_of(app, handoff_id):
    with app.app_context():
        return [(d.channel, d.recipient, d.recipient_user_id, d.status) for d in
                db.session.scalars(db.select(Delivery).where(Delivery.handoff_id == handoff_id)
                                   .order_by(Delivery.id))]


def test_escalation_carries_snapshot_and_moves_session(client, tenant):
    session_id = make_session(client, tenant)
    response = post_handoff(client, tenant, session_id, urgency="high")
    assert response.status_code == 201
    handoff = response.get_json()
    assert handoff["intent"] == "escalate" and handoff["status"] == "open"
    assert handoff["urgency"] == "high"
    assert handoff["snapshot"]["problem"] == "Outbound mail queued since 9am"
    assert [m["content"] for m in handoff["snapshot"]["messages"]] == [
        "Already restarted the transport service"]
    assert handoff["session"] == {"id": session_id, "title": "Exchange mail stuck",
                                  "client_name": "Contoso", "psa_ticket_id": "T-100"}
    assert handoff["assessment"]["status"] == "pending"
    assert handoff["psa"]["status"] == "pending" and handoff["psa"]["ticket_id"] == "T-100"
    session = client.get(f"/api/v1/ai-sessions/{session_id}", headers=tenant.headers("engineer"))
    assert session.get_json()["status"] == "escalated"


def test_snapshot_is_taken_at_handoff_time(client, tenant):
    handoff = escalate(client, tenant)
    client.post(f"/api/v1/ai-sessions/{handoff['session_id']}/messages",
                headers=tenant.headers("engineer"), json={"role": "engineer", "content": "later"})
    again = client.get(f"/api/v1/handoffs/{handoff['id']}", headers=tenant.headers("admin"))
    assert len(again.get_json()["snapshot"]["messages"]) == 1


def test_recipients_are_exactly_the_active_seniors_of_the_account(app, client, make_tenant):
    tenant = make_tenant("Acme", extra_engineers=2)
    other = make_tenant("Globex", extra_engineers=1)
    client.delete(f"/api/v1/users/{tenant.users['engineer2']['id']}", headers=tenant.headers())
    handoff = escalate(client, tenant, role="engineer")
    rows = deliveries_of(app, handoff["id"])
    emails = {(recipient, user_id) for channel, recipient, user_id, _ in rows if channel == "email"}
    expected = {(tenant.users[label]["email"].lower(), tenant.users[label]["id"])
                for label in ("owner", "admin", "engineer3")}
    assert emails == expected
    assert all(status == "pending" for *_, status in rows)
    assert sorted(channel for channel, *_ in rows if channel != "email") == ["assessment", "psa"]
    other_emails = {u["email"].lower() for u in other.users.values()}
    assert not other_emails & {r for _, r, _, _ in rows}


def test_delivery_rows_are_written_in_the_order_of_their_side_effects(app, client, make_tenant):
    """The assessment, the PSA note, the emails by recipient id, the chat message; a park
    gets the assessment, and the PSA note only where the account pushes parks."""
    tenant = make_tenant("Acme", extra_engineers=2)
    webhook = "http://127.0.0.1:9/hooks/escalations"   # never called: no worker runs here
    assert client.put("/api/v1/account/chat", headers=tenant.headers("admin"),
                      json={"provider": "slack", "webhook_url": webhook}).status_code == 200
    escalation = escalate(client, tenant, role="engineer2")
    rows = deliveries_of(app, escalation["id"])
    seniors = sorted((user["id"], user["email"].lower()) for label, user in tenant.users.items()
                     if label in ("owner", "admin", "engineer", "engineer3"))
    assert [(channel, recipient, user_id) for channel, recipient, user_id, _ in rows] == [
        ("assessment", "assessment", None), ("psa", "psa", None),
        *(("email", email, user_id) for user_id, email in seniors), ("chat", "chat", None)]

    assert client.put("/api/v1/account/psa", headers=tenant.headers(), json={
        "provider": "none", "push_parks": True}).status_code == 200
    park = post_handoff(client, tenant, make_session(client, tenant), intent="park",
                        note="back after lunch").get_json()
    assert [channel for channel, *_ in deliveries_of(app, park["id"])] == ["assessment", "psa"]


def test_park_is_private_and_creates_no_email_or_psa_rows(app, client, tenant):
    session_id = make_session(client, tenant)
    response = post_handoff(client, tenant, session_id, intent="park", note="back after lunch")
    assert response.status_code == 201
    park = response.get_json()
    assert [c for c, *_ in deliveries_of(app, park["id"])] == ["assessment"]
    for role in ("owner", "admin", "viewer"):
        assert client.get(f"/api/v1/handoffs/{park['id']}",
                          headers=tenant.headers(role)).status_code == 404
    for status in ("open", "all"):
        queue = client.get(f"/api/v1/ai-sessions/escalations?status={status}",
                           headers=tenant.headers("owner")).get_json()["items"]
        assert park["id"] not in {h["id"] for h in queue}
    mine = client.get(f"/api/v1/handoffs/{park['id']}", headers=tenant.headers("engineer"))
    assert mine.status_code == 200 and mine.get_json()["intent"] == "park"
    session = client.get(f"/api/v1/ai-sessions/{session_id}", headers=tenant.headers("engineer"))
    assert session.get_json()["status"] == "parked"


def test_second_open_handoff_is_409(client, tenant):
    handoff = escalate(client, tenant)
    again = post_handoff(client, tenant, handoff["session_id"], intent="park")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "open_handoff_exists"


@pytest.mark.parametrize("role", ["viewer", "engineer"])
def test_only_the_owner_or_an_admin_hands_off(client, tenant, make_tenant, role):
    session_id = make_session(client, tenant, role="admin")
    response = post_handoff(client, tenant, session_id, role=role)
    assert response.status_code == 403
    assert post_handoff(client, tenant, session_id, role="owner").status_code == 201


def test_viewer_cannot_hand_off_even_their_own_session(client, tenant):
    session_id = make_session(client, tenant, role="viewer")
    assert post_handoff(client, tenant, session_id, role="viewer").status_code == 403


@pytest.mark.parametrize("body,field", [
    ({"intent": "delegate", "note": "x"}, "intent"),
    ({"note": "x"}, "intent"),
    ({"intent": "escalate"}, "note"),
    ({"intent": "escalate", "note": ""}, "note"),
    ({"intent": "escalate", "note": "   "}, "note"),
    ({"intent": "escalate", "note": "n" * 4001}, "note"),
    ({"intent": "escalate", "note": 12}, "note"),
    ({"intent": "escalate", "note": "x", "urgency": "critical"}, "urgency"),
    ({"intent": "escalate", "note": "x", "urgency": None}, "urgency"),
    ({"intent": "escalate", "note": "x", "assignee": 3}, "assignee"),
])
def test_bad_handoff_bodies_are_422_and_write_nothing(app, client, tenant, body, field):
    session_id = make_session(client, tenant)
    response = client.post(f"/api/v1/ai-sessions/{session_id}/handoff", json=body,
                           headers=tenant.headers("engineer"))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and field in error["details"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Handoff.id))) == 0
        assert db.session.get(AiSession, session_id).status == "active"


def test_note_of_exactly_4000_characters_is_accepted(client, tenant):
    assert escalate(client, tenant, note="n" * 4000)["note"] == "n" * 4000


def test_failed_write_leaves_nothing_half_written(app, client, tenant):
    session_id = make_session(client, tenant)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(text("""
            CREATE FUNCTION refuse_delivery() RETURNS trigger AS $$
            BEGIN IF NEW.channel = 'email' THEN RAISE EXCEPTION 'disk full'; END IF;
            RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER refuse_delivery BEFORE INSERT ON deliveries
            FOR EACH ROW EXECUTE FUNCTION refuse_delivery();"""))
    try:
        response = post_handoff(client, tenant, session_id)
    finally:
        with app.app_context(), db.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_delivery ON deliveries;"
                              "DROP FUNCTION refuse_delivery();"))
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert "disk full" not in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Handoff.id))) == 0
        assert db.session.scalar(db.select(db.func.count(Delivery.id))) == 0
        assert db.session.get(AiSession, session_id).status == "active"
    assert post_handoff(client, tenant, session_id).status_code == 201


def test_ten_concurrent_handoffs_of_one_session_have_exactly_one_winner(app, tenant):
    """Those that waited for the session's lock find the winner's handoff, by the check or by
    the one-open-handoff index, and are answered 409 naming it; nothing of theirs is written."""
    session_id = make_session(app.test_client(), tenant)
    barrier = threading.Barrier(10)
    results = []

    def hand_off():
        local_client = app.test_client()
        barrier.wait()
        response = post_handoff(local_client, tenant, session_id)
        results.append((response.status_code, response.get_json()))

    threads = [threading.Thread(target=hand_off) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(code for code, _ in results) == [201] + [409] * 9
    winner = next(body["id"] for code, body in results if code == 201)
    assert all(body["error"]["code"] == "open_handoff_exists"
               and body["error"]["details"]["handoff_id"] == winner
               for code, body in results if code == 409)
    with app.app_context():
        assert db.session.scalars(db.select(Handoff.id).where(
            Handoff.session_id == session_id)).all() == [winner]
        assert set(db.session.scalars(db.select(Delivery.handoff_id))) == {winner}


def test_twenty_concurrent_claims_have_exactly_one_winner(app, make_tenant):
    tenant = make_tenant("Acme", extra_engineers=19)
    client = app.test_client()
    handoff = escalate(client, tenant, role="owner")
    claimers = ["engineer"] + [f"engineer{i}" for i in range(2, 21)]
    barrier = threading.Barrier(len(claimers))
    results = {}

    def claim(label):
        local_client = app.test_client()
        barrier.wait()
        response = local_client.post(f"/api/v1/handoffs/{handoff['id']}/claim",
                                     headers=tenant.headers(label))
        results[label] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=claim, args=(label,)) for label in claimers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    codes = sorted(code for code, _ in results.values())
    assert codes == [200] + [409] * 19
    winner = next(label for label, (code, _) in results.items() if code == 200)
    winner_id = tenant.users[winner]["id"]
    for code, body in results.values():
        if code == 409:
            assert body["error"]["code"] == "already_claimed"
            assert body["error"]["details"]["claimed_by"]["id"] == winner_id
    session = client.get(f"/api/v1/ai-sessions/{handoff['session_id']}",
                         headers=tenant.headers("owner")).get_json()
    assert session["status"] == "active" and session["owner_id"] == winner_id


def test_claim_marks_claimed_and_hands_the_session_over(client, tenant):
    handoff = escalate(client, tenant)
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/claim",
                           headers=tenant.headers("admin"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "claimed" and body["claimed_by"] == tenant.users["admin"]["id"]
    assert body["claimed_at"] is not None
    queue = client.get("/api/v1/ai-sessions/escalations?status=claimed",
                       headers=tenant.headers("viewer")).get_json()["items"]
    assert [h["id"] for h in queue] == [handoff["id"]]


def test_viewer_cannot_claim(client, tenant):
    handoff = escalate(client, tenant)
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/claim",
                           headers=tenant.headers("viewer"))
    assert response.status_code == 403


def test_a_park_cannot_be_claimed(client, tenant):
    session_id = make_session(client, tenant)
    park = post_handoff(client, tenant, session_id, intent="park").get_json()
    response = client.post(f"/api/v1/handoffs/{park['id']}/claim",
                           headers=tenant.headers("engineer"))
    assert response.status_code == 409


def test_resume_by_the_parker_reactivates_the_session(client, tenant):
    session_id = make_session(client, tenant)
    park = post_handoff(client, tenant, session_id, intent="park").get_json()
    response = client.post(f"/api/v1/handoffs/{park['id']}/resume",
                           headers=tenant.headers("engineer"))
    assert response.status_code == 200 and response.get_json()["status"] == "resumed"
    session = client.get(f"/api/v1/ai-sessions/{session_id}", headers=tenant.headers("engineer"))
    assert session.get_json()["status"] == "active"
    again = client.post(f"/api/v1/handoffs/{park['id']}/resume",
                        headers=tenant.headers("engineer"))
    assert again.status_code == 409
    assert post_handoff(client, tenant, session_id).status_code == 201


def test_an_escalation_cannot_be_resumed(client, tenant):
    handoff = escalate(client, tenant)
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/resume",
                           headers=tenant.headers("engineer"))
    assert response.status_code == 409


def test_cancel_by_the_escalator_skips_unsent_deliveries(app, app_env, client, tenant):
    # never dispatched: a worker left running by an earlier test must not take a row first
    handoff = escalate(app_without_broker(app_env).test_client(), tenant)
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/cancel",
                           headers=tenant.headers("engineer"))
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    statuses = {(c, s) for c, _, _, s in deliveries_of(app, handoff["id"])}
    assert statuses == {("assessment", "pending"), ("psa", "skipped"), ("email", "skipped")}
    session = client.get(f"/api/v1/ai-sessions/{handoff['session_id']}",
                         headers=tenant.headers("engineer")).get_json()
    assert session["status"] == "active"


def test_cancel_of_a_claimed_escalation_is_409(client, tenant):
    handoff = escalate(client, tenant)
    client.post(f"/api/v1/handoffs/{handoff['id']}/claim", headers=tenant.headers("admin"))
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/cancel",
                           headers=tenant.headers("engineer"))
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "already_claimed"


def test_only_the_escalator_or_an_admin_cancels(client, make_tenant):
    tenant = make_tenant("Acme", extra_engineers=1)
    handoff = escalate(client, tenant)
    response = client.post(f"/api/v1/handoffs/{handoff['id']}/cancel",
                           headers=tenant.headers("engineer2"))
    assert response.status_code == 403
    assert client.post(f"/api/v1/handoffs/{handoff['id']}/cancel",
                       headers=tenant.headers("admin")).status_code == 200


def test_queue_is_newest_first_with_cursor_pages(client, tenant):
    ids = [escalate(client, tenant)["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        url = "/api/v1/ai-sessions/escalations?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=tenant.headers("viewer")).get_json()
        assert len(page["items"]) <= 2
        seen += [h["id"] for h in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


def test_queue_status_filter(client, tenant):
    open_one = escalate(client, tenant)
    claimed = escalate(client, tenant)
    client.post(f"/api/v1/handoffs/{claimed['id']}/claim", headers=tenant.headers("admin"))

    def ids(status):
        return [h["id"] for h in client.get(f"/api/v1/ai-sessions/escalations?status={status}",
                                            headers=tenant.headers()).get_json()["items"]]
    assert ids("open") == [open_one["id"]]
    assert ids("claimed") == [claimed["id"]]
    assert ids("all") == [claimed["id"], open_one["id"]]


def _cursor(raw: str) -> str:
    import base64
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


CRAFTED_HUGE_ID = _cursor('["2026-01-01T00:00:00+00:00", 1e999]')
CRAFTED_ANCIENT_DATE = _cursor('["0001-01-01T00:00:00-23:00", 1]')


@pytest.mark.parametrize("query,field", [("status=done", "status"), ("limit=0", "limit"),
                                         ("limit=101", "limit"), ("limit=ten", "limit"),
                                         ("cursor=%25%25%25", "cursor"),
                                         ("cursor=" + CRAFTED_HUGE_ID, "cursor"),
                                         ("cursor=" + CRAFTED_ANCIENT_DATE, "cursor")])
def test_bad_queue_queries_are_422(client, tenant, query, field):
    response = client.get(f"/api/v1/ai-sessions/escalations?{query}", headers=tenant.headers())
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]


def test_queue_shows_only_the_callers_account(client, tenant, other_tenant):
    mine = escalate(client, tenant)
    escalate(client, other_tenant)
    items = client.get("/api/v1/ai-sessions/escalations",
                       headers=tenant.headers()).get_json()["items"]
    assert [h["id"] for h in items] == [mine["id"]]


def test_another_tenants_handoff_is_404_everywhere(app, client, tenant, other_tenant):
    handoff = escalate(client, tenant)
    with app.app_context():
        delivery_id = db.session.scalar(db.select(Delivery.id).where(
            Delivery.handoff_id == handoff["id"], Delivery.channel == "psa"))
        db.session.execute(db.update(Delivery).where(Delivery.id == delivery_id)
                           .values(status="dead"))
        db.session.commit()
    base = f"/api/v1/handoffs/{handoff['id']}"
    calls = [("get", base), ("get", f"{base}/deliveries"), ("post", f"{base}/claim"),
             ("post", f"{base}/resume"), ("post", f"{base}/cancel"),
             ("post", f"{base}/deliveries/{delivery_id}/retry")]
    for method, path in calls:
        response = getattr(client, method)(path, headers=other_tenant.headers("owner"))
        assert response.status_code == 404, path
        assert response.get_json()["error"]["code"] == "not_found"
    session_path = f"/api/v1/ai-sessions/{handoff['session_id']}/handoff"
    response = client.post(session_path, json={"intent": "escalate", "note": "x"},
                           headers=other_tenant.headers("owner"))
    assert response.status_code == 404
    current = client.get(base, headers=tenant.headers()).get_json()
    assert current["status"] == "open" and current["psa"]["status"] == "dead"


def test_deliveries_list_and_admin_retry(app, client, tenant):
    handoff = escalate(client, tenant)
    base = f"/api/v1/handoffs/{handoff['id']}/deliveries"
    items = client.get(base, headers=tenant.headers("engineer")).get_json()["items"]
    assert {d["channel"] for d in items} == {"psa", "email"}
    assert all(set(d) >= {"id", "channel", "recipient", "status", "attempts", "last_error",
                          "next_attempt_at", "sent_at"} for d in items)
    psa = next(d for d in items if d["channel"] == "psa")
    assert client.post(f"{base}/{psa['id']}/retry",
                       headers=tenant.headers("admin")).status_code == 409
    with app.app_context():
        db.session.execute(db.update(Delivery).where(Delivery.id == psa["id"]).values(
            status="dead", attempts=8, last_error="PSA answered 503"))
        db.session.commit()
    assert client.post(f"{base}/{psa['id']}/retry",
                       headers=tenant.headers("engineer")).status_code == 403
    response = client.post(f"{base}/{psa['id']}/retry", headers=tenant.headers("admin"))
    assert response.status_code == 202
    assert response.get_json()["status"] == "pending" and response.get_json()["attempts"] == 0
    assert client.post(f"{base}/999999/retry", headers=tenant.headers("admin")).status_code == 404
