"""AI sessions: create, read, transcript; tenant scoping and validation."""
import pytest


def create_session(client, tenant, role="engineer", **fields):
    body = {"title": "Printer offline", "problem": "Spooler keeps crashing", **fields}
    return client.post("/api/v1/ai-sessions", json=body, headers=tenant.headers(role))


def test_create_session_is_owned_by_the_caller(client, tenant):
    response = create_session(client, tenant, psa_ticket_id="1234", client_name="Contoso")
    assert response.status_code == 201
    body = response.get_json()
    assert body["owner_id"] == tenant.users["engineer"]["id"]
    assert body["account_id"] == tenant.account_id
    assert body["status"] == "active" and body["psa_ticket_id"] == "1234"
    fetched = client.get(f"/api/v1/ai-sessions/{body['id']}", headers=tenant.headers("viewer"))
    assert fetched.status_code == 200 and fetched.get_json()["title"] == "Printer offline"


def test_another_tenants_session_is_404(client, tenant, other_tenant):
    session_id = create_session(client, tenant).get_json()["id"]
    for path in (f"/api/v1/ai-sessions/{session_id}",):
        response = client.get(path, headers=other_tenant.headers("owner"))
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
    posted = client.post(f"/api/v1/ai-sessions/{session_id}/messages",
                         json={"role": "engineer", "content": "hi"},
                         headers=other_tenant.headers("owner"))
    assert posted.status_code == 404


def test_messages_append_to_the_transcript(client, tenant):
    session_id = create_session(client, tenant).get_json()["id"]
    response = client.post(f"/api/v1/ai-sessions/{session_id}/messages",
                           json={"role": "assistant", "content": "Restart the spooler"},
                           headers=tenant.headers("engineer"))
    assert response.status_code == 201
    assert response.get_json()["session_id"] == session_id


def test_only_the_owner_or_an_admin_adds_messages(client, tenant):
    session_id = create_session(client, tenant).get_json()["id"]
    body = {"role": "engineer", "content": "note"}
    path = f"/api/v1/ai-sessions/{session_id}/messages"
    assert client.post(path, json=body, headers=tenant.headers("viewer")).status_code == 403
    assert client.post(path, json=body, headers=tenant.headers("admin")).status_code == 201


@pytest.mark.parametrize("body,field", [
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": 42}, "title"),
    ({}, "title"),
    ({"title": "ok", "problem": "p" * 20001}, "problem"),
    ({"title": "ok", "psa_ticket_id": "bad id!"}, "psa_ticket_id"),
    ({"title": "ok", "client_name": "c" * 201}, "client_name"),
    ({"title": "ok", "surprise": 1}, "surprise"),
])
def test_bad_session_bodies_are_422_naming_the_field(client, tenant, body, field):
    response = client.post("/api/v1/ai-sessions", json=body, headers=tenant.headers("engineer"))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["details"]
    assert error["message"].startswith(field)


@pytest.mark.parametrize("body,field", [
    ({"role": "system", "content": "x"}, "role"),
    ({"role": "engineer", "content": ""}, "content"),
    ({"role": "engineer"}, "content"),
])
def test_bad_message_bodies_are_422(client, tenant, body, field):
    session_id = create_session(client, tenant).get_json()["id"]
    response = client.post(f"/api/v1/ai-sessions/{session_id}/messages", json=body,
                           headers=tenant.headers("engineer"))
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]
