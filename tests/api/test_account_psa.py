"""Account PSA settings: validated per provider, secrets encrypted and never returned."""
import pytest
from sqlalchemy import text

from tests.servers.psa import SECRETS, PsaServer
from webapp.extensions import db

CONNECTWISE = {"provider": "connectwise", "site_url": "http://127.0.0.1:9/",
               "company_id": "acme", "public_key": "pub-key-1234",
               "private_key": "cwPrivateKey-S3cr3t-91bd", "client_id": "client-guid"}


def put(client, tenant, body, role="admin"):
    return client.put("/api/v1/account/psa", json=body, headers=tenant.headers(role))


def test_default_is_no_psa(client, tenant):
    body = client.get("/api/v1/account/psa", headers=tenant.headers("viewer")).get_json()
    assert body["provider"] == "none" and body["configured"] is False


@pytest.mark.parametrize("provider", ["connectwise", "autotask", "halopsa"])
def test_settings_round_trip_without_ever_returning_secrets(client, tenant, provider):
    with PsaServer() as server:
        settings = {"provider": provider, **server.settings(provider)}
    response = put(client, tenant, settings)
    assert response.status_code == 200, response.get_json()
    for answer in (response, client.get("/api/v1/account/psa", headers=tenant.headers())):
        text_ = answer.get_data(as_text=True)
        assert not [s for s in SECRETS if s in text_]
        body = answer.get_json()
        assert body["provider"] == provider and body["configured"] is True
        assert any(key.endswith("_set") and value for key, value in body["settings"].items())


@pytest.mark.parametrize("value", [0, 1, 0.0, "false", "yes"])
def test_push_parks_takes_only_a_json_boolean(client, tenant, value):
    # 0.0 was taken for false: the document says `type: boolean`
    response = put(client, tenant, {**CONNECTWISE, "push_parks": value})
    assert response.status_code == 422, response.get_json()
    assert "push_parks" in response.get_json()["error"]["details"]
    assert put(client, tenant, {**CONNECTWISE, "push_parks": True}).get_json()["push_parks"]


def test_secrets_are_encrypted_at_rest(app, client, tenant):
    assert put(client, tenant, CONNECTWISE).status_code == 200
    with app.app_context():
        row = db.session.execute(text(
            "SELECT psa_settings::text AS plain, psa_secrets FROM accounts WHERE id = :id"),
            {"id": tenant.account_id}).one()
    assert "cwPrivateKey-S3cr3t-91bd" not in row.plain and "pub-key-1234" not in row.plain
    assert "cwPrivateKey-S3cr3t-91bd" not in row.psa_secrets
    assert row.psa_secrets.startswith("gAAAA")     # a Fernet token
    assert "acme" in row.plain


def test_secrets_are_never_logged(app, client, tenant, caplog):
    caplog.set_level("DEBUG")
    put(client, tenant, CONNECTWISE)
    client.get("/api/v1/account/psa", headers=tenant.headers())
    assert "cwPrivateKey-S3cr3t-91bd" not in caplog.text


@pytest.mark.parametrize("role", ["engineer", "viewer"])
def test_only_admins_change_psa_settings(client, tenant, role):
    assert put(client, tenant, CONNECTWISE, role=role).status_code == 403


@pytest.mark.parametrize("body,fields", [
    ({"provider": "connectwise", "site_url": "http://x.example"},
     {"company_id", "public_key", "private_key", "client_id"}),
    ({**CONNECTWISE, "site_url": "not a url"}, {"site_url"}),
    ({**CONNECTWISE, "secret": "x"}, {"secret"}),
    ({"provider": "freshdesk"}, {"provider"}),
    ({"provider": "halopsa", "base_url": "http://h.example", "client_id": "c"},
     {"client_secret"}),
    ({"provider": "autotask", "username": "u", "secret": "s"}, {"integration_code"}),
    ({"provider": "none", "surprise": 1}, {"surprise"}),
])
def test_bad_settings_are_422_naming_the_fields(client, tenant, body, fields):
    response = put(client, tenant, body)
    assert response.status_code == 422
    assert set(response.get_json()["error"]["details"]) == fields


def test_settings_are_per_account(client, tenant, other_tenant):
    put(client, tenant, CONNECTWISE)
    other = client.get("/api/v1/account/psa", headers=other_tenant.headers()).get_json()
    assert other["provider"] == "none"


def test_switching_to_none_forgets_the_secrets(app, client, tenant):
    put(client, tenant, CONNECTWISE)
    assert put(client, tenant, {"provider": "none"}).get_json()["configured"] is False
    with app.app_context():
        secrets = db.session.execute(text("SELECT psa_secrets FROM accounts WHERE id = :id"),
                                     {"id": tenant.account_id}).scalar()
    assert secrets is None


def test_secrets_under_a_lost_key_are_reported_not_a_500(app, client, tenant):
    assert put(client, tenant, CONNECTWISE).status_code == 200
    app.config["ENCRYPTION_KEY"] = "a-different-key"
    try:
        response = client.get("/api/v1/account/psa", headers=tenant.headers())
    finally:
        app.config["ENCRYPTION_KEY"] = None
    assert response.status_code == 200
    body = response.get_json()
    assert "cannot be decrypted" in body["problem"]
    assert body["settings"]["private_key_set"] is False
